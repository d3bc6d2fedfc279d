#!/usr/bin/env bash
# bench/gpu.sh: the GPU checks and the model-level benchmark on a CUDA machine, in one go (aim: under 8 minutes).
#
# 1. the boot's own GPU check (`python -m runtime gpu-check`: driver, CUDA, GPU, a kernel that must run);
# 2. a smoke run on the tests' tiny ViT + GPT-2: export, load the .pt2 on CUDA, tokens against HF `generate` on
#    the same GPU; 2b. the graph cache on CUDA against torch's loader (tokens); 2c. the static decode's CUDA
#    graphs against the eager loop and HF on the tiny model (batches 1, 3, 5, 8; tokens must be equal);
# 3. decode (bench.gpu_decode): ours on CUDA graphs vs ours eager vs HF eager vs HF static cache + torch.compile,
#    ViT-base + GPT-2 small first (random weights, real sizes), batch 1/8/32/64, greedy and 4 beams, float32;
# 4. with the time left: HF `generate` against the runtime in bfloat16, batch 1 and 32 (bench.model);
# 5. with the time left: Qwen2-VL at Qwen2-VL-2B's widths (QWEN_LAYERS vision and text layers, default 8 8) in
#    bfloat16, exported there, against HF `generate` on the same GPU, batch 1 and 8 (bench.qwen_vl_widths).
# AOTInductor is not run: the runtime refuses it on CUDA (runtime/decode/static.py says why).
# Results: $RESULTS (default bench/gpu-results.json; each stage's log and the results also go to $OUT if set).
#
#   GPU_PYTHON       use this interpreter as it is (its own torch, transformers...): for a machine with no
#                    package registry. Unset: a fresh venv with torch==2.13.0 from TORCH_INDEX_URL (default
#                    PyPI, whose Linux x86_64 torch 2.13.0 is the CUDA 13.0 build) and the pinned requirements.
#   DECODE_MODELS    real-size models for stage 3, in order (default: vit-gpt2-base blip-base florence2-base; a model
#                    is not started with under 150 s of stage 3's time left)
#   DECODE_TIMEOUT_S bound on stage 3 (default 330); HF_STATIC_TIMEOUT_S its HF static + compile column (default 150)
#   EOS_EVERY        decode steps between the host's all-done checks (default 4)
#   BENCH_MODELS     real-size models for stage 4 (default: vit-gpt2-base); BENCH_DTYPES (default: bfloat16)
#   BENCH_RUNS       timed runs per case (default 5)
#   TINY_TIMEOUT_S   bound on stage 2 (default 150)
#   BUDGET_S         seconds for the whole script (default 470)
#   DEVICE           cuda (default), or cpu to rehearse the whole script here before a lent GPU's minutes are spent:
#                    no nvidia-smi, no GPU check, every stage on the CPU. With DECODE_MODELS=tiny BENCH_MODELS=tiny
#                    QWEN_LAYERS="1 1" it takes a few minutes (tests/bench/test_gpu_script.py runs it so, then renders
#                    its results with bench.report).
set -uo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
DEVICE=${DEVICE:-cuda}
RESULTS=${RESULTS:-bench/gpu-results.json}
LOGS=${OUT:-/tmp/captionkit-gpu-logs}
mkdir -p "$LOGS" "$(dirname "$RESULTS")"
left() { echo $(( ${BUDGET_S:-470} - ($(date +%s) - START) )); }

if [[ -n "${GPU_PYTHON:-}" ]]; then
  PY=$GPU_PYTHON
else
  VENV=${GPU_VENV:-/tmp/captionkit-gpu-venv}
  [[ -x "$VENV/bin/python" ]] || "$(command -v python3.11 || command -v python3)" -m venv "$VENV"
  PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
  "${PIP[@]}" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} torch==2.13.0 || exit 1
  "${PIP[@]}" -r requirements/dev.txt -c requirements/constraints.txt || exit 1
  PY=$VENV/bin/python
fi
echo "setup: $(( $(date +%s) - START )) s" >&2
{ [[ $DEVICE == cuda ]] && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  "$PY" -c "import sys, torch, transformers; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__)"
} 2>&1 | tee "$LOGS/versions.txt" >&2

if [[ $DEVICE == cuda ]]; then
  echo "== 1. the boot's GPU check" >&2
  timeout 120 "$PY" -m runtime gpu-check 2>&1 | tee "$LOGS/gpu-check.txt" >&2
  check=${PIPESTATUS[0]}
else
  echo "== 1. rehearsal on $DEVICE: no GPU check" >&2
  check=0
