#!/usr/bin/env bash
# Check the offline bundle end to end on this machine: build it (network), then install it into a
# fresh venv with no index (no network) and import apo-local. Usage:
#   bash scripts/check_bundle.sh [OUT] [extra `apo-local bundle` flags]
# Default: apo-local alone for this machine's Python (--vllm none; a vLLM bundle adds its wheels).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/apo-bundle-check}; shift || true
PY=${PYTHON:-.venv/bin/python}
ver=$($PY -c 'import sys; print(f"{sys.version_info.major}.{sys.version_info.minor}")')
rm -rf "$OUT"
t0=$(date +%s)
$PY -m apo_local.commands.cli bundle --torch "$($PY -c 'import torch; print(torch.__version__)')" --vllm none \
  --python "$ver" --platform manylinux_2_28_x86_64 --out "$OUT/bundle" "$@"
t1=$(date +%s)
$PY -m venv "$OUT/venv"
PYTHON="$OUT/venv/bin/python" PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= bash "$OUT/bundle/install.sh"
t2=$(date +%s)
"$OUT/venv/bin/python" -c "import apo_local, apo_local.run.config, apo_local.tasks; print('offline import ok')"
echo "bundle: $((t1 - t0)) s, $(du -sh "$OUT/bundle/wheels" | cut -f1), $(ls "$OUT/bundle/wheels" | wc -l) wheels; offline install: $((t2 - t1)) s"
