# One command per job; each does its own idempotent set-up first.
#   make test   set up, then run the test suite (what CI runs)
#   make demo   set up, then run the LibriSpeech recipe end to end on the generated demo corpus
#   make figures  set up, then regenerate README.md's figure blocks (ONLY=<part of a command>: some)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup system-deps test test-all demo bench figures freeze clean

setup: system-deps $(STAMP)
	@# the compiled CPU kernels, selective scan and S4D steps (optional: without a compiler the
	@# PyTorch paths are used)
	@$(PY) espnet_ssm/ops/cpu_kernels.py

system-deps:
	@bash tools/system_deps.sh

# Re-installs only when the pins or the package metadata change.
$(STAMP): constraints.txt setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt \
		torch==2.11.0 torchaudio==2.11.0 espnet==202511 \
		sentencepiece jiwer pyyaml soundfile tensorboard matplotlib pytest ninja
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

test: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS) tests

test-all: setup
	$(PY) -m pytest $(PYTEST_ARGS) tests

demo: setup
	cd egs2/librispeech/asr1 && ./demo.sh

bench: setup
	$(PY) benchmarks/bench_kernels.py
	$(PY) benchmarks/bench_encoders.py

# Re-runs the command named in each <!-- figures: ... --> block of README.md and puts its output there.
ONLY ?=
figures: setup
	$(PY) benchmarks/update_readme.py $(if $(ONLY),--only '$(ONLY)')

# Regenerate the pins from the current environment (after a deliberate upgrade).
freeze:
	$(PY) -m pip freeze --exclude-editable | grep -v '^espnet-ssm' > constraints.body
	{ sed -n '/^#/p' constraints.txt; cat constraints.body; } > constraints.txt.new
	mv constraints.txt.new constraints.txt && rm constraints.body

clean:
	rm -rf $(VENV) build *.egg-info