fi

export TORCHINDUCTOR_COMPILE_THREADS=${TORCHINDUCTOR_COMPILE_THREADS:-$(nproc)} PYTHONUNBUFFERED=1 PYTHONFAULTHANDLER=1
WORK=${GPU_WORKDIR:-/tmp/captionkit-gpu-bench}
echo "== 2. tiny model: export, CUDA load, tokens vs HF on the GPU" >&2
timeout "${TINY_TIMEOUT_S:-150}" "$PY" -m bench.model --device "$DEVICE" --models tiny --dtypes float32 \
  --batches 1 8 --runs 3 --backends exported --workdir "$WORK" --out "$RESULTS" --section model_cuda_tiny \
  2>&1 | tee "$LOGS/tiny.txt" >&2
tiny=${PIPESTATUS[0]}
echo "== 2b. described programs on the GPU: tokens vs torch's loader + move_to_device_pass (tiny model)" >&2
timeout 120 "$PY" -m bench.description_check --device "$DEVICE" \
  --artifact "$(ls "$WORK"/tiny-float32-b*.pt2 | head -1)" --out "$RESULTS" --section description_cuda \
  2>&1 | tee "$LOGS/description.txt" >&2

echo "== 2c. static decode on the tiny model: CUDA graphs vs the eager loop vs HF, batches 1 3 5 8" >&2
timeout 120 "$PY" -m bench.gpu_decode --device "$DEVICE" --models tiny --batches 1 3 5 8 --runs 1 \
  --hf-static-timeout-s 0 --workdir "$WORK" --out "$RESULTS" --section decode_cuda_tiny \
  2>&1 | tee "$LOGS/decode-tiny.txt" >&2
graphs=${PIPESTATUS[0]}

decode=skipped bench=skipped qwen=skipped
if [[ $check -eq 0 ]]; then  # the real-size stages run even when stage 2 fails: they are separate
  echo "== 3. decode: graphs vs eager vs HF eager vs HF static + compile, $(left) s left" >&2
  bound=${DECODE_TIMEOUT_S:-330}; (( bound > $(left) - 20 )) && bound=$(( $(left) - 20 ))
  timeout "$bound" "$PY" -m bench.gpu_decode --device "$DEVICE" \
    --models ${DECODE_MODELS:-vit-gpt2-base blip-base florence2-base} --batches 1 8 32 64 --runs "${BENCH_RUNS:-5}" \
    --eos-every "${EOS_EVERY:-4}" --budget-s "$(( bound - 10 ))" \
    --hf-static-timeout-s "${HF_STATIC_TIMEOUT_S:-150}" --workdir "$WORK" --out "$RESULTS" --section decode_cuda \
    2>&1 | tee "$LOGS/decode.txt" >&2
  decode=${PIPESTATUS[0]}
  if (( $(left) > 120 )); then
    echo "== 4. real-size models in bfloat16, $(left) s left" >&2
    timeout "$(( $(left) - 20 ))" "$PY" -m bench.model --device "$DEVICE" --models ${BENCH_MODELS:-vit-gpt2-base} \
      --dtypes ${BENCH_DTYPES:-bfloat16} --batches 1 32 --runs "${BENCH_RUNS:-5}" --backends exported \
      --workdir "$WORK" --out "$RESULTS" --section model_cuda 2>&1 | tee "$LOGS/base.txt" >&2
    bench=${PIPESTATUS[0]}
  fi
  if (( $(left) > 100 )); then
    echo "== 5. Qwen2-VL at 2B widths in bfloat16, $(left) s left" >&2
    read -r qv qt <<< "${QWEN_LAYERS:-8 8}"
    timeout "$(( $(left) - 10 ))" "$PY" -m bench.qwen_vl_widths --device "$DEVICE" --dtype bfloat16 --batches 1 8 \
      --vision-layers "$qv" --text-layers "$qt" --repeats 3 --out "$RESULTS" --section qwen_vl_cuda \
      2>&1 | tee "$LOGS/qwen.txt" >&2
    qwen=${PIPESTATUS[0]}
  fi
fi
[[ "$LOGS" != "$(dirname "$RESULTS")" ]] && cp "$RESULTS" "$LOGS"/ 2>/dev/null
echo "gpu-check exit $check, tiny exit $tiny, graphs = eager exit $graphs, decode exit $decode," \
  "bfloat16 exit $bench, qwen exit $qwen; done in $(( $(date +%s) - START )) s: $RESULTS" >&2
[[ $check -eq 0 && $tiny -eq 0 && $graphs -eq 0 ]]
