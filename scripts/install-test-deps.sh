#!/usr/bin/env bash
# Installs the Debian packages the tests run against (real peers, not mocks): Postfix and
# swaks as SMTP clients/servers, PostgreSQL's server binaries. Only what is missing is
# installed; Postfix is preseeded to "No configuration" so nothing starts a system MTA.
set -euo pipefail

need=()
command -v swaks >/dev/null 2>&1 || need+=(swaks)
[ -x /usr/sbin/postfix ] || need+=(postfix)
[ -x /usr/sbin/smtp-source ] || need+=(postfix)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
command -v openssl >/dev/null 2>&1 || need+=(openssl)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "missing Debian packages: ${need[*]} — run as root or: sudo apt-get install ${need[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
apt-get update -q
apt-get install -y -q --no-install-recommends "${need[@]}"
