"""``python -m secagg_benchmarks [--quick] [--grid SPEC] [--out DIR] [--no-progress]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from secagg_benchmarks.grid import PRESETS
from secagg_benchmarks.harness import estimate_plan, plan_lines, run_benchmark
from secagg_benchmarks.report import goal_status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m secagg_benchmarks",
        description="secagg bench: what each secure-sum scheme costs, side by side.",
    )
    parser.add_argument("--quick", action="store_true", help="the < 2 minute smoke-test grid")
    parser.add_argument(
        "--grid",
        default=None,
        help=f"default: standard (--quick: quick); preset ({', '.join(PRESETS)}) "
        "or 'preset;key=v1,v2;...' "
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
        print("\n".join(plan_lines(estimate_plan(args.grid, quick=args.quick))))
        return 0
    results = run_benchmark(
        quick=args.quick, out_dir=args.out, progress=not args.no_progress, grid=args.grid
    )
    print(
        f"wrote {args.out / 'results.json'}, {args.out / 'results.md'} and plots "
        f"({results['duration_seconds']:.0f} s)"
    )
    for goal in results["goals"]:
        print(f"  {goal_status(goal):>12}  {goal['goal']}  {goal['target']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
