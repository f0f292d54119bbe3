#!/usr/bin/env bash
# Installs Debian's Public Suffix List, which response_cookie_domains and check-origin read when it is
# there (tests/test_attack_cookie_domain_suffix.py checks a suffix the built-in table does not hold).
set -euo pipefail
[ -r /usr/share/publicsuffix/public_suffix_list.dat ] && exit 0
"$(dirname "$0")/apt-install.sh" publicsuffix
