#!/usr/bin/env bash
# apt-install.sh PACKAGE...: installs Debian packages as root or through sudo, without starting
# their services (RUNLEVEL=1); fails with a clear message when this user can do neither.
set -euo pipefail
if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1; then
  SUDO="sudo"
else
  echo "cannot install $*: run 'apt-get install -y $*' as root" >&2
  exit 1
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 $SUDO apt-get install -y -qq "$@" >/dev/null
