#!/usr/bin/env bash
# Set up gridwatch in ./.venv on Debian/Ubuntu (or any machine with Python >= 3.11).
#   bash scripts/setup.sh          runtime only
#   bash scripts/setup.sh --test   plus what the tests need: ffmpeg, Mosquitto, the GStreamer RTSP server,
#                                  Chromium (web page test) and the project's dev extras
set -euo pipefail
cd "$(dirname "$0")/.."
want_test=0
[ "${1:-}" = "--test" ] && want_test=1

SUDO=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && SUDO="sudo"
apt_install() {
  command -v apt-get >/dev/null || { echo "apt-get not found: install $* yourself" >&2; return 0; }
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

PY=${PYTHON:-python3}
if ! $PY -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
  echo "gridwatch needs Python >= 3.11 (found: $($PY --version 2>&1))" >&2; exit 1
fi
if [ ! -x .venv/bin/python ]; then
  $PY -m venv .venv 2>/dev/null || { apt_install python3-venv; rm -rf .venv; $PY -m venv .venv; }
fi
.venv/bin/python -m pip install -q --upgrade pip
if [ $want_test -eq 1 ]; then
  apt_install ffmpeg mosquitto python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-tools \
    gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly \
    chromium fonts-droid-fallback fonts-dejavu-core
  .venv/bin/python -m pip install -q -e ".[dev]"
else
  .venv/bin/python -m pip install -q -e .
fi
echo "gridwatch installed in .venv"
