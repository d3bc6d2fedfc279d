#!/usr/bin/env bash
# bench/gpu.sh: the GPU benchmark, the cases that answer the targets first, in one run under the caller's limit.
#
# 1. the boot's own GPU check (`python -m runtime gpu-check`: driver, CUDA, GPU, a kernel that must run);
# 2. the static decode on the tiny model: CUDA graphs vs the eager loop vs HF, batches 1 3 5 8 (tokens must be equal,
#    graphs must replay): a cheap gate before the real-size timings;
# 3. decode (bench.gpu_decode): ours on CUDA graphs vs ours eager vs HF eager vs HF static cache + torch.compile,
#    ViT-base + GPT-2 small greedy at batch 1 and 64 first, then 4 beams, then BLIP base and Florence-2 base
#    (random weights, real sizes, float32); per case: what ran (graph replays), CUDA-event timings, peak memory,
#    the kernels of one replay; the stage fails when a graphs case did not replay graphs;
# 4. HF `generate` against the runtime in bfloat16, batch 1 and 64 (bench.model);
# 5. Qwen2-VL at Qwen2-VL-2B's widths (QWEN_LAYERS vision and text layers, default 8 8) in bfloat16, exported there,
#    against HF `generate` on the same GPU, batch 1 and 8 (bench.qwen_vl_widths);
# 6. with the time left: the tiny model exported, loaded on CUDA, tokens against HF; 6b. the described programs on
#    CUDA against torch's loader + move_to_device_pass.
# AOTInductor is not run: the runtime refuses it on CUDA. Every case is one JSON line of $OUT/cases.jsonl the
# moment it finishes (the HF static + compile child writes its own), so a stage killed by its timeout loses only the
# case it was in; $RESULTS (default bench/gpu-results.json) gets the merged sections; a summary ends the run.
#
#   LIMIT_S          the caller's limit on this whole script, in seconds (default 540). SLACK_S (default 60, never
#                    less) stays free under it: every stage's timeout comes out of BUDGET_S = LIMIT_S - SLACK_S.
#   GPU_PYTHON       use this interpreter as it is (its own torch, transformers...): for a machine with no
#                    package registry. Unset: a fresh venv with torch==2.13.0 from TORCH_INDEX_URL (default
#                    PyPI, whose Linux x86_64 torch 2.13.0 is the CUDA 13.0 build) and the pinned requirements.
#   DECODE_MODELS    real-size models for stage 3, in order (default: vit-gpt2-base blip-base florence2-base; a model
#                    is not started with under 150 s of the stage's time left); DECODE_BATCHES (default: 1 64)
#   HF_STATIC_TIMEOUT_S  bound on each HF static + compile child (one per model and beam width; default 150)
#   EOS_EVERY        decode steps between the host's all-done checks (default 4)
#   BENCH_MODELS     real-size models for stage 4 (default: vit-gpt2-base); BENCH_DTYPES (default: bfloat16)
#   BENCH_RUNS       timed runs per case (default 5)
#   QWEN_REPEATS     timed repetitions of stage 5's cases (default 3; the CPU rehearsal in make test passes 1)
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
CASES=$LOGS/cases.jsonl
SLACK_S=${SLACK_S:-60}; (( SLACK_S < 60 )) && SLACK_S=60
BUDGET_S=$(( ${LIMIT_S:-540} - SLACK_S ))
mkdir -p "$LOGS" "$(dirname "$RESULTS")"
left() { echo $(( BUDGET_S - ($(date +%s) - START) )); }
# bound WANTED: a stage's timeout, never past the budget
bound() { local b=$1 l; l=$(left); (( b > l )) && b=$l; echo $(( b > 1 ? b : 1 )); }  # timeout 0 would mean none
echo "budget: $BUDGET_S s (limit ${LIMIT_S:-540} s less $SLACK_S s of slack); cases: $CASES" >&2

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
  "$PY" -c "import sys, torch, transformers as t; print(sys.version.split()[0], 'torch', torch.__version__,
    'cuda', torch.version.cuda, 'transformers', t.__version__)"
} 2>&1 | tee "$LOGS/versions.txt" >&2

if [[ $DEVICE == cuda ]]; then
  echo "== 1. the boot's GPU check" >&2
  timeout "$(bound 120)" "$PY" -m runtime gpu-check 2>&1 | tee "$LOGS/gpu-check.txt" >&2
  check=${PIPESTATUS[0]}
else
  echo "== 1. rehearsal on $DEVICE: no GPU check" >&2
  check=0
fi

export TORCHINDUCTOR_COMPILE_THREADS=${TORCHINDUCTOR_COMPILE_THREADS:-$(nproc)} PYTHONUNBUFFERED=1 PYTHONFAULTHANDLER=1
WORK=${GPU_WORKDIR:-/tmp/captionkit-gpu-bench}
COMMON=(--workdir "$WORK" --out "$RESULTS" --cases-jsonl "$CASES")

