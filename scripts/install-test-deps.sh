#!/usr/bin/env bash
# Installs every Debian package the test suite runs against (real peers, not mocks), then checks
# that each one can do what the tests ask of it: a command can exist without the capability
# (swaks without Net::SSLeay has no STARTTLS, and `--no-install-recommends` drops it).
#
# One list, one place: a later issue that needs a new peer (chromium, unbound, haproxy ...) adds
# its package to PACKAGES and its check to check_capabilities below. Only what is missing is
# installed; Postfix is preseeded to "No configuration", so no system MTA is started.
set -euo pipefail

# package: why the suite needs it
PACKAGES=(
  postfix              # smtp-source/smtp-sink load tools, postfix as a real peer (relay, delivery)
  swaks                # a second real SMTP client in the integration tests
  libnet-ssleay-perl   # swaks' STARTTLS (a recommends of swaks, dropped without recommends)
  libio-socket-ssl-perl  # swaks' TLS socket layer
  postgresql           # the server binaries (initdb, postgres) for the PostgreSQL tests
  openssl              # certificate inspection in tests and benches
  ca-certificates      # a trust store for TLS clients
  procps               # ps/pkill used when tests stop servers
  dovecot-imapd        # a real IMAP server for the mailbox-source (Email-to-Case agent) tests
)

installed() {
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]
}

missing=()
for pkg in "${PACKAGES[@]}"; do
  installed "$pkg" || missing+=("$pkg")
done

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages: ${missing[*]}; run as root, or: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Capabilities, not commands: each check is what a test needs from the package.
failed=()
check() {  # check DESCRIPTION COMMAND...
  local what=$1; shift
  if ! "$@" >/dev/null 2>&1; then failed+=("$what"); fi
}
check_capabilities() {
  check "swaks speaks STARTTLS (libnet-ssleay-perl)" \
    bash -c 'swaks --support 2>&1 | grep -q "=== TLS supported"'
  check "Postfix's smtp-source and smtp-sink" test -x /usr/sbin/smtp-source -a -x /usr/sbin/smtp-sink
  check "Postfix's postfix, postconf, postqueue, postsuper" \
    test -x /usr/sbin/postfix -a -x /usr/sbin/postconf -a -x /usr/sbin/postqueue -a -x /usr/sbin/postsuper
  check "a PostgreSQL server (initdb, postgres)" \
    bash -c 'ls /usr/lib/postgresql/*/bin/initdb && /usr/lib/postgresql/*/bin/postgres --version'
  check "openssl" openssl version
  check "Dovecot's IMAP server (dovecot, imap)" \
    test -x /usr/sbin/dovecot -a -x /usr/lib/dovecot/imap
}
check_capabilities

if [ ${#failed[@]} -gt 0 ]; then
  echo "the test suite's Debian peers cannot do what the tests need:" >&2
  printf '  - %s\n' "${failed[@]}" >&2
  echo "reinstall them as root: apt-get install --reinstall ${PACKAGES[*]}" >&2
  exit 1
fi
