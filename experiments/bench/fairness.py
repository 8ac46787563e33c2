"""Are the suite's seconds fair? The quick comparison, lockstep and separate, on an idle and a loaded machine.

    python -m experiments.bench.fairness [--preset quick] [--out results/fairness] [--load 2]
                                         [--modes lockstep separate] [--conditions idle loaded]

For each condition and mode, ``python -m experiments.suite --preset <preset> --mode <mode>`` writes its
runs to ``<out>/<mode>-<condition>/runs``. "idle" runs on the machine as it is (keep it quiet);
"loaded" runs beside ``--load`` processes that each keep one core busy and stop by themselves
(:class:`experiments.bench.busy_load.BusyLoad`). ``python -m analysis`` then reports, per optimizer,
seconds per iteration divided by sgd's under both conditions (``fairness.md``, ``fairness.png``): in
lockstep they should agree; in separate processes the load of the moment enters the ratio.
Resumable: finished runs are skipped (``--force`` retrains). ``<out>/manifest.json`` records the
commands, the commit (and whether the tree was dirty) and each condition's seconds.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from experiments.bench.busy_load import BusyLoad
from experiments.bench.records import provenance
from experiments.runner.atomic import read_json, write_json
from experiments.runner.manifest import now_iso
from experiments.suite.cli import MODES

CONDITIONS = ("idle", "loaded")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.bench.fairness", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="quick")
    p.add_argument("--out", type=Path, default=Path("results/fairness"))
    p.add_argument("--load", type=int, default=2, help="busy processes in the loaded condition (default 2)")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--conditions", nargs="+", choices=CONDITIONS, default=list(CONDITIONS))
    p.add_argument("--threads", type=int, default=None, help="torch threads per process (default: the runner's)")
    p.add_argument("--force", action="store_true", help="retrain finished runs")
    args = p.parse_args(argv)
    if args.load < 1:
        print(f"error: load must be a positive integer, got {args.load}", file=sys.stderr)
        return 2
    manifest_path = args.out / "manifest.json"
    manifest = read_json(manifest_path) or {"conditions": {}}
    manifest.update(**provenance("experiments.bench.fairness", argv), preset=args.preset,
                    load_processes=args.load, last_start=now_iso())
    failures = 0
    for condition in args.conditions:
        for mode in args.modes:
            key = f"{mode}-{condition}"
            cmd = [sys.executable, "-m", "experiments.suite", "--preset", args.preset, "--mode", mode,
                   "--out", str(args.out / key), "--no-analysis"]
            if args.threads is not None:
                cmd += ["--threads", str(args.threads)]
            if args.force:
                cmd += ["--force"]
            print(f"[fairness] {key}: {' '.join(cmd[1:])}", flush=True)
            start = time.monotonic()
            # the load stops by itself after an hour even if this process is killed
            with BusyLoad(args.load if condition == "loaded" else 0, seconds=3600, kind="spin"):
                rc = subprocess.call(cmd)
            failures += rc != 0
            manifest["conditions"][key] = {"mode": mode, "condition": condition, "returncode": rc,
                                           "busy_processes": args.load if condition == "loaded" else 0,
                                           "seconds": round(time.monotonic() - start, 3), "end_time": now_iso(),
                                           "command": " ".join(["python", *cmd[1:]])}
            write_json(manifest_path, manifest)
    print(f"[fairness] done; draw it with: python -m analysis --results {args.out.parent}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
