#!/usr/bin/env bash
# Builds the `fedpace` Python wheel (crates/py: pyo3 + maturin, abi3 — one wheel for
# every CPython >= 3.9), installs it into a FRESH virtual environment with NumPy, pytest
# and pandas, and runs the pytest suite crates/py/tests against the installed wheel
# (docs/python.md). CI runs it after `cargo test` (.ci/run).
#
# Usage: scripts/python-wheel.sh
#   PYTHON=python3.9 scripts/python-wheel.sh   another interpreter (>= 3.9)
#   FEDPACE_PY_PANDAS=0 scripts/python-wheel.sh  test without pandas (plain lists)
#   FEDPACE_PY_ALSO="python3.9 python3.13" scripts/python-wheel.sh  the same wheel in more
#                                              interpreters (their pandas test skips)
# Outputs: target/wheels/fedpace-<version>-cp39-abi3-<platform>.whl; the test venv is
# target/py-test-venv (recreated every time); maturin lives in target/py-build-venv.
# Anything missing (Python, venv, maturin, a package) ends the script with an error.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
maturin_version=1.16.0
start=$SECONDS
fail() {
  echo "python-wheel: $*" >&2
  exit 2
}
command -v "$python" >/dev/null || fail "$python is not installed (needed to build and test the wheel)"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 9))' ||
  fail "$("$python" --version 2>&1): the package needs Python >= 3.9"
"$python" -c 'import venv, ensurepip' 2>/dev/null ||
  fail "$python cannot create virtual environments (Debian/Ubuntu: apt install python3-venv)"

# maturin (PyPI), in a venv of its own, kept between runs.
build_venv=target/py-build-venv
if [ "$("$build_venv/bin/maturin" --version 2>/dev/null)" != "maturin $maturin_version" ]; then
  rm -rf "$build_venv"
  "$python" -m venv "$build_venv"
  "$build_venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "maturin==$maturin_version"
fi

# The wheel. maturin builds the crate in the workspace's target/ (release profile), so
# the fedpace crates compiled by `cargo build --release` are reused.
rm -f target/wheels/fedpace-*.whl
"$build_venv/bin/maturin" build --release --manifest-path crates/py/Cargo.toml \
  --interpreter "$python" --out target/wheels
wheel=$(ls target/wheels/fedpace-*-abi3-*.whl 2>/dev/null | head -n 1 || true)
[ -n "$wheel" ] || fail "maturin made no abi3 wheel in target/wheels"
built=$SECONDS

# A fresh venv: the wheel and what the tests need, nothing from this checkout.
test_venv=target/py-test-venv
rm -rf "$test_venv"
"$python" -m venv "$test_venv"
extras=(numpy pytest)
[ "${FEDPACE_PY_PANDAS:-1}" = 0 ] || extras+=(pandas)
"$test_venv/bin/python" -m pip install --quiet --disable-pip-version-check "$wheel" "${extras[@]}"
"$test_venv/bin/python" -c 'import fedpace, sys; print("python-wheel: fedpace", fedpace.__version__, "from", fedpace.__file__, "on Python", sys.version.split()[0])'
# From the repository root, where no `fedpace` directory shadows the installed package.
"$test_venv/bin/python" -m pytest -q -p no:cacheprovider crates/py/tests
# The same abi3 wheel in other interpreters, when asked: FEDPACE_PY_ALSO="python3.9 python3.13"
# (NumPy and pytest only: the tables are then plain lists, also tested).
for other in ${FEDPACE_PY_ALSO:-}; do
  command -v "$other" >/dev/null || fail "FEDPACE_PY_ALSO: $other is not installed"
  venv="target/py-test-venv-$(basename "$other")"
  rm -rf "$venv"
  "$other" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$wheel" numpy pytest
  echo "python-wheel: the same wheel on $("$venv/bin/python" --version)"
  CI= "$venv/bin/python" -m pytest -q -p no:cacheprovider crates/py/tests
done
echo "python-wheel: wheel $(basename "$wheel") built in $((built - start)) s; venvs, installs and tests in $((SECONDS - built)) s"
