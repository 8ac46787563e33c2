#!/usr/bin/env bash
# The library's own tests (mlbfgs, the torch.optim conformance suite on the MLBFGS class, the DDP / FSDP2
# tests on gloo) on
# the lowest and the newest torch release the package declares support for (pyproject.toml:
# torch >= the first; tests/repo/test_packaging.py keeps the two in step). The suite keeps the version
# requirements.txt pins. Each version gets a virtual environment of its own, kept between runs in
# ${MLBFGS_CI_CACHE:-$HOME/.cache/mlbfgs-ci}; the repository is used from its folder (PYTHONPATH), not
# installed. PIP_CONFIG_FILE=/dev/null: a machine-wide pip constraint may cap torch at its local release.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_VERSIONS=(2.11.0 2.15.0)  # lowest: on 2.9 the step allocates, compiled steps differ, DCP fails (2.10 untested)
cache=${MLBFGS_CI_CACHE:-$HOME/.cache/mlbfgs-ci}
for version in "${TORCH_VERSIONS[@]}"; do
  venv="$cache/torch-$version"
  if ! "$venv/bin/python" -c "import torch, pytest, hypothesis, numpy, scipy, packaging; assert torch.__version__.split('+')[0] == '$version'" 2>/dev/null; then
    echo "[torch_matrix] creating $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    PIP_CONFIG_FILE=/dev/null "$venv/bin/pip" install -q --progress-bar off "torch==$version" numpy pytest hypothesis scipy packaging
  fi
  echo "[torch_matrix] torch $version: the library's tests"
  PYTHONPATH=. "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/mlbfgs/
  # the conformance cases of the MLBFGS class (the suite's baselines keep the pinned torch: on 2.11
  # torch.compile refuses some of them, olbfgs and sqn among them)
  PYTHONPATH=. "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/baselines/test_conformance.py -k "MLBFGS-"
done
