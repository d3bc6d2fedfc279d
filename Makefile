# CaptionKit: every target is a line or two calling a Python entry point. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
# no __pycache__ in the source tree: a Lambda's folder (runtime/lambdas/) is shipped whole, as it is on disk
export PYTHONDONTWRITEBYTECODE := 1
MODEL ?= demo-model
OUT ?= dist/model.pt2
ARTIFACT ?= $(OUT)
# $(call q,VALUE): VALUE as one shell word (single-quoted, a ' inside written '\''), so a path or URI with a space
# or a quote arrives whole; nothing when VALUE is empty. $(call opt,--flag,VALUE): the flag and its quoted value.
q = $(if $(1),'$(subst ','\'',$(1))')
opt = $(if $(2),$(1) $(call q,$(2)))

.DEFAULT_GOAL := help
.PHONY: help setup lock test bench bench-peers demo demo-accuracy demo-model export caption synth agent \
	submit retry local-up local-down deploy destroy stack-snapshot upload models rollback status collect redrive \
	gallery compare

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements/runtime.txt requirements/dev.txt requirements/constraints.txt
	@echo "setup: $(VENV) from requirements/ (pip)" >&2
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) >&2
	@$(PY) -m pip install -q -r requirements/dev.txt -c requirements/constraints.txt >&2
	@touch $@

node_modules/.installed: package.json package-lock.json
	@echo "setup: node_modules (npm ci)" >&2
	@npm ci --no-audit --no-fund >&2
	@touch $@

setup: $(VENV)/.installed node_modules/.installed ## create .venv (pip) and node_modules (npm ci, the cdk CLI)

test: setup ## run the whole test suite (sets itself up; the boot rehearsal needs systemd-analyze, the pages chromium)
	command -v systemd-analyze >/dev/null || (apt-get update -q && apt-get install -y -q systemd)
	command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium)
	$(PY) -m ruff check . && $(PY) -m ruff format --check .
	$(PY) -m pytest -q -n 3 --dist loadfile --no-loadscope-reorder tests

lock: setup ## re-resolve requirements/runtime.txt into the hash-locked runtime.lock + runtime-cuda.lock (uv)
	$(PY) -m tools.lock

demo-model: demo-model/config.json ## train the small demo captioner into ./demo-model (deterministic, ~2 min)

demo-model/config.json: demo/model.py demo/shapes.py demo/evaluate.py | $(VENV)/.installed
	$(PY) -m demo.model --out demo-model

dist/demo.pt2: demo-model/config.json | $(VENV)/.installed
	$(PY) -m export --model demo-model --out dist/demo.pt2

demo-accuracy: setup dist/demo.pt2 ## exact-match accuracy of dist/demo.pt2 on 500 fresh images (PNG and JPEG)
	$(PY) -m demo.accuracy --artifact dist/demo.pt2

demo: setup dist/demo.pt2 ## the whole flow on the local AWS: deploy, upload, drop images, caption, report, tear down
	$(PY) -m tools.demo

export: setup ## export MODEL (hub id or folder) to OUT (a .pt2), proving parity [TASK= PROMPT= IMAGE_SIZE= DTYPE=]
	@$(PY) -m export --model $(call q,$(MODEL)) --out $(call q,$(OUT)) $(call opt,--task,$(TASK)) \
		$(call opt,--prompt,$(PROMPT)) $(call opt,--image-size,$(IMAGE_SIZE)) $(call opt,--dtype,$(DTYPE))

caption: setup ## caption IMAGES (files, folders, globs) with ARTIFACT [OUT=x.jsonl|.csv|.parquet] [FORCE=1: replace OUT]
	@$(PY) -m runtime caption --artifact $(call q,$(if $(filter file,$(origin ARTIFACT)),dist/model.pt2,$(ARTIFACT))) \
		$(if $(filter command line,$(origin OUT)),--out $(call q,$(OUT))) $(if $(FORCE),--overwrite) $(IMAGES)

synth: setup ## cdk synth the stacks (offline, no credentials)
	npx cdk synth --quiet

agent: setup ## run the agent here against the stack (local after local-up): make agent [ARGS=--burst] [CONFIG=file]
	$(if $(CONFIG),$(PY) -m runtime agent --config $(call q,$(CONFIG)) $(ARGS),$(PY) -m tools.run_agent $(ARGS))

redrive: setup ## after a fix, move dead-lettered messages back to the jobs queue, with counts [MAX=n]
	$(PY) -m tools.redrive $(call opt,--max,$(MAX))

