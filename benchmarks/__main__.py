"""``python -m benchmarks [--quick] [--grid SPEC] [--out DIR] [--no-progress]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.grid import PRESETS
from benchmarks.harness import estimate_plan, run_benchmark


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="secagg bench: what each secure-sum scheme costs, side by side.",
    )
    parser.add_argument("--quick", action="store_true", help="the < 2 minute smoke-test grid")
    parser.add_argument(
        "--grid",
        default=None,
        help=f"preset ({', '.join(PRESETS)}) or 'preset;key=v1,v2;...' "
        "(keys: schemes, dims, clients, dropouts, cell_seconds, e2e, e2e_rounds, "
        "e2e_clients, seed)",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/bench"), help="output directory")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--plan", action="store_true", help="only print which cells would run and how long"
    )
    args = parser.parse_args(argv)
    if args.plan:
        plan = estimate_plan(args.grid, quick=args.quick)
        print(
            f"grid {plan['grid']}: {plan['cells_run']} cells to run, "
            f"~{plan['estimated_seconds'] / 60:.0f} min estimated"
        )
        for skip in plan["cells_skipped"]:
            print(
                f"  skip {skip['scheme']} {skip['dim']:,}×{skip['clients']} "
                f"{skip['dropout']:.0%}: {skip['reason']}"
            )
        return 0
    results = run_benchmark(
        quick=args.quick, out_dir=args.out, progress=not args.no_progress, grid=args.grid
    )
    print(
        f"wrote {args.out / 'results.json'}, {args.out / 'results.md'} and plots "
        f"({results['duration_seconds']:.0f} s)"
    )
    for goal in results["goals"]:
        met = {True: "met", False: "NOT MET", None: "not measured"}[goal["met"]]
        print(f"  {met:>12}  {goal['goal']}  {goal['target']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
