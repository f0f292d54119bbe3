#!/usr/bin/env bash
# Installs Debian's nginx for the bench when it is missing (needs root or sudo). The bench starts
# nginx itself with its own prefix and config; the package's system service is not used.
set -euo pipefail
if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1; then
  SUDO="sudo"
else
  echo "nginx is missing and this user cannot install it: run 'apt-get install -y nginx' as root" >&2
  exit 1
fi
$SUDO apt-get update -qq
# RUNLEVEL=1 asks the package scripts not to start the service.
DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 $SUDO apt-get install -y -qq nginx >/dev/null
# The package may have started its service on port 80; the bench does not need it.
if [ -f /run/nginx.pid ]; then $SUDO nginx -s quit 2>/dev/null || true; fi
/usr/sbin/nginx -v
