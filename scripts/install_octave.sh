#!/usr/bin/env bash
# Install GNU Octave (Debian/Ubuntu) for tests/test_matlab_compat.py, which is skipped
# without it.  About 80 MB of packages, about a minute with apt's lists refreshed.
# Does nothing when octave is already on PATH; needs root (or sudo) and apt-get.
set -euo pipefail
if command -v octave-cli >/dev/null 2>&1 || command -v octave >/dev/null 2>&1; then
  echo "octave is installed: $(command -v octave-cli || command -v octave)"
  exit 0
fi
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends octave
octave-cli --version | head -1
