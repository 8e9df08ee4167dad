"""Debian's Dovecot as a real IMAP peer, started by a test on loopback in a temp dir.

Its own configuration (never the system's /etc/dovecot), a passwd-file for both passdb and
userdb, maildirs under the temp dir, a certificate from the test CA (trustme). Dovecot runs
as root (as CI does); mailboxes belong to `nobody`. Its files live in a directory of their own
under the system temp dir, not pytest's (private to root, so Dovecot's unprivileged processes
could not reach them).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import trustme

from tests.support.platform import free_port, wait_port

__all__ = ["DOVECOT", "Dovecot", "dovecot_unavailable", "run_dovecot"]

DOVECOT = "/usr/sbin/dovecot"


def dovecot_unavailable() -> str | None:
    """Why Dovecot cannot run here, or None."""
    if not (os.access(DOVECOT, os.X_OK) and os.access("/usr/lib/dovecot/imap", os.X_OK)):
        return "Debian's dovecot-imapd is not installed"
    if os.geteuid() != 0:
        return "Dovecot is started as root by the tests (as CI runs)"
    return None


@dataclass
class Dovecot:
    root: Path
    imap_port: int  # plaintext port (STARTTLS offered)
    imaps_port: int  # implicit TLS
    ca: trustme.CA
    users: dict[str, str]
    hostname: str = "localhost"

    @property
    def ca_file(self) -> Path:
        return self.root / "ca.pem"

    def maildir(self, user: str) -> Path:
        return self.root / "mail" / user


def _oauth2(root: Path, introspection_url: str | None) -> str:
    """An OAuth2 passdb (XOAUTH2) asking `introspection_url` about each token (RFC 7662)."""
    if introspection_url is None:
        return ""
    (root / "oauth2.conf.ext").write_text(
        f"introspection_url = {introspection_url}\nintrospection_mode = post\n"
        "username_attribute = username\nactive_attribute = active\nactive_value = true\n"
    )
    return f"""
auth_mechanisms = plain login xoauth2 oauthbearer
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {root}/oauth2.conf.ext
}}
"""


def _config(root: Path, imap: int, imaps: int, oauth2: str = "") -> str:
    return f"""
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <{root}/cert.pem
ssl_key = <{root}/key.pem
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 0
mail_location = maildir:{root}/mail/%u
default_internal_user = dovecot
default_login_user = dovenull
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {root}/passwd
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps}
    ssl = yes
  }}
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0666
  }}
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
protocol imap {{
  mail_max_userip_connections = 50
}}
""" + oauth2


@contextlib.contextmanager
def run_dovecot(users: dict[str, str], ca: trustme.CA | None = None,
                hostname: str = "localhost",
                introspection_url: str | None = None) -> Iterator[Dovecot]:
    """Dovecot on two free loopback ports (STARTTLS and implicit TLS), stopped on leaving."""
    ca = ca or trustme.CA()
    root = Path(tempfile.mkdtemp(prefix="mailcase-dovecot-"))
    os.chmod(root, 0o755)
    cert = ca.issue_cert(hostname)  # not 127.0.0.1: a source naming the IP must be refused
    cert.private_key_pem.write_to_path(str(root / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(root / "cert.pem"))
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    nobody = pwd.getpwnam("nobody")
    uid, gid = nobody.pw_uid, nobody.pw_gid
    (root / "mail").mkdir(exist_ok=True)
    os.chown(root / "mail", uid, gid)
    lines = []
    for user, password in users.items():
        home = root / "mail" / user
        home.mkdir(exist_ok=True)
        os.chown(home, uid, gid)
        lines.append(f"{user}:{{PLAIN}}{password}:{uid}:{gid}::{home}::")
    (root / "passwd").write_text("\n".join(lines) + "\n")
    imap, imaps = free_port(), free_port()
    conf = root / "dovecot.conf"
    conf.write_text(_config(root, imap, imaps, _oauth2(root, introspection_url)))
    proc = subprocess.Popen([DOVECOT, "-F", "-c", str(conf)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        try:
            wait_port("127.0.0.1", imap, timeout=20)
            wait_port("127.0.0.1", imaps, timeout=20)
        except (TimeoutError, RuntimeError) as e:
            log = (root / "dovecot.log").read_text() if (root / "dovecot.log").exists() else ""
            out = proc.stdout.read().decode() if proc.poll() is not None and proc.stdout else ""
            raise RuntimeError(f"dovecot did not start: {e}\n{out}\n{log}") from e
        yield Dovecot(root, imap, imaps, ca, dict(users), hostname)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout:
            proc.stdout.close()
        shutil.rmtree(root, ignore_errors=True)
