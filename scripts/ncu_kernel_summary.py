#!/usr/bin/env python3
"""Per-kernel totals of an `ncu --csv --page raw` run with gpu__time_duration.sum and the DRAM byte
metrics (scripts/ncu_decode_step.sh): launches, summed duration, DRAM bytes and their rate per
kernel name, largest first, and the total.

    python3 scripts/ncu_kernel_summary.py RUN.csv
"""
import csv
import re
import sys
from collections import defaultdict

# Bytes, seconds: ncu prints each metric's unit in the row under the header.
SCALE = {"byte": 1, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9, "ns": 1e-9, "nsecond": 1e-9,
         "us": 1e-6, "usecond": 1e-6, "ms": 1e-3, "msecond": 1e-3, "s": 1, "second": 1}


def short(name: str) -> str:
    """A kernel's name without its parameter list (and "void "), at most 90 characters."""
    name = re.sub(r"\([^()]*\)$", "", name.strip())
    return re.sub(r"^void ", "", name)[:90]


def main(path: str) -> None:
    with open(path, newline="") as f:
        lines = [l for l in f if l.startswith('"')]
    rows = list(csv.reader(lines))
    header, units, data = rows[0], rows[1], rows[2:]
    col = {h: i for i, h in enumerate(header)}
    need = ["Kernel Name", "gpu__time_duration.sum", "dram__bytes_read.sum",
            "dram__bytes_write.sum"]
    for n in need:
        if n not in col:
            sys.exit(f"{path}: no column {n!r} (got {header[:12]}...)")

    def value(r, n):
        unit = units[col[n]]
        if unit not in SCALE:
            sys.exit(f"{path}: unit {unit!r} of {n} unknown")
        return float(r[col[n]].replace(",", "")) * SCALE[unit]

    agg = defaultdict(lambda: [0, 0.0, 0.0])
    for r in data:
        a = agg[short(r[col["Kernel Name"]])]
        a[0] += 1
        a[1] += value(r, "gpu__time_duration.sum")
        a[2] += value(r, "dram__bytes_read.sum") + value(r, "dram__bytes_write.sum")
    total_t = sum(a[1] for a in agg.values())
    total_b = sum(a[2] for a in agg.values())
    print(f"{'kernel':90} {'launches':>8} {'ms':>8} {'share':>6} {'GB':>8} {'GB/s':>7}")
    for name, (n, t, b) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
        print(f"{name:90} {n:8d} {1e3 * t:8.3f} {100 * t / total_t:5.1f}% {b / 1e9:8.3f} "
              f"{b / t / 1e9 if t else 0:7.0f}")
    print(f"{'total':90} {sum(a[0] for a in agg.values()):8d} {1e3 * total_t:8.3f} {100:5.1f}% "
          f"{total_b / 1e9:8.3f} {total_b / total_t / 1e9:7.0f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else sys.exit(__doc__))
