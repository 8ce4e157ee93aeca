#!/usr/bin/env bash
# Installs the Python packages that tests read fedpace's outputs with (TensorBoard, from
# PyPI) into a virtual environment of their own: target/py-venv, or $FEDPACE_PY_VENV.
# The tests find it there; under CI=true a test whose reader is missing fails.
#
# Usage: scripts/ci-python-deps.sh        (idempotent: a venv that has them is kept)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${FEDPACE_PY_VENV:-target/py-venv}
python=${PYTHON:-python3}
if ! command -v "$python" >/dev/null; then
  echo "ci-python-deps: $python is not installed (needed to check TensorBoard event files)" >&2
  exit 2
fi
if "$venv/bin/python" -c "import tensorboard" 2>/dev/null; then
  echo "ci-python-deps: $venv has tensorboard $("$venv/bin/python" -c 'import tensorboard; print(tensorboard.__version__)')"
  exit 0
fi
"$python" -m venv "$venv"
# Pinned: the version the event-file test was written against. `setuptools` provides
# `pkg_resources`, which some TensorBoard versions import at start.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  "tensorboard==2.21.0" "setuptools<81"
"$venv/bin/python" -c "import tensorboard; print('ci-python-deps: tensorboard', tensorboard.__version__, 'in $venv')"
