#!/usr/bin/env bash
# `make evidence`: install what the evidence run needs (experiments/evidence_setup.sh: the weights
# packages and Fashion-MNIST), then run it (experiments/run_evidence.py; default preset 'cpu', about an
# hour on 2 cores; arguments are passed on, e.g. --preset pilot). docs/evidence.md says what it measures.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash experiments/evidence_setup.sh
PY=${COMAD_VENV:-.venv}/bin/python
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" "$PY" experiments/run_evidence.py "$@"
