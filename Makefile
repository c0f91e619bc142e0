# The whole set-up is `make demo` or `make test` on a fresh machine (both set up .venv first).
# `make demo` shows progress bars and summaries (full logs in the work dirs, PNGs of the dense
# tasks' predictions at the end); `COMAD_VERBOSE=1 make demo` shows mmengine's full stream.
SHELL := /bin/bash
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast clean-demo evidence

setup:
	@bash tools/setup_env.sh

demo: setup
	bash tools/demo.sh

# The evidence run (docs/evidence.md): the claims audit, real teachers into a ViT on Fashion-MNIST,
# about 2.5 hours on 2 CPU cores; EVIDENCE_ARGS="--preset pilot" for a few minutes.
evidence: setup
	bash experiments/evidence.sh $(EVIDENCE_ARGS)

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

# Unit tests only (no end-to-end runs, no OpenMMLab stack).
test-fast: setup
	$(PY) -m pytest -q -m "not heavy and not mm" $(PYTEST_ARGS)

clean-demo:
	rm -rf work_dirs/demo* work_dirs/transfer-demo work_dirs/LATEST_STUDENT
