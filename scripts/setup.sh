#!/usr/bin/env bash
# One-time set-up on Debian/Ubuntu with Python 3.11: system libraries for napari's Qt canvas
# under Xvfb, a virtual environment in .venv with a CPU build of torch and this package.
# Re-running is cheap: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

SYSTEM_PACKAGES="xvfb xauth libgl1 libegl1 libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 \
libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0 \
libxcb-cursor0 libdbus-1-3 libfontconfig1"

if command -v dpkg >/dev/null 2>&1; then
  missing=""
  for package in $SYSTEM_PACKAGES; do
    dpkg -s "$package" >/dev/null 2>&1 || missing="$missing $package"
  done
  if [ -n "$missing" ]; then
    echo "setup: installing system packages:$missing"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null
  fi
else
  echo "setup: not a Debian system; install Xvfb and the OpenGL/xcb libraries yourself" >&2
fi

python_bin="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $python_bin"
  "$python_bin" -m venv .venv
fi
pip=".venv/bin/python -m pip"

# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build; TORCH_SPEC overrides
# (e.g. TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu124" on a GPU machine)
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  echo "setup: installing ${TORCH_SPEC:-torch==2.13.0}"
  $pip install -q --upgrade pip
  $pip install -q ${TORCH_SPEC:-torch==2.13.0}
fi

stamp=.venv/.medcad-installed
wanted="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
  echo "setup: installing napari-medcad with its test and demo extras"
  $pip install -q -e ".[test]"
  # nnU-Net v2 for its dataset integrity check only, without its dependencies (see pyproject.toml)
  $pip install -q --no-deps "nnunetv2==2.8.1"
  echo "$wanted" > "$stamp"
fi

# a dependency that asks for a newer torch would swap the CPU build for a multi-GB CUDA one
if [ -z "${TORCH_SPEC:-}" ] && ! .venv/bin/python -c "import torch, sys; sys.exit('+cpu' not in torch.__version__)"; then
  echo "setup: a dependency replaced torch==2.13.0 (CPU build); see pyproject.toml" >&2
  exit 1
fi
