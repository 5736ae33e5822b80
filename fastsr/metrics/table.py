"""Per-image + mean tables in the style of the SR papers' Set5/Set14 tables.

    >>> print(format_table(["baby", "bird"], {"PSNR (dB)": [33.91, 34.27], "SSIM": [0.9, 0.93]},
    ...                    title="Set5 x4"))
    Set5 x4
    image  PSNR (dB)    SSIM
    ------------------------
    baby       33.91  0.9000
    bird       34.27  0.9300
    ------------------------
    Mean       34.09  0.9150
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch


def _digits_for(column: str) -> int:
    return 2 if "PSNR" in column.upper() else 4


def format_table(
    names: Sequence[str],
    columns: Mapping[str, Sequence[float] | torch.Tensor],
    title: str | None = None,
    digits: Mapping[str, int] | None = None,
    mean_label: str = "Mean",
) -> str:
    """A plain-text table: one row per image, then the mean of each column.

    Args:
        names: image names, one per row.
        columns: column header -> per-image values (a list or a 1-D tensor), each as long as
            ``names``. The mean row is the arithmetic mean of the per-image values (how the
            papers and BasicSR average PSNR in dB and SSIM); an infinite PSNR makes it inf.
        title: an optional first line (e.g. ``"Set5 x4"``).
        digits: decimals per column; default 2 for columns whose header contains "PSNR",
            4 otherwise.
        mean_label: label of the last row.

    Returns:
        The table as a string (no trailing newline).

    Raises:
        ValueError: a column's length differs from ``len(names)``, or no rows.
    """
    names = [str(n) for n in names]
    if not names:
        raise ValueError("format_table: names is empty")
    cols = {}
    for header, values in columns.items():
        vals = values.tolist() if isinstance(values, torch.Tensor) else [float(v) for v in values]
        if len(vals) != len(names):
            raise ValueError(f"format_table: column {header!r} has {len(vals)} values for {len(names)} names")
        cols[header] = vals
    digits = dict(digits or {})
    prec = {h: digits.get(h, _digits_for(h)) for h in cols}
    means = {h: math.fsum(v) / len(v) if all(math.isfinite(x) for x in v) else sum(v) / len(v) for h, v in cols.items()}

    def cell(h, v):
        return f"{v:.{prec[h]}f}"

    name_w = max(len("image"), len(mean_label), *(len(n) for n in names))
    widths = {h: max(len(h), *(len(cell(h, v)) for v in cols[h] + [means[h]])) for h in cols}
    header = "image".ljust(name_w) + "".join("  " + h.rjust(widths[h]) for h in cols)
    rule = "-" * len(header)
    lines = [title] if title else []
    lines += [header, rule]
    for i, n in enumerate(names):
        lines.append(n.ljust(name_w) + "".join("  " + cell(h, cols[h][i]).rjust(widths[h]) for h in cols))
    lines.append(rule)
    lines.append(mean_label.ljust(name_w) + "".join("  " + cell(h, means[h]).rjust(widths[h]) for h in cols))
    return "\n".join(lines)
