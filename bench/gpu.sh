#!/usr/bin/env bash
# bench/gpu.sh: the model-level benchmark on a CUDA machine, in one go (aim: under 8 minutes).
#
# Installs torch==2.13.0 (CUDA build) and the export/runtime requirements into a fresh venv, then times
# HF `generate` against the runtime on the exported and the AOTInductor-compiled programs for ViT-base +
# GPT-2 small (random weights, real sizes): float32 and bfloat16, batch 1 and 32, greedy and 4-beam,
# tokens compared. Results: $RESULTS (default bench/gpu-results.json; also copied into $OUT if set).
#
#   TORCH_INDEX_URL  wheel index for torch (default: PyPI, whose Linux x86_64 torch 2.13.0 is the CUDA build;
#                    e.g. https://download.pytorch.org/whl/cu128 for a specific CUDA)
#   BENCH_MODELS     models to run (default: vit-gpt2-base; add blip-base if time allows)
#   BENCH_RUNS       timed runs per case (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
VENV=${GPU_VENV:-/tmp/captionkit-gpu-venv}
RESULTS=${RESULTS:-bench/gpu-results.json}
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}

if [[ ! -x "$VENV/bin/python" ]]; then
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
if [[ -n "${TORCH_INDEX_URL:-}" ]]; then
  "${PIP[@]}" --index-url "$TORCH_INDEX_URL" torch==2.13.0
else
  "${PIP[@]}" torch==2.13.0
fi
"${PIP[@]}" tokenizers==0.23.3 pillow==13.0.0 boto3==1.44.5 transformers==5.24.0 safetensors==0.8.0 \
  huggingface-hub==2.4.0 tqdm==4.70.1 numpy==2.4.6 -c requirements/constraints.txt
echo "install: $(( $(date +%s) - START )) s" >&2

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >&2 || true
"$VENV/bin/python" - <<'PY'
import torch
assert torch.cuda.is_available(), f"torch {torch.__version__} (CUDA {torch.version.cuda}) cannot see a GPU"
print("torch", torch.__version__, "CUDA", torch.version.cuda, torch.cuda.get_device_name(), flush=True)
PY

export TORCHINDUCTOR_COMPILE_THREADS=${TORCHINDUCTOR_COMPILE_THREADS:-$(nproc)}
# Leave ~30 s for writing results; the benchmark writes its file at the end of each full run.
BUDGET=$(( 470 - ($(date +%s) - START) ))
timeout "$BUDGET" "$VENV/bin/python" -m bench.model --device cuda --models ${BENCH_MODELS:-vit-gpt2-base} \
  --dtypes float32 bfloat16 --batches 1 32 --runs "${BENCH_RUNS:-5}" \
  --workdir /tmp/captionkit-gpu-bench --out "$RESULTS" --section model_cuda
"$VENV/bin/python" -m bench.report --results "$RESULTS" --doc bench/gpu-results.md
if [[ -n "${OUT:-}" ]]; then cp "$RESULTS" bench/gpu-results.md "$OUT"/; fi
echo "done in $(( $(date +%s) - START )) s: $RESULTS" >&2
