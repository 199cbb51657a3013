# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TIMM_VENV ?= .venv-timm
TIMM_STAMP := $(TIMM_VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv test test-fast test-backends demo bench clean

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# timm under PyTorch, for the checks that timm itself loads what we write (tests/test_timm_roundtrip.py).
$(TIMM_STAMP): requirements-timm.txt
	test -x $(TIMM_VENV)/bin/python || $(PYTHON) -m venv $(TIMM_VENV)
	$(TIMM_VENV)/bin/python -m pip install --quiet -r requirements-timm.txt
	touch $(TIMM_STAMP)

# pytest exits 5 when it collects no test: that is a failure for us, not a pass.
test: $(STAMP) $(TIMM_STAMP)
	$(PY) -m ruff check .
	KERAS_COATNET_TIMM_PYTHON=$(TIMM_VENV)/bin/python $(PY) -m pytest -q $(PYTEST_ARGS)

# The library's tests on Keras' JAX and PyTorch backends too (training/ and export/ are TensorFlow only).
BACKENDS_STAMP := $(VENV)/.backends-installed
BACKEND_TESTS := tests/test_models.py tests/test_errors.py tests/test_parity.py tests/test_backends.py tests/test_run_time_size.py \
                 tests/test_layers.py
# What depends on the backend: parity on every fixture, save/load (across backends too), errors, fit, mixed
# precision. Backend-neutral checks (parameter counts, signatures, name lists) and the full-size CoAtNet-0 builds
# and XLA / torch.compile runs (minutes each on 2 cores) carry @pytest.mark.tensorflow_only (pyproject.toml) and
# run under TensorFlow only: a marker, so renaming a test does not change what runs where.
BACKEND_SELECT := -m "not tensorflow_only"

$(BACKENDS_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --no-build-isolation -e ".[jax,torch]"
	touch $(BACKENDS_STAMP)

test-backends: $(BACKENDS_STAMP)
	KERAS_BACKEND=jax $(PY) -m pytest -q $(BACKEND_SELECT) $(BACKEND_TESTS) $(PYTEST_ARGS)
	KERAS_BACKEND=torch $(PY) -m pytest -q $(BACKEND_SELECT) $(BACKEND_TESTS) $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) -m examples.demo $(if $(DEMO_FAST),--fast,)

bench: $(STAMP)
	$(PY) -m benchmarks.inference
	$(PY) -m benchmarks.training
	$(PY) -m export.benchmark coatnet_0

clean:
	rm -rf $(VENV) $(TIMM_VENV) .pytest_cache build *.egg-info
