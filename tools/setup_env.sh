#!/usr/bin/env bash
# Install what jseg needs on a fresh Debian/Ubuntu machine, idempotently, then warm Jittor's cache.
#   apt: openmpi-bin + libopenmpi-dev (mpirun data parallel), g++ (Jittor's JIT compiler).
#   pip: requirements.txt (Jittor, and jittor-offline: the oneDNN, cutt and NCCL archives Jittor would
#        otherwise download), pytest, matplotlib (the plotting tools: extra 'tools'), and jseg itself
#        in editable mode.
# Jittor compiles its core on the first import (5-8 minutes on 2 cores) and may ask for a rerun
# after moving its cache, so the import is done twice here.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}

apt_packages=(openmpi-bin libopenmpi-dev g++)
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO=sudo
  echo "installing system packages: ${missing[*]}"
  $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 || {
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${missing[@]}"; }
fi

if ! "$PYTHON" - <<'PY' >/dev/null 2>&1
import importlib.util, sys
import numpy
missing = [m for m in ('jittor', 'jittor_offline', 'cv2', 'PIL', 'tqdm', 'yapf', 'pytest', 'matplotlib')
           if importlib.util.find_spec(m) is None]
sys.exit(1 if missing or int(numpy.__version__.split('.')[0]) >= 2 else 0)
PY
then
  "$PYTHON" -m pip install -q --root-user-action=ignore -r requirements.txt pytest "matplotlib>=3.5"
fi
if ! "$PYTHON" -m pip show -q jseg >/dev/null 2>&1; then
  "$PYTHON" -m pip install -q --root-user-action=ignore --no-deps --no-build-isolation -e .
fi

for attempt in 1 2; do
  "$PYTHON" -c "import jseg, jittor" >/dev/null
done
echo "jseg environment ready ($("$PYTHON" -c 'import jseg, jittor; print("jseg", jseg.__version__, "/ jittor", jittor.__version__)'))"
