# One-command entry points. `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= demo
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONUNBUFFERED = 1

.PHONY: setup browser demo test test-slow lint proto clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[cpu,test]"
	touch $@

# Sample library -> rgb + audio features (random weights: no ImageNet or VGGish download) ->
# NetVLAD model over both streams ->
# metrics on a second, unseen library extracted with the same PCA and vocabulary -> tags and
# an HTML report for that library's raw videos.
demo: setup
	rm -rf $(DEMO_DIR)  # a rerun starts over: extraction refuses to mix runs into one output
	$(VENV)/bin/make_sample_library --output $(DEMO_DIR)/library --videos 40
	$(VENV)/bin/extract_features --input $(DEMO_DIR)/library --output $(DEMO_DIR)/features \
		--labels $(DEMO_DIR)/library/labels.csv --weights random --audio_weights random \
		--pca_dims 128
	$(VENV)/bin/make_sample_library --output $(DEMO_DIR)/heldout --videos 12 --seed 1
	$(VENV)/bin/extract_features --input $(DEMO_DIR)/heldout --output $(DEMO_DIR)/heldout_features \
		--labels $(DEMO_DIR)/heldout/labels.csv --weights random --audio_weights random \
		--pca $(DEMO_DIR)/features/pca.npz --audio_pca $(DEMO_DIR)/features/audio_pca.npz \
		--vocabulary $(DEMO_DIR)/features/vocabulary.csv
	$(VENV)/bin/train_pool --pooling netvlad --output $(DEMO_DIR)/model \
		--train_data '$(DEMO_DIR)/features/frame/*.tfrecord' \
		--eval_data '$(DEMO_DIR)/heldout_features/frame/*.tfrecord' \
		--cluster_size 16 --hidden_size 128 --batch_size 8 --learning_rate 1e-2 --epochs 20
	$(VENV)/bin/eval_pool --model $(DEMO_DIR)/model \
		--eval_data '$(DEMO_DIR)/heldout_features/frame/*.tfrecord' \
		--predictions $(DEMO_DIR)/predictions.csv
	$(VENV)/bin/tag_videos --model $(DEMO_DIR)/model --input $(DEMO_DIR)/heldout \
		--output $(DEMO_DIR)/tags

# The report tests render pages in Debian's headless Chromium; they fail, not skip, without it.
browser:
	command -v chromium >/dev/null || (apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

# pytest exits 5 when it collects nothing: that is a failure of the suite, not a pass.
test: setup browser
	$(PY) -m pytest -m "not slow" -q

test-slow: setup browser
	$(PY) -m pytest -m slow -q

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

# Regenerates proto/*_pb2.py; grpcio-tools 1.76 ships protoc 6.31, matching protobuf<7.
proto: setup
	$(PY) -m pip install -q --target $(VENV)/protoc grpcio-tools==1.76.0 --no-deps
	PYTHONPATH=$(VENV)/protoc $(PY) -m grpc_tools.protoc -Iproto --python_out=proto proto/*.proto

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
