#!/usr/bin/env bash
# Set up (if needed) and run the quickstart: teacher fine-tune (cached), distillation, evaluation, report.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec .venv/bin/kdkit quickstart "$@"
