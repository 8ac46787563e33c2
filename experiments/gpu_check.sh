#!/usr/bin/env bash
# The device check, one command: bash experiments/gpu_check.sh OUTDIR [--dry-run] [--data-dir DIR] [--no-install]
#
# On one GPU (under 8 minutes on an H100/H200-class card) it runs, writing everything under OUTDIR:
#   1. the CUDA tests, `pytest -m cuda` (mL-BFGS on CUDA with a bfloat16 history, the zero-allocation step
#      on the device, float16 loss scaling and bf16 autocast through the runner): cuda_tests.xml, cuda_tests.log
#   2. the overhead benchmark on ResNet-18 with CIFAR shapes (synthetic batch of 128), float32 and bf16
#      autocast: iteration / SGD per optimizer, and the mL-BFGS direction kernel against the GPU's measured
#      copy bandwidth: overhead/optimizers.csv, overhead/optimizers_bf16.csv, overhead/direction_kernel.csv
#   3. a short lockstep comparison of every registered optimizer on fmnist-resnet (one epoch) on the GPU:
#      runs/fmnist-resnet/*.csv and manifests
#   4. `python -m analysis` on OUTDIR (figures/*.md, *.csv, *.png) and the verdict acceptance.md
#      (python -m experiments.bench.acceptance: CUDA tests green, mL-BFGS iteration / SGD <= 1.10 in bf16,
#      direction kernel <= 1.5 x its bandwidth bound)
# and keeps a log of every step with its time and status in OUTDIR/gpu_check.log, and the machine in
# OUTDIR/environment.txt. A failing step is logged and the next one runs; the exit status is 1 when a step
# failed or the verdict fails.
#
#   --dry-run     the same steps on the CPU with the smallest settings (the MNIST-1D MLP for the benchmark, 3
#                 iterations on a Fashion-MNIST subset; the CUDA tests are collected and skip): what the test
#                 suite runs (tests/experiments/test_gpu_check.py), so that this script cannot rot
#   --no-install  the machine's own python3 and torch (a lent GPU machine without a package registry), this
#                 checkout on PYTHONPATH, whatever .venv holds; nothing is installed in either case
#   --data-dir    the four Fashion-MNIST IDX .gz files (default: /usr/share/datasets/fashion-mnist, from the
#                 Debian package dataset-fashion-mnist, else data_cache/fashion-mnist in this checkout, a
#                 git-ignored folder to copy them into on a machine without the package)
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

usage() { echo "usage: bash experiments/gpu_check.sh OUTDIR [--dry-run] [--data-dir DIR] [--no-install]" >&2; exit 2; }
[ $# -ge 1 ] || usage
case "$1" in -*) usage ;; esac
OUT=$1
shift
DRY=no
DATA=
OWN=no
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=yes ;;
    --no-install) OWN=yes ;;
    --data-dir) [ $# -ge 2 ] || usage; DATA=$2; shift ;;
    --data-dir=*) DATA=${1#--data-dir=} ;;
    *) usage ;;
  esac
  shift
done
if [ -z "$DATA" ]; then
  DATA=/usr/share/datasets/fashion-mnist
  [ -f "$DATA/train-images-idx3-ubyte.gz" ] || DATA=data_cache/fashion-mnist
fi
for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz; do
  if [ ! -f "$DATA/$f" ]; then
    echo "gpu_check: no $DATA/$f: give --data-dir DIR with the four Fashion-MNIST IDX .gz files" >&2
    exit 2
  fi
done

PY=${PYTHON:-.venv/bin/python}
if [ "$OWN" = yes ] || [ ! -x "$PY" ]; then  # the machine's own torch: the checkout's packages from here
  PY=${PYTHON:-python3}
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
: > "$LOG"
failed=()

