#!/usr/bin/env python3
"""Summarizes Nsight Compute's per-instruction warp-stall samples of one kernel.

Input: the CSV of `ncu -i REPORT --page source --csv --print-source sass` (scripts/ncu_prefill.sh
writes it); of a report with several launches, the first launch's table. Output: the share of every stall reason over all samples, then the instructions that
hold the most samples with their three largest reasons, which is where a kernel waits (a
WARPGROUP.DEPBAR is a wgmma wait; a BRA behind SYNCS.PHASECHK.TRYWAIT an mbarrier wait).

    python3 scripts/ncu_stalls.py prefill_sass.csv [--top 20]
"""
import argparse
import csv
import sys


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("csv", help="ncu --page source --csv --print-source sass output")
    ap.add_argument("--top", type=int, default=20, help="instructions to list (default 20)")
    args = ap.parse_args()
    with open(args.csv, newline="") as f:
        rows = list(csv.reader(f))
    # Row 0 names the kernel, row 1 is the header.
    header_at = next((i for i, r in enumerate(rows) if r and r[0] == "Address"), None)
    if header_at is None:
        print(f"{args.csv}: no 'Address' header row; is this ncu --page source --csv output?",
              file=sys.stderr)
        return 2
    # One kernel's table: a report of several launches repeats 'Kernel Name' + header per launch.
    end = next((i for i in range(header_at + 1, len(rows)) if rows[i] and rows[i][0] == "Kernel Name"),
               len(rows))
    header = rows[header_at]
    data = [r for r in rows[header_at + 1:end] if len(r) == len(header)]
    col = {h: i for i, h in enumerate(header)}
    samples_col = col.get("Warp Stall Sampling (All Samples)")
    if samples_col is None:
        print(f"{args.csv}: no warp stall samples (profile with --set full or SourceCounters)",
              file=sys.stderr)
        return 2
    reasons = [h for h in header if h.startswith("stall_") and "Not Issued" not in h]
    count = lambda r, c: int(r[c] or 0) if r[c].strip().lstrip("-").isdigit() else 0
    total = sum(count(r, samples_col) for r in data)
    if total == 0:
        print(f"{args.csv}: zero samples", file=sys.stderr)
        return 2
    by_reason = {h: sum(count(r, col[h]) for r in data) for h in reasons}
    print(f"{total} samples over {len(data)} instructions")
    for h, v in sorted(by_reason.items(), key=lambda x: -x[1]):
        if v * 200 >= total:  # reasons of at least 0.5%
            print(f"  {h:26s} {100 * v / total:5.1f}%")
    print(f"top {args.top} instructions (address low bits, SASS, share of samples, main reasons):")
    for r in sorted(data, key=lambda r: -count(r, samples_col))[: args.top]:
        main = sorted(((h, count(r, col[h])) for h in reasons), key=lambda x: -x[1])[:3]
        why = ", ".join(f"{h[6:]} {100 * v / total:.1f}%" for h, v in main if v)
        share = 100 * count(r, samples_col) / total
        print(f"  {r[0][-5:]}  {r[1].strip()[:64]:64s} {share:5.1f}%  {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
