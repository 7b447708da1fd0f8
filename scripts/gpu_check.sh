#!/usr/bin/env bash
# One prepared run on a CUDA machine: build the extension for the present GPU, run the
# CUDA tests, run compute-sanitizer over a small subset, benchmark, write one report.
#
#   scripts/gpu_check.sh              on a machine with a CUDA GPU, PyTorch, nvcc, ninja, pybind11
#   scripts/gpu_check.sh --dry-run    on any machine: the same stages on CPU tensors at tiny sizes
#
# The report goes to $OUT/gpu_report.md (and gpu_report.json) when OUT is set, else to
# benchmarks/gpu_report.md.  Exits non-zero if any check failed.  Python wheels found in
# .whl/ (e.g. pydensecrf, for the CRF baseline) are installed first into a temporary folder.
set -u
cd "$(dirname "$0")/.."
PY="${PYTHON:-$(command -v python3 || command -v python)}"
if compgen -G ".whl/*.whl" > /dev/null; then
  site="$(mktemp -d)"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/*.whl \
    && export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
exec "$PY" benchmarks/gpu_check.py "$@"
