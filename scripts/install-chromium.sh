#!/usr/bin/env bash
# Installs Debian's chromium for the browser tests when it is missing.
set -euo pipefail
command -v chromium >/dev/null 2>&1 && exit 0
"$(dirname "$0")/apt-install.sh" chromium
chromium --version
