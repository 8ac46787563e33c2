"""The device check's verdict: the numbers ``bash experiments/gpu_check.sh OUTDIR`` must show, from OUTDIR.

    python -m experiments.bench.acceptance OUTDIR

reads what the check wrote and writes ``OUTDIR/acceptance.md`` (and prints it):

- the CUDA tests (``OUTDIR/cuda_tests.xml``, pytest's JUnit XML): how many ran, failed, erred and were
  skipped; they pass when at least one ran and none failed or erred;
- mL-BFGS's iteration time over SGD's on the overhead benchmark's model (``OUTDIR/overhead/optimizers*.csv``;
  medians, :func:`analysis.overhead.overhead_summary`), float32 and under bf16 autocast; the bf16 ratio must
  be at most :data:`MAX_ITERATION_RATIO` (the issue's target: "nearly cost-free", claim 3 of the paper);
- the direction kernel (``OUTDIR/overhead/direction_kernel.csv``): its median over the bandwidth bound
  (the bytes it must move over the copy bandwidth measured in the same run) at most :data:`MAX_KERNEL_RATIO`;
- the lockstep comparison (``OUTDIR/runs``): every run finished, its final test accuracy and seconds.

The limits are judged only when the overhead manifest names a GPU: a CPU dry run (``--dry-run``) reports the
numbers without a verdict. Exit status 1 when a judged check fails or an input is missing, else 0.
"""

from __future__ import annotations

import argparse
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd

#: mL-BFGS iteration / SGD iteration, bf16 autocast, at most (issue 15's acceptance)
MAX_ITERATION_RATIO = 1.10
#: direction kernel median / bandwidth bound, at most
MAX_KERNEL_RATIO = 1.5
#: the optimizer whose overhead is judged, and the kernel method
JUDGED_OPTIMIZER = "mlbfgs"
JUDGED_KERNEL = "compact-float32"


def cuda_test_counts(path: Path) -> dict[str, int] | None:
    """``tests``, ``failures``, ``errors``, ``skipped`` and ``passed`` of a pytest JUnit XML file (summed over
    its test suites); None when the file is absent."""
    if not path.is_file():
        return None
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    counts = {key: sum(int(s.get(key, 0)) for s in suites) for key in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return counts


def _device(out: Path) -> str | None:
    manifest = out / "overhead" / "manifest.json"
    if not manifest.is_file():
        return None
    return json.loads(manifest.read_text()).get("device")


def evaluate(out: Path) -> tuple[list[str], bool]:
    """The lines of the verdict for the check's folder ``out`` and whether it passes (see the module
    docstring)."""
    from analysis.kernel import kernel_summary
    from analysis.load import load_kernel, load_overhead, load_runs
    from analysis.overhead import overhead_summary

    device = _device(out)
    judged = device is not None and device != "cpu"
    lines = [f"# Device check: {out}", "",
             f"device: {device or 'unknown (no overhead/manifest.json)'}; limits "
             + ("judged" if judged else "not judged (no GPU: a dry run reports the numbers only)"), ""]
    ok = True

    def verdict(passed: bool) -> str:
        nonlocal ok
        if not judged:
            return "reported"
        ok = ok and passed
        return "PASS" if passed else "FAIL"

    def missing(text: str) -> None:
        nonlocal ok
        lines.append(f"- {text}: MISSING")
        ok = False

    counts = cuda_test_counts(out / "cuda_tests.xml")
    if counts is None:
        missing("CUDA tests: no cuda_tests.xml")
    else:
        ran = counts["tests"] - counts["skipped"]
        good = ran > 0 and counts["failures"] == 0 and counts["errors"] == 0
        lines.append(f"- CUDA tests: {counts['passed']} passed, {counts['failures']} failed, {counts['errors']} "
                     f"errors, {counts['skipped']} skipped: {verdict(good)}")

    overhead = load_overhead(out)
    if overhead is None:
        missing("overhead: no overhead/optimizers*.csv")
    else:
        summary = overhead_summary(overhead)
        rows = summary[(summary["optimizer"] == JUDGED_OPTIMIZER) & (summary["measure"] == "iteration")]
        for row in rows.itertuples():
            limited = "bf16 autocast" in row.model
            text = f"- {JUDGED_OPTIMIZER} iteration / sgd on {row.model}: {row.ratio:.3f}"
            lines.append(text + (f" (limit {MAX_ITERATION_RATIO}): {verdict(bool(row.ratio <= MAX_ITERATION_RATIO))}"
                                 if limited else ""))
        if not any("bf16 autocast" in m for m in rows["model"]):
            missing("no bf16-autocast overhead rows")

    kernel = load_kernel(out)
    if kernel is None:
        missing("direction kernel: no overhead/direction_kernel.csv")
    else:
        ks = kernel_summary(kernel)
        for row in ks.itertuples():
            text = (f"- direction kernel {row.method}: {row.median_s * 1e3:.3f} ms, bound {row.bound_s * 1e3:.3f} ms "
                    f"({row.bandwidth_gbs:.1f} GB/s), ratio {row.ratio_to_bound:.2f}")
            if row.method == JUDGED_KERNEL:
                text += f" (limit {MAX_KERNEL_RATIO}): {verdict(bool(row.ratio_to_bound <= MAX_KERNEL_RATIO))}"
            lines.append(text)

    runs_dir = out / "runs"
    runs = load_runs(runs_dir) if runs_dir.is_dir() else None
    if runs is None:
        missing("lockstep comparison: no runs")
    else:
        manifests = [json.loads(p.read_text()) for p in sorted(runs_dir.glob("*/*.json"))]
        unfinished = [m["run_id"] for m in manifests if m.get("status") != "finished"]
        lines.append(f"- lockstep comparison: {len(manifests)} runs, {len(unfinished)} unfinished "
                     f"{unfinished if unfinished else ''}".rstrip())
        ok = ok and not unfinished and bool(manifests)
        table = pd.DataFrame([{"optimizer": m["optimizer"], "test_acc": m.get("final_test_acc"),
                               "train_s": m.get("train_s"), "outcome": m.get("outcome")} for m in manifests])
        for row in table.itertuples():
            acc = "n/a" if row.test_acc is None else f"{row.test_acc:.4f}"
            lines.append(f"  - {row.optimizer}: final test acc {acc}, {row.train_s} s, {row.outcome}")
    lines += ["", "verdict: " + ("PASS" if ok and judged else "FAIL" if not ok else "reported (not judged)")]
    return lines, ok


def main(argv: list[str] | None = None) -> int:
    """Write and print ``OUTDIR/acceptance.md``; exit status 1 when a judged check fails or an input is missing."""
    parser = argparse.ArgumentParser(prog="python -m experiments.bench.acceptance",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the folder bash experiments/gpu_check.sh wrote")
    args = parser.parse_args(argv)
    if not args.out.is_dir():
        parser.error(f"out: no folder {args.out}")
    lines, ok = evaluate(args.out)
    text = "\n".join(lines) + "\n"
    (args.out / "acceptance.md").write_text(text)
    print(text, end="")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