submit: setup ## queue: PREFIX=s3://b/p/ | SHARDS=s3://b/p/ | MANIFEST=s3://b/f [IMAGE_COLUMN KEY_COLUMN JOB_ID PART_SIZE WAIT=1]
	@$(PY) -m tools.submit $(if $(WAIT),--wait) $(call q,$(PREFIX)) $(call opt,--shards,$(SHARDS)) \
		$(call opt,--manifest,$(MANIFEST)) $(call opt,--image-column,$(IMAGE_COLUMN)) \
		$(call opt,--key-column,$(KEY_COLUMN)) $(call opt,--job-id,$(JOB_ID)) \
		$(call opt,--part-size,$(PART_SIZE)) $(call opt,--config,$(CONFIG))

retry: setup ## requeue only a job's failed parts / parts with errors: JOB=<id> [ONLY=failed|errors|both] [WAIT=1]
	@$(PY) -m tools.submit $(if $(WAIT),--wait) --retry $(call q,$(JOB)) $(call opt,--only,$(ONLY)) \
		$(call opt,--config,$(CONFIG))

status: setup ## queue, fleet, model, last hour, errors, cost [WATCH=1] [JOB=<id>: a job's progress to its end]
	@$(PY) -m tools.status $(call opt,--job,$(JOB)) $(if $(WATCH),--watch)

collect: setup ## PREFIX=s3://.. or JOB=<id> into OUT (.jsonl/.csv/.parquet) [FORCE=1] [LIST=1]; exit 1: shards to come
	@$(PY) -m tools.collect $(call q,$(PREFIX)) $(call opt,--job,$(JOB)) $(if $(LIST),--list, \
		$(call q,$(if $(filter command line,$(origin OUT)),$(OUT),captions.jsonl))) $(call opt,--format,$(FORMAT)) \
		$(if $(FORCE),--overwrite)

gallery: setup ## review page OUT (gallery.html) of CAPTIONS=<rows file> | PREFIX=s3://.. | JOB=<id> [N=300 SEED=0]
	@$(PY) -m tools.gallery $(call q,$(CAPTIONS)) $(call opt,--prefix,$(PREFIX)) $(call opt,--job,$(JOB)) \
		--out $(call q,$(if $(filter command line,$(origin OUT)),$(OUT),gallery.html)) $(call opt,--sample,$(N)) \
		$(call opt,--seed,$(SEED))

compare: setup ## caption IMAGES (files, folders) with each of ARTIFACTS="a.pt2 b.pt2", side by side: OUT=compare.html
	@$(PY) -m tools.compare $(ARTIFACTS) --images $(IMAGES) \
		--out $(call q,$(if $(filter command line,$(origin OUT)),$(OUT),compare.html))

local-up: setup ## start local AWS (moto, localhost:5050), deploy the stack [SETTINGS="k=v k2=v2"] [CDK_ARGS="-c k=v"]
	@$(PY) -m tools.local up $(foreach s,$(SETTINGS),-c $(call q,$(s))) $(CDK_ARGS)

local-down: ## stop the local AWS that local-up started
	$(PY) -m tools.local down

deploy: setup ## cdk deploy to your AWS account (settings: cdk.json "captionkit"; CDK_ARGS="-c spot=true")
	npx cdk deploy $(CDK_ARGS)

destroy: ## cdk destroy the stack (the buckets are kept; see README)
	npx cdk destroy $(CDK_ARGS)

stack-snapshot: setup ## accept an intended template change into tests/stacks/snapshots/
	UPDATE_SNAPSHOTS=1 $(PY) -m pytest -q tests/stacks/test_stack_snapshot.py

upload: setup ## upload ARTIFACT (a .pt2) to the deployed stack and make it the current model
	@$(PY) -m tools.models upload $(call q,$(ARTIFACT))

models: setup ## list uploaded models (* marks the current one)
	@$(PY) -m tools.models list

rollback: setup ## make the previous model current again
	$(PY) -m tools.models rollback

bench: setup ## benchmarks on this CPU -> bench/results.json + BENCHMARKS.md's appendix (QUICK=1: smoke run)
	$(PY) -m bench $(if $(QUICK),--quick)

bench-peers: setup ## HF, ONNX Runtime, OpenVINO and the runtime on ViT-GPT2 base in their own venv [RUNS=3 DIR=]
	@test -x .peers-venv/bin/python || bench/peers_env.sh
	$(PY) -m bench.peers --prepare $(call opt,--workdir,$(DIR)) && .peers-venv/bin/python -m bench.peers \
		$(call opt,--workdir,$(DIR)) $(call opt,--runs,$(RUNS)) && $(PY) -m bench.report