BENCH_OPTIMIZERS=(sgd adam kfac slbfgs mlbfgs mlbfgs_authors)
# every registered optimizer whose library imports here (a machine without a package registry may lack the
# peers' optional libraries; they are listed as skipped)
read -r -a OPTIMIZERS <<< "$("$PY" -c 'from baselines import installed_optimizers; print(*installed_optimizers())')"
read -r -a MISSING <<< "$("$PY" -c 'from baselines import available_optimizers as a, installed_optimizers as i
print(*sorted(set(a()) - set(i())))')"
[ "${#MISSING[@]}" -gt 0 ] && echo "skipped (their optional libraries are not installed): ${MISSING[*]}" | tee -a "$LOG"
if [ "$DRY" = yes ]; then
  DEVICE=cpu
  BENCH=(--workloads mnist1d-mlp --repeats 3 --batch-size 32 --kernel-numel 4096 --history-size 2 --threads 1)
  LOCKSTEP=(--max-iters 3 --threads 1 --set data.train_subset=256 data.test_subset=100 batch_size=32
            eval_interval=3)
else
  DEVICE=cuda
  BENCH=(--workloads cifar10-resnet18 --repeats 15 --batch-size 128)
  LOCKSTEP=(--epochs 1)
fi

step() {  # step NAME COMMAND...: run it, append its output and its status to the log
  local name=$1
  shift
  local start=$SECONDS
  echo "== $name: $*" | tee -a "$LOG"
  "$@" >> "$LOG" 2>&1
  local rc=$?
  echo "== $name: exit $rc after $((SECONDS - start)) s" | tee -a "$LOG"
  [ "$rc" -eq 0 ] || failed+=("$name")
}

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git rev-parse HEAD 2>/dev/null || echo none)$(git diff --quiet 2>/dev/null || echo ' (dirty)')"
  echo "mode: $([ "$DRY" = yes ] && echo 'dry run (CPU)' || echo device)"
  echo "python: $PY$([ -n "${PYTHONPATH:-}" ] && echo " with PYTHONPATH=$PYTHONPATH (no install)")"
  "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
"device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")'
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
} > "$OUT/environment.txt" 2>&1

# 1. CUDA tests: the test files that mark tests `cuda` (on the CPU they are collected and skipped: the dry run
#    checks that they exist and import)
mapfile -t CUDA_TEST_FILES < <(grep -rl "pytest.mark.cuda" tests --include="test_*.py")
step cuda-tests "$PY" -m pytest -m cuda -q -rA -p no:cacheprovider --junitxml "$OUT/cuda_tests.xml" \
  "${CUDA_TEST_FILES[@]}"

# 2. overhead: float32 with the direction kernel, then bf16 autocast
step overhead-fp32 "$PY" -m experiments.bench.overhead --device "$DEVICE" "${BENCH[@]}" \
  --optimizers "${BENCH_OPTIMIZERS[@]}" --out "$OUT/overhead"
step overhead-bf16 "$PY" -m experiments.bench.overhead --device "$DEVICE" "${BENCH[@]}" \
  --optimizers "${BENCH_OPTIMIZERS[@]}" --amp bf16 --skip-kernel --out "$OUT/overhead"

# 3. lockstep comparison of the optimizers on fmnist-resnet
step lockstep "$PY" -m experiments.run --workload fmnist-resnet --optimizer "${OPTIMIZERS[@]}" --device "$DEVICE" \
  --data-dir "$DATA" "${LOCKSTEP[@]}" --out "$OUT/runs" --checkpoint-dir "$OUT/checkpoints" --no-progress

# 4. figures and tables, then the verdict
step analysis "$PY" -m analysis --results "$OUT" --out "$OUT/figures" --quiet
step acceptance "$PY" -m experiments.bench.acceptance "$OUT"

[ -f "$OUT/acceptance.md" ] && cat "$OUT/acceptance.md"
if [ ${#failed[@]} -gt 0 ]; then
  echo "gpu_check: failed steps: ${failed[*]} (log: $LOG)" | tee -a "$LOG"
  exit 1
fi
echo "gpu_check: every step finished (log: $LOG, verdict: $OUT/acceptance.md)" | tee -a "$LOG"
