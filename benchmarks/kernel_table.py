"""Prints min/median time, GB/s and ratios from a pytest-benchmark JSON file.

    pytest benchmarks --benchmark-only --benchmark-json out.json
    python benchmarks/kernel_table.py out.json [more.json ...]
"""
import json
import sys
from collections import defaultdict


def _impl_name(b):
    """The implementation a benchmark measured: its explicit name, else the ``impl`` param."""
    params = b.get("params") or {}
    return params.get("impl") or b["name"].split("[")[0]


def main(paths):
    groups = defaultdict(dict)
    for path in paths:  # later files override earlier ones for the same (group, impl)
        for b in json.load(open(path))["benchmarks"]:
            groups[b["group"]][_impl_name(b)] = b
    for group, rows in groups.items():
        print(f"\n## {group}")
        print("| impl | min ms | median ms | GB/s | x eager | x compile |")
        print("|---|---|---|---|---|---|")
        base = rows.get("eager") or rows.get("unfused")
        comp = rows.get("compile") or rows.get("unfused+compile")
        for name, b in rows.items():
            st = b["stats"]
            nbytes = b.get("extra_info", {}).get("bytes", 0)
            gbs = f"{nbytes / st['median'] / 1e9:.1f}" if nbytes else "-"
            r1 = f"{base['stats']['median'] / st['median']:.2f}" if base else "-"
            r2 = f"{comp['stats']['median'] / st['median']:.2f}" if comp else "-"
            print(f"| {name} | {st['min'] * 1e3:.3f} | {st['median'] * 1e3:.3f} | {gbs} | {r1} | {r2} |")


if __name__ == "__main__":
    main(sys.argv[1:])
