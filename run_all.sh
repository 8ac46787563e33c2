#!/usr/bin/env bash
# The benchmark's main job.
#   bash run_all.sh --quick   set up, train the quick comparison into runs/quick/, draw the figures
#   bash run_all.sh --full    every CPU workload x every optimizer x 3 seeds into runs/full/; rerun to resume
#   bash run_all.sh --long    the long preset: equal-budget tuning, then 3-5 seeds at full length, into
#                             runs/long/ (planned 16 CPU-hours, measured about 20: results/long/figures/compute.md;
#                             two processes at a time); rerun to resume
#   bash run_all.sh --paper --data-dir DIR   the paper's workloads and settings (CIFAR-10/100 ResNet-18, DeiT,
#                             ImageNet ResNet-50 on 4 GPUs in fp16) on the data in DIR, into runs/paper/;
#                             the paper-style figure runs/paper/figures/paper_accuracy.png; rerun to resume
#   bash run_all.sh --tests   set up, then lint and run the test suite (what CI runs)
# Extra arguments go to `python -m experiments.suite` (e.g. --force, --out DIR, --mode separate, --seeds 0,
# --optimizers sgd mlbfgs, --stages ..., --data-dir DIR, --set KEY=VALUE ..., --max-iters N) or, with --tests,
# to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
started_at=$(date +%s.%N)

usage() { echo "usage: bash run_all.sh --quick|--full|--long|--tests [options] | --paper --data-dir DIR [options]" >&2; exit 2; }
[ $# -ge 1 ] || usage
case "$1" in
  --quick) preset=quick ;;
  --full) preset=full ;;
  --long) preset=long ;;
  --paper) preset=paper ;;
  --tests) preset=tests ;;
  -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
  *) usage ;;
esac
shift
if [ "$preset" = paper ]; then
  has_data_dir=no
  for arg in "$@"; do
    case "$arg" in --data-dir|--data-dir=*) has_data_dir=yes ;; esac
  done
  if [ "$has_data_dir" = no ]; then
    echo "run_all.sh --paper needs --data-dir DIR: DIR/cifar-10-batches-py, DIR/cifar-100-python (torchvision's" >&2
    echo "python pickles) and ImageNet as DIR/train/<class>/ and DIR/val/<class>/ (nothing is downloaded)" >&2
    exit 2
  fi
fi

# 1. Python environment: .venv with the pinned requirements and the package.
PY=.venv/bin/python
if [ ! -x "$PY" ]; then
  echo "[run_all] creating .venv"
  python3 -m venv .venv
  "$PY" -m pip install --progress-bar off -r requirements.txt -e .
elif ! "$PY" -c "import torch, torchvision, numpy, pandas, matplotlib, seaborn, tqdm, mnist1d, transformers, tensorboard, pytest, hypothesis, scipy, nbclient, ipykernel, ruff, mypy, packaging, mkdocs, material, mkdocstrings_handlers.python, mkdocs_jupyter, pytorch_optimizer, schedulefree, heavyball, mlbfgs" 2>/dev/null; then
  echo "[run_all] .venv incomplete: installing requirements"
  "$PY" -m pip install --progress-bar off -r requirements.txt -e .
fi

# 2. Data: Fashion-MNIST from the Debian package (MNIST-1D is generated offline by the mnist1d package);
#    the paper preset reads its data from --data-dir instead.
if [ "$preset" != paper ]; then
  FMNIST_DIR=/usr/share/datasets/fashion-mnist
  missing=()
  for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz; do
    [ -f "$FMNIST_DIR/$f" ] || missing+=("$FMNIST_DIR/$f")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
      echo "[run_all] installing dataset-fashion-mnist"
      apt-get update -q && apt-get install -y -q dataset-fashion-mnist
    else
      echo "[run_all] missing Fashion-MNIST files:" >&2
      printf '  %s\n' "${missing[@]}" >&2
      echo "[run_all] install them with: sudo apt-get install dataset-fashion-mnist" >&2
      exit 1
    fi
  fi
fi

# 3a. The tests: lint, then pytest (extra arguments go to pytest). The documentation site's test opens
#     the built pages in headless Chromium (Debian's package).
if [ "$preset" = tests ]; then
  if ! command -v chromium >/dev/null; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
      echo "[run_all] installing chromium (the documentation site's browser test)"
      apt-get update -q && apt-get install -y -q chromium
    else
      echo "[run_all] chromium is missing: the documentation site's browser test will be skipped" >&2
      echo "[run_all] install it with: sudo apt-get install chromium" >&2
    fi
  fi
  "$PY" -m ruff check .
  set +e
  "$PY" -m pytest -q "$@"
  status=$?
  set -e
  [ "$status" -eq 5 ] && { echo "[run_all] pytest collected no tests" >&2; exit 1; }
  exit "$status"
fi

# 3b. The preset's stages (finished runs are skipped, interrupted ones resume), then `python -m analysis`:
#   quick: the grid; full: learning-rate sweep, finals at the chosen rates (3 seeds), beta ablation;
#   long: external tuning (equal trials per optimizer), then the finals at full length, as two
#   single-thread processes (--jobs 2); paper: the grid as listed (lockstep per workload on one GPU or the CPU,
#   ImageNet through torchrun on up to 4 GPUs, one process without GPUs), the figures with paper_accuracy.png.
jobs=()
if [ "$preset" = long ]; then jobs=(--jobs 2); fi
"$PY" -m experiments.suite --preset "$preset" ${jobs[@]+"${jobs[@]}"} --started-at "$started_at" "$@"
