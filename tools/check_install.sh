#!/usr/bin/env bash
# The README's "Install" section, as written, in a brand-new virtual environment: torch first, then
# `pip install --no-build-isolation .` from install_requires alone (no test extras, nothing
# preinstalled), then the default job. An undeclared run-time dependency fails here at import.
#   PYTHON=...  the interpreter to create the environment from (default python3)
#   TORCH_SPEC  what `pip install` gets for torch (default torch==2.13.0, the wheel on this machine)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A copy of the tracked (and not-ignored) files, so the build starts from sources only.
mkdir "$work/src"
git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$work/src"
"$PYTHON" -m venv "$work/venv"
pip=("$work/venv/bin/python" -m pip install -q --disable-pip-version-check)
"${pip[@]}" "$TORCH_SPEC"
(cd "$work/src" && "${pip[@]}" --no-build-isolation .)
# Run from outside the source tree, so the installed package (not the copy) is imported.
cd "$work"
"$work/venv/bin/python" -m zslfast.train --no-progress --device cpu --out "$work/run"
"$work/venv/bin/python" - "$work/run/results.json" <<'PY'
import json, sys
res = json.load(open(sys.argv[1]))
assert res["metrics"]["zsl_t1"] > 15, res["metrics"]
print("check_install: fresh install from install_requires works; extension:", res["extension"])
PY
# --like NAME from the installed package alone (its packaged class tables; no ../shared/data next to it)
(cd "$work" && ZSLFAST_SHARED_DATA= "$work/venv/bin/python" -m zslfast.train --like APY --no-progress --device cpu \
    --out "$work/like" > /dev/null)
"$work/venv/bin/python" -c "import json, sys; r = json.load(open(sys.argv[1])); assert r['dataset'] == 'synthetic_like_APY', r['dataset']; print('check_install: --like APY from the package:', r['data'])" "$work/like/results.json"
# SC-EGG's region data and the report from the installed package (one smoke-test entry of the main
# job; .ci/run runs the quick start's main job itself, in the development install).
"$work/venv/bin/python" -m zslfast.sweep --quick --methods scegg --no-progress --device cpu --out "$work/sweep" \
    > "$work/sweep.log"
grep -q "^| scegg | quick |" "$work/sweep/table.md" && tail -n 3 "$work/sweep.log"
"$work/venv/bin/zslfast" --version
# Without a C++ compiler: the install goes on without the extension (one line says so), and the
# package runs on its pure-PyTorch fallback and says that too.
rm -rf "$work/src/build"
(cd "$work/src" && CXX=/nonexistent/c++ "$work/venv/bin/python" -m pip wheel -v --no-build-isolation --no-deps \
    -w "$work/nocompiler" . > "$work/nocompiler.log" 2>&1)
grep "zslfast: the C++ extension was not built" "$work/nocompiler.log"
"${pip[@]}" --force-reinstall --no-deps "$work"/nocompiler/zslfast-*.whl
version=$("$work/venv/bin/zslfast" --version)
echo "$version"
[[ "$version" == *"extension: not built, pure-PyTorch fallback"* ]]
"$work/venv/bin/zslfast" train --no-progress --device cpu --out "$work/fallback" > "$work/fallback.log" 2>&1
grep "operator backend torch (the C++ extension was not built" "$work/fallback.log"
echo "check_install: install without a C++ compiler works (pure-PyTorch fallback)"
