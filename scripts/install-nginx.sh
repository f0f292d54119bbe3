#!/usr/bin/env bash
# Installs Debian's nginx for the bench when it is missing. The bench starts nginx itself with its
# own prefix and config; the package's system service is not used.
set -euo pipefail
if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then
  exit 0
fi
"$(dirname "$0")/apt-install.sh" nginx
# The package may have started its service on port 80 all the same; the bench does not need it.
if [ -f /run/nginx.pid ]; then /usr/sbin/nginx -s quit 2>/dev/null || sudo /usr/sbin/nginx -s quit 2>/dev/null || true; fi
/usr/sbin/nginx -v