echo "== 2. static decode on the tiny model: CUDA graphs vs the eager loop vs HF, batches 1 3 5 8" >&2
timeout "$(bound 120)" "$PY" -m bench.gpu_decode --device "$DEVICE" --models tiny --batches 1 3 5 8 --runs 1 \
  --hf-static-timeout-s 0 "${COMMON[@]}" --section decode_cuda_tiny 2>&1 | tee "$LOGS/decode-tiny.txt" >&2
graphs=${PIPESTATUS[0]}

decode=skipped bench=skipped qwen=skipped tiny=skipped description=skipped
if [[ $check -eq 0 ]]; then
  stage=$(bound 100000)
  echo "== 3. decode: graphs vs eager vs HF eager vs HF static + compile, $stage s left" >&2
  timeout "$stage" "$PY" -m bench.gpu_decode --device "$DEVICE" \
    --models ${DECODE_MODELS:-vit-gpt2-base blip-base florence2-base} --batches ${DECODE_BATCHES:-1 64} \
    --runs "${BENCH_RUNS:-5}" --eos-every "${EOS_EVERY:-4}" --budget-s "$(( stage - 10 ))" \
    --hf-static-timeout-s "${HF_STATIC_TIMEOUT_S:-150}" "${COMMON[@]}" --section decode_cuda \
    2>&1 | tee "$LOGS/decode.txt" >&2
  decode=${PIPESTATUS[0]}
  if (( $(left) > 60 )); then
    echo "== 4. real-size models in bfloat16, $(left) s left" >&2
    timeout "$(bound 100000)" "$PY" -m bench.model --device "$DEVICE" --models ${BENCH_MODELS:-vit-gpt2-base} \
      --dtypes ${BENCH_DTYPES:-bfloat16} --batches 1 64 --runs "${BENCH_RUNS:-5}" --backends exported \
      "${COMMON[@]}" --section model_cuda 2>&1 | tee "$LOGS/base.txt" >&2
    bench=${PIPESTATUS[0]}
  fi
  if (( $(left) > 60 )); then
    echo "== 5. Qwen2-VL at 2B widths in bfloat16, $(left) s left" >&2
    read -r qv qt <<< "${QWEN_LAYERS:-8 8}"
    timeout "$(bound 100000)" "$PY" -m bench.qwen_vl_widths --device "$DEVICE" --dtype bfloat16 --batches 1 8 \
      --vision-layers "$qv" --text-layers "$qt" --repeats "${QWEN_REPEATS:-3}" --out "$RESULTS" --cases-jsonl "$CASES" \
      --section qwen_vl_cuda 2>&1 | tee "$LOGS/qwen.txt" >&2
    qwen=${PIPESTATUS[0]}
  fi
fi
if (( $(left) > 30 )); then
  echo "== 6. tiny model: export, load on $DEVICE, tokens vs HF on the same device, $(left) s left" >&2
  timeout "$(bound 150)" "$PY" -m bench.model --device "$DEVICE" --models tiny --dtypes float32 \
    --batches 1 8 --runs 3 --backends exported "${COMMON[@]}" --section model_cuda_tiny \
    2>&1 | tee "$LOGS/tiny.txt" >&2
  tiny=${PIPESTATUS[0]}
fi
artifact=$(ls "$WORK"/tiny-float32-b*.pt2 2>/dev/null | head -1)
if (( $(left) > 20 )) && [[ -n $artifact ]]; then
  echo "== 6b. described programs on $DEVICE: tokens vs torch's loader + move_to_device_pass (tiny model)" >&2
  timeout "$(bound 120)" "$PY" -m bench.description_check --device "$DEVICE" --artifact "$artifact" \
    --out "$RESULTS" --section description_cuda 2>&1 | tee "$LOGS/description.txt" >&2
  description=${PIPESTATUS[0]}
fi

[[ "$LOGS" != "$(dirname "$RESULTS")" ]] && cp "$RESULTS" "$LOGS"/ 2>/dev/null
timeout 30 "$PY" -m bench.gpu_summary "$CASES" 2>&1 | tee "$LOGS/summary.txt" >&2
echo "gpu-check exit $check, graphs = eager exit $graphs, decode exit $decode, bfloat16 exit $bench," \
  "qwen exit $qwen, tiny exit $tiny, description exit $description; done in $(( $(date +%s) - START )) s" \
  "of $BUDGET_S s: $RESULTS" | tee -a "$LOGS/summary.txt" >&2
# a decode stage that only ran out of time (124) is no failure; tokens that differ or graphs not replayed (1) are
[[ $check -eq 0 && $graphs -eq 0 && ( $decode == 0 || $decode == 124 || $decode == skipped ) ]]
