#!/usr/bin/env bash
# The peers' own environment (.peers-venv, git-ignored): ONNX Runtime through optimum, OpenVINO through
# optimum-intel, and whatever transformers they support, beside the CPU build of the project's torch, so the
# project's pins (requirements/) stay as they are. Usage: bench/peers_env.sh [VENV]; then `make bench-peers`.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.peers-venv}  # at the root, beside .venv: inside bench/ the layout test would read its .py files
PYTHON=${PYTHON:-python3.11}
TORCH=$(grep -E '^torch==' requirements/runtime.txt | cut -d= -f3)  # the runtime's pin, 2.13.0
TORCH_INDEX=${TORCH_INDEX:-https://download.pytorch.org/whl/cpu}

test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
CONSTRAINTS="$VENV/constraints.txt"
echo "torch==$TORCH+cpu" > "$CONSTRAINTS"  # the local label exists only for CPU wheels: never a CUDA download
# torch alone, without its dependencies: a CPU wheel already on disk (pip's find-links) first, else the CPU
# index (PyPI's plain torch is the CUDA build); the next install brings its dependencies from PyPI
"${PIP[@]}" --no-deps --no-index "torch==$TORCH+cpu" 2>/dev/null \
  || "${PIP[@]}" --no-deps --index-url "$TORCH_INDEX" "torch==$TORCH+cpu"
# the runtime's other needs for captioning in this process (no transformers pin: optimum chooses it)
RUNTIME=(tokenizers pillow numpy tqdm)
# one resolve for both peers: installed one after the other, optimum-intel moved optimum past what optimum-onnx
# accepts. OpenVINO is a column only if it resolves beside ONNX Runtime; without it the bench records its absence.
"${PIP[@]}" -c "$CONSTRAINTS" "optimum-onnx[onnxruntime]" "optimum-intel[openvino]" "${RUNTIME[@]}" \
  || "${PIP[@]}" -c "$CONSTRAINTS" "optimum-onnx[onnxruntime]" "${RUNTIME[@]}"
# optimum-intel pulls PyPI's torchvision, built for CUDA torch: its operators fail to load beside the CPU torch and
# transformers then cannot import any model. Its CPU build from the CPU index, else none (no column needs it).
if VISION=$("$VENV/bin/python" -m pip show torchvision 2>/dev/null | sed -n 's/^Version: //p') && [ -n "$VISION" ] \
    && ! "$VENV/bin/python" -c 'import torchvision' 2>/dev/null; then
  "${PIP[@]}" --no-deps --retries 0 --index-url "$TORCH_INDEX" "torchvision==${VISION%%+*}+cpu" 2>/dev/null \
    || "$VENV/bin/python" -m pip uninstall -q -y torchvision
fi
"$VENV/bin/python" -m pip freeze > "$VENV/freeze.txt"
"$VENV/bin/python" -c 'import torch; assert not torch.version.cuda, torch.__version__; print("torch", torch.__version__)' # CPU
grep -iE '^(torch|transformers|optimum|optimum-onnx|optimum-intel|onnxruntime|onnx|openvino)==' "$VENV/freeze.txt"
