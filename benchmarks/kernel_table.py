"""Prints min/median time, GB/s and ratios from a pytest-benchmark JSON file, one table per
(group, device), with the device of every row.

    pytest benchmarks --benchmark-only --benchmark-json out.json
    python benchmarks/kernel_table.py out.json [more.json ...]

CPU rows: pytest-benchmark's statistics. CUDA rows: the CUDA-event timing that
``benchmarks/common.py`` records in ``extra_info["cuda"]`` (median, p20-p80 and peak memory
of the timed calls; see that module for why not pytest-benchmark's host clock). Ratios
compare rows of the same device only.
"""
import json
import sys
from collections import defaultdict


def _impl_name(b):
    """The implementation a benchmark measured: its explicit name, else the ``impl`` param."""
    params = b.get("params") or {}
    return params.get("impl") or b["name"].split("[")[0]


def _device(b):
    """The device a benchmark ran on (runs recorded before devices were tracked: the CPU)."""
    return (b.get("extra_info") or {}).get("device", "cpu")


def _stats(b):
    """(min, median, p20, p80, peak MiB) in seconds / MiB; p20, p80 and peak are None for
    CPU rows (pytest-benchmark keeps quartiles, not these percentiles)."""
    cuda = (b.get("extra_info") or {}).get("cuda")
    if cuda:
        return cuda["min_s"], cuda["median_s"], cuda["p20_s"], cuda["p80_s"], cuda.get("peak_mib")
    st = b["stats"]
    return st["min"], st["median"], None, None, None


def rows_by_group(paths):
    """{(group, device): {impl: benchmark}}; later files override earlier ones for the same key."""
    groups = defaultdict(dict)
    for path in paths:
        with open(path) as f:
            for b in json.load(f)["benchmarks"]:
                groups[(b["group"], _device(b))][_impl_name(b)] = b
    return groups


def table(groups) -> str:
    lines = []
    for (group, device), rows in groups.items():
        gpu = next((b["extra_info"]["cuda"].get("gpu") for b in rows.values()
                    if (b.get("extra_info") or {}).get("cuda")), None)
        lines += ["", f"## {group} on {device}" + (f" ({gpu})" if gpu else ""),
                  "| impl | device | min ms | median ms | p20-p80 ms | peak MiB | GB/s | x eager | x compile |",
                  "|---|---|---|---|---|---|---|---|---|"]
        base = rows.get("eager") or rows.get("unfused")
        comp = rows.get("compile") or rows.get("unfused+compile")
        for name, b in rows.items():
            mn, med, p20, p80, peak = _stats(b)
            nbytes = b.get("extra_info", {}).get("bytes", 0)
            gbs = f"{nbytes / med / 1e9:.1f}" if nbytes else "-"
            spread = f"{p20 * 1e3:.3f}-{p80 * 1e3:.3f}" if p20 is not None else "-"
            mem = f"{peak:.0f}" if peak is not None else "-"
            r1 = f"{_stats(base)[1] / med:.2f}" if base else "-"
            r2 = f"{_stats(comp)[1] / med:.2f}" if comp else "-"
            lines.append(f"| {name} | {device} | {mn * 1e3:.3f} | {med * 1e3:.3f} | {spread} | {mem} | {gbs} | "
                         f"{r1} | {r2} |")
    return "\n".join(lines)


def main(paths):
    print(table(rows_by_group(paths)))


if __name__ == "__main__":
    main(sys.argv[1:])
