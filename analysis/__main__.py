"""``python -m analysis``: regenerate every figure and table (and optionally the README section).

python -m analysis [--results results] [--out results/figures] [--readme README.md]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from analysis.load import SchemaError  # noqa: E402
from analysis.report import Options, generate, write_readme  # noqa: E402
from analysis.targets import TargetRule  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    p = argparse.ArgumentParser(
        prog="python -m analysis",
        description="Regenerate the figures and tables of the mlbfgs benchmarks from the results CSVs.",
    )
    p.add_argument("--results", type=Path, default=Path("results"), help="results directory (default: results)")
    p.add_argument("--out", type=Path, default=None, help="output directory (default: <results>/figures)")
    p.add_argument("--readme", type=Path, default=None, help="README whose marked results section to replace")
    p.add_argument(
        "--target-metric",
        choices=("test_acc", "train_loss"),
        default="test_acc",
        help="metric of the time-to-target table (default: test_acc)",
    )
    p.add_argument("--target-value", type=float, default=None, help="fixed target instead of the sgd-based rule")
    p.add_argument(
        "--target-fraction",
        type=float,
        default=0.99,
        help="target = fraction x sgd's final accuracy (loss: / fraction); default 0.99",
    )
    p.add_argument("--band", choices=("minmax", "std"), default="minmax", help="spread over seeds (default: minmax)")
    p.add_argument("--main-beta", type=float, default=0.999, help="mlbfgs beta of the main comparison (default 0.999)")
    p.add_argument("--quiet", action="store_true",
                   help="one summary line for the groups without CSVs instead of one line each")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (2 on a schema error)."""
    args = build_parser().parse_args(argv)
    out = args.out if args.out is not None else args.results / "figures"
    try:
        target = TargetRule(metric=args.target_metric, value=args.target_value, fraction=args.target_fraction)
        opts = Options(target=target, band=args.band, main_beta=args.main_beta)
        report = generate(args.results, out, opts, log=(lambda line: None) if args.quiet else print)
    except (SchemaError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.quiet and report.skipped:
        print(f"no CSVs for: {', '.join(report.skipped)}")
    print(f"wrote {len(report.written)} files to {out}")
    if args.readme is not None:
        write_readme(args.readme, args.results, out, report, opts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
