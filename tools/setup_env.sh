#!/usr/bin/env bash
# Creates (or updates) the virtual environment .venv with everything zslfast needs and builds the
# package with its extension in place (editable, so the compiled zslfast/_C*.so sits next to the
# sources that tests import). Safe to run again: the build is skipped when no source changed.
#   VENV=path   where to put the environment (default .venv)
#   PYTHON=...  the interpreter to create it from (default python3)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PY="$VENV/bin/python"
# torch==2.13.0 exactly: on these machines that is the CPU wheel on local disk; any looser spec
# would download a multi-GB CUDA build. Build tools: ninja (fast parallel builds), setuptools, wheel.
# Everything else comes from setup.py: install_requires plus the [test] extra (pytest, freia).
"$PY" -m pip install -q --disable-pip-version-check torch==2.13.0 ninja setuptools wheel

stamp="$VENV/.zslfast-build-stamp"
sources_hash=$(cat setup.py pyproject.toml $(find csrc -type f | sort) | sha1sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$sources_hash" ] && ls zslfast/_C*.so >/dev/null 2>&1; then
  echo "setup_env: extension up to date"
else
  # --no-build-isolation: compile against the torch installed above (see README, "Install").
  "$PY" -m pip install -q --disable-pip-version-check --no-build-isolation -e ".[test]"
  echo "$sources_hash" > "$stamp"
fi
"$PY" -c "import zslfast.ops as o; print('setup_env: zslfast ready, extension:', o.extension_info())"
