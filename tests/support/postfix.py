"""A private, throw-away Postfix instance for tests and benchmarks (Debian's postfix package).

Why like this: tests and the benchmark need a real Postfix as a peer (a relay that delivers
into mailcase over SMTP/STARTTLS and logs the TLS facts of that hop) and as a yardstick (an
MTA that accepts, fsyncs and discards). The machine's own instance (/etc/postfix,
/var/spool/postfix) is never touched: every instance has its own config_directory, queue_directory
and data_directory inside one directory, listens on 127.0.0.1 only, on a port of its own, and
logs to a file there through postlogd (``maillog_file``), which tests read.

How the commands find the configuration: ``postfix -c DIR`` exports ``MAIL_CONFIG=DIR`` to
everything it runs. Postfix only insists that a non-default DIR be listed in the default
main.cf's ``alternate_config_directories`` (or ``multi_instance_directories``) for commands run
by a non-root user; as root (the only user that can start a master) it reads DIR directly. So
no line is added to /etc/postfix/main.cf, and that file may be missing altogether (Debian's
"No configuration" install): postfix-script then only skips the multi-instance check. We also
export MAIL_CONFIG ourselves, so postconf/postqueue/postsuper address this instance.

Postfix daemons run as ``mail_owner`` (postfix) and must reach the data directory by its path
(tlsmgr's PRNG file, the master lock): a directory under a root-only parent such as pytest's
/tmp/pytest-of-root (mode 0700) is unusable. When the directory we are given is not reachable
by that user, the instance lives in a fresh directory under the system temp dir instead (and
``root`` says where); close() (the end of the ``with``) removes it, after copying the log to
``<tmpdir>/postfix-<port>.maillog``, unless ``keep=True``.

Start takes about 0.4 s (``postfix start`` runs postfix-script's checks, then ``master -w``
waits for the daemons; we then wait for smtpd's 220). stop() keeps the directory, so a second
start() resumes with the same queue.

Usage::

    with PostfixInstance(tmp_path, smtpd_port=free_port()) as pf:        # discard mode
        res = pf.send("a@sender.test", ["bench@example.test"], b"Subject: x\\r\\n\\r\\nhi\\r\\n")
        d = pf.wait_delivery(res.queue_id)
        assert d.status == "sent" and d.service == "discard"

    with PostfixInstance(tmp_path, relay_port=sink_port, smtp_tls_security_level="encrypt") as pf:
        ...                                                              # relay mode
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import ipaddress
import os
import pwd
import re
import shutil
import signal
import smtplib
import socket
import ssl
import stat
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

__all__ = [
    "LOAD_TEST_SETTINGS",
    "POSTFIX",
    "Delivery",
    "PostfixInstance",
    "PostfixUnavailable",
    "SendResult",
    "free_port",
    "generate_p256_certificate",
    "postfix_available",
]

POSTFIX = Path("/usr/sbin/postfix")
POSTCONF = Path("/usr/sbin/postconf")
POSTQUEUE = Path("/usr/sbin/postqueue")
_MAIL_OWNER = "postfix"
_TIMEOUT = 60.0  # seconds for any one Postfix command

# Limits raised for a load test (the defaults are meant to protect a public MX from one client;
# here one loopback client opens many sessions at a high rate). Postfix's own cost per message
# (smtpd, cleanup's fsynced queue file, qmgr, the transport) is left as it is.
LOAD_TEST_SETTINGS: dict[str, str] = {
    "default_process_limit": "100",
    "smtpd_client_connection_count_limit": "0",
    "smtpd_client_connection_rate_limit": "0",
    "smtpd_client_message_rate_limit": "0",
    "smtpd_client_recipient_rate_limit": "0",
    "smtpd_client_new_tls_session_rate_limit": "0",
    "smtpd_client_auth_rate_limit": "0",
    # (smtpd_client_event_limit_exceptions keeps its default, $mynetworks: loopback clients
    # skip anvil entirely, as on a real relay for its own network.)
    "anvil_rate_time_unit": "60s",
    "anvil_status_update_time": "3600s",
    "in_flow_delay": "0",
    "smtpd_error_sleep_time": "0",
    "smtpd_soft_error_limit": "1000",
    "smtpd_hard_error_limit": "1000",
    "smtpd_junk_command_limit": "100000",
    # No reverse DNS of 127.0.0.1 per connection (mailcase does none either).
    "smtpd_peername_lookup": "no",
}

# The usual Debian master.cf services, all unchained ("n" in the chroot column). The smtpd line
# (first) is added by _master_cf with the instance's own address.
_MASTER_SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

# "Nov 26 19:03:11 host postfix/smtp[6483]: 4ab..: to=<x@y>, relay=.., dsn=2.0.0, status=sent (..)"
_LOG_LINE = re.compile(
    r"^\S+\s+\S+\s+\S+\s+\S+\s+(?P<prog>[\w/.-]+)\[(?P<pid>\d+)\]:\s(?P<text>.*)$"
)
_DELIVERY = re.compile(
    r"^(?P<qid>[0-9A-Za-z]+): to=<(?P<rcpt>[^>]*)>,(?:.*?) relay=(?P<relay>[^,]*),"
    r".*? dsn=(?P<dsn>[\d.]+), status=(?P<status>\w+) \((?P<detail>.*)\)$"
)
_QUEUED_AS = re.compile(r"queued as ([0-9A-Za-z]+)")


class PostfixUnavailable(RuntimeError):  # noqa: N818 - a reason to skip, not a fault
    """Postfix is not installed, we are not root, or the instance did not start."""


def postfix_available() -> str | None:
    """None if an instance can be started here, else the reason why not (for pytest.skip)."""
    if not POSTFIX.exists():
        return f"{POSTFIX} is not installed (Debian package postfix; make test installs it)"
    if os.geteuid() != 0:
        return "starting a Postfix master needs root (postfix start refuses other users)"
    try:
        pwd.getpwnam(_MAIL_OWNER)
    except KeyError:
        return f"the {_MAIL_OWNER} system user is missing (broken postfix install)"
    return None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def generate_p256_certificate(cert_path: Path, key_path: Path, hostname: str) -> None:
    """A self-signed ECDSA P-256 certificate for `hostname` and 127.0.0.1 (PEM files).

    P-256 rather than RSA: the handshake costs the server about half the CPU (DESIGN.md), and
    it is what mailcase generates by default, so a TLS benchmark compares like with like.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = _dt.datetime.now(_dt.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5))
        .not_valid_after(now + _dt.timedelta(days=7))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(hostname), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)


@dataclass(frozen=True)
class SendResult:
    """The server's final reply to DATA, and the queue id parsed from it."""

    code: int
    reply: str
    queue_id: str | None


@dataclass(frozen=True)
class Delivery:
    """One delivery attempt as logged: ``<qid>: to=<rcpt>, relay=..., dsn=..., status=...``."""

    queue_id: str
    recipient: str
    status: str  # sent | deferred | bounced | expired
    relay: str
    dsn: str
    detail: str  # the text in parentheses, e.g. "250 2.0.0 Ok: queued as X" or "example.test"
    service: str  # the program that logged it: "discard", "smtp", ...
    pid: int
    line: str


def _traversable_by(path: Path, uid: int, gids: set[int]) -> bool:
    """Whether `uid` can search every directory from / down to `path` (path must exist)."""
    for p in [path, *path.parents]:
        st = p.stat()
        if st.st_uid == uid:
            ok = bool(st.st_mode & stat.S_IXUSR)
        elif st.st_gid in gids:
            ok = bool(st.st_mode & stat.S_IXGRP)
        else:
            ok = bool(st.st_mode & stat.S_IXOTH)
        if not ok:
            return False
    return True


class PostfixInstance:
    """A complete Postfix instance in one directory; a context manager (start on enter).

    Modes: *discard* (default; every accepted message goes to the ``discard`` transport, so the
    cost measured is smtpd + the fsynced queue file + qmgr) and *relay* (``relay_port`` given:
    ``relayhost = [relay_host]:relay_port``, everything received is delivered there by Postfix's
    smtp client with ``smtp_tls_security_level`` and ``smtp_tls_loglevel = 1``).

    Arguments:
      tmpdir          directory to create the instance in (``<tmpdir>/postfix-<port>``)
      smtpd_port      loopback port of its smtpd (default: a free one)
      relay_port      relay mode: deliver everything to ``[relay_host]:relay_port``
      relay_host      default 127.0.0.1
      smtp_tls_security_level  outbound TLS level in relay mode ("none", "may", "encrypt", ...)
      smtp_tls_CAfile          outbound CA file (PEM) in relay mode, for "verify"/"secure"
      smtpd_tls       offer STARTTLS on smtpd with a generated P-256 certificate (or the
                      ``smtpd_tls_cert_file``/``smtpd_tls_key_file`` given);
                      ``cert_path`` is then the PEM file a client can trust
      load_test       raise the connection/rate/error limits (LOAD_TEST_SETTINGS)
      myhostname      its name in the banner/EHLO and in the log lines' host column
      settings        further main.cf parameters, applied last (override anything above)
      keep            leave a fallback directory in place after close() (post-mortems)
    """

    def __init__(
        self,
        tmpdir: Path | str,
        *,
        smtpd_port: int | None = None,
        relay_port: int | None = None,
        relay_host: str = "127.0.0.1",
        smtp_tls_security_level: str = "may",
        smtp_tls_CAfile: Path | str | None = None,  # Postfix's spelling
        smtpd_tls: bool = False,
        smtpd_tls_cert_file: Path | str | None = None,
        smtpd_tls_key_file: Path | str | None = None,
        load_test: bool = False,
        myhostname: str = "postfix.test",
        settings: Mapping[str, str] | None = None,
        keep: bool = False,
        start_timeout: float = 30.0,
    ) -> None:
        self.smtpd_port = smtpd_port if smtpd_port is not None else free_port()
        self.relay_port = relay_port
        self.relay_host = relay_host
        self.smtp_tls_security_level = smtp_tls_security_level
        self.smtp_tls_CAfile = Path(smtp_tls_CAfile) if smtp_tls_CAfile else None
        self.smtpd_tls = smtpd_tls or smtpd_tls_cert_file is not None
        self._given_cert = Path(smtpd_tls_cert_file) if smtpd_tls_cert_file else None
        self._given_key = Path(smtpd_tls_key_file) if smtpd_tls_key_file else None
        if (self._given_cert is None) != (self._given_key is None):
            raise ValueError("smtpd_tls_cert_file and smtpd_tls_key_file go together")
        self.load_test = load_test
        self.myhostname = myhostname
        self.settings = dict(settings or {})
        self.keep = keep
        self.start_timeout = start_timeout
        self.tmpdir = Path(tmpdir)
        self.root: Path = self.tmpdir / f"postfix-{self.smtpd_port}"
        self._own_root = False  # True when root is a fallback dir we made under the temp dir
        self._root_removed = False
        self._prepared = False
        self.master_pid: int | None = None
        self.started_in: float | None = None  # seconds from `postfix start` to smtpd answering
        self._running = False

    # ----------------------------------------------------------------- paths and config

    @property
    def mode(self) -> str:
        return "discard" if self.relay_port is None else "relay"

    @property
    def config_directory(self) -> Path:
        return self.root / "etc"

    @property
    def queue_directory(self) -> Path:
        return self.root / "spool"

    @property
    def data_directory(self) -> Path:
        return self.root / "data"

    @property
    def maillog_path(self) -> Path:
        """The log; after stop() of an instance that lived outside `tmpdir`, the copy there."""
        if self._root_removed:
            return self._saved_maillog
        return self.root / "maillog"

    @property
    def _saved_maillog(self) -> Path:
        return self.tmpdir / f"postfix-{self.smtpd_port}.maillog"

    @property
    def cert_path(self) -> Path | None:
        """The smtpd certificate (PEM, self-signed: also the CA file a client can trust)."""
        if not self.smtpd_tls:
            return None
        return self._given_cert or self.config_directory / "smtpd-cert.pem"

    @property
    def key_path(self) -> Path | None:
        if not self.smtpd_tls:
            return None
        return self._given_key or self.config_directory / "smtpd-key.pem"

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.smtpd_port)

    def main_cf(self) -> dict[str, str]:
        """The main.cf parameters of this instance, in the order they are written."""
        cf: dict[str, str] = {
            "compatibility_level": "3.6",
            "config_directory": str(self.config_directory),
            "queue_directory": str(self.queue_directory),
            "data_directory": str(self.data_directory),
            "maillog_file": str(self.maillog_path),
            "maillog_file_prefixes": str(self.root),
            "myhostname": self.myhostname,
            "myorigin": "$myhostname",
            "mydestination": "",
            "mynetworks": "127.0.0.0/8",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "smtp_bind_address": "127.0.0.1",
            # Nothing here may reach the outside world or the machine's users.
            "relay_domains": "",
            "local_recipient_maps": "",
            "alias_maps": "",
            "alias_database": "",
            "biff": "no",
            "append_dot_mydomain": "no",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            "enable_long_queue_ids": "yes",
            "smtp_tls_loglevel": "1",
            "smtpd_tls_loglevel": "0",
            # Mail that cannot be delivered must not sit in the queue for days in a test.
            "bounce_queue_lifetime": "1h",
            "maximal_queue_lifetime": "1h",
        }
        if self.relay_port is None:
            # Every destination (local, relay, default, virtual) ends in the discard transport.
            for t in ("default_transport", "relay_transport", "local_transport",
                      "virtual_transport"):
                cf[t] = "discard"
        else:
            cf["relayhost"] = f"[{self.relay_host}]:{self.relay_port}"
            cf["default_transport"] = "smtp"
            cf["smtp_tls_security_level"] = self.smtp_tls_security_level
            if self.smtp_tls_CAfile is not None:
                cf["smtp_tls_CAfile"] = str(self.smtp_tls_CAfile)
            # Retry quickly when a test's receiver said 4xx.
            cf["minimal_backoff_time"] = "2s"
            cf["maximal_backoff_time"] = "10s"
            cf["queue_run_delay"] = "2s"
        if self.smtpd_tls:
            assert self.cert_path is not None and self.key_path is not None
            cf["smtpd_tls_cert_file"] = str(self.cert_path)
            cf["smtpd_tls_key_file"] = str(self.key_path)
            cf["smtpd_tls_security_level"] = "may"
        else:
            cf["smtpd_tls_security_level"] = "none"
        if self.load_test:
            cf.update(LOAD_TEST_SETTINGS)
        cf.update(self.settings)
        return cf

    def _master_cf(self) -> str:
        smtpd = f"127.0.0.1:{self.smtpd_port} inet n       -       n       -       -       smtpd\n"
        return smtpd + _MASTER_SERVICES

    # ----------------------------------------------------------------- lifecycle

    def __enter__(self) -> PostfixInstance:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAIL_")}
        env["MAIL_CONFIG"] = str(self.config_directory)
        env.setdefault("LANG", "C")
        return env

    def _run(self, *args: str | os.PathLike[str], check: bool = True,
             timeout: float = _TIMEOUT) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            [os.fspath(a) for a in args], env=self._env(), capture_output=True, text=True,
            timeout=timeout, stdin=subprocess.DEVNULL,
        )
        if check and res.returncode != 0:
            raise PostfixUnavailable(
                f"{' '.join(map(str, args))} failed ({res.returncode}): "
                f"{res.stdout.strip()} {res.stderr.strip()}\n--- maillog tail ---\n"
                f"{self._maillog_tail()}"
            )
        return res

    def _prepare(self) -> None:
        if self._prepared and self.root.is_dir():
            self._write_config()  # a restart: keep the queue, apply changed settings
            return
        owner = pwd.getpwnam(_MAIL_OWNER)
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        gids = {owner.pw_gid} | set(os.getgrouplist(_MAIL_OWNER, owner.pw_gid))
        if not _traversable_by(self.tmpdir, owner.pw_uid, gids):
            self.root = Path(tempfile.mkdtemp(prefix=f"mailcase-postfix-{self.smtpd_port}-"))
            self._own_root = True
        elif self.root.exists():
            raise PostfixUnavailable(f"{self.root} exists already (another instance?)")
        else:
            self.root.mkdir()
        self.root.chmod(0o755)
        self.config_directory.mkdir(mode=0o755)
        # post-install (run by `postfix start`) creates the queue subdirectories with the right
        # owners; the queue and data directories themselves we create with their final owners.
        self.queue_directory.mkdir(mode=0o755)
        self.data_directory.mkdir(mode=0o700)
        os.chown(self.data_directory, owner.pw_uid, owner.pw_gid)
        self.maillog_path.touch(mode=0o644)
        if self.smtpd_tls and self._given_cert is None:
            assert self.cert_path is not None and self.key_path is not None
            generate_p256_certificate(self.cert_path, self.key_path, self.myhostname)
        self._write_config()
        self._prepared = True

    def _write_config(self) -> None:
        lines = [f"{k} = {v}".rstrip() for k, v in self.main_cf().items()]
        (self.config_directory / "main.cf").write_text(
            "# Written by tests/support/postfix.py: a private instance, removed after use.\n"
            + "\n".join(lines) + "\n"
        )
        (self.config_directory / "master.cf").write_text(self._master_cf())
        # `postfix` re-reads main.cf every 300 ms until it is older than about 2 s (a guard
        # against half-written files): a freshly written one costs 2 s per start. Backdate.
        past = time.time() - 60
        for name in ("main.cf", "master.cf"):
            os.utime(self.config_directory / name, (past, past))

    def start(self) -> None:
        """Write the configuration, ``postfix -c <confdir> start``, wait until smtpd answers."""
        reason = postfix_available()
        if reason is not None:
            raise PostfixUnavailable(reason)
        if self._running:
            return
        self._prepare()
        t0 = time.monotonic()
        self._running = True  # from here on, stop() must clean up
        try:
            self._run(POSTFIX, "-c", self.config_directory, "start")
            self.master_pid = self._read_master_pid()
            self._wait_smtpd(t0 + self.start_timeout)
        except BaseException:
            self.stop()
            raise
        self.started_in = time.monotonic() - t0

    def _read_master_pid(self) -> int | None:
        try:
            return int((self.queue_directory / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _wait_smtpd(self, deadline: float) -> None:
        """Until the banner (220) arrives: the port is open before smtpd is spawned."""
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.master_pid is not None and not _alive(self.master_pid):
                raise PostfixUnavailable(f"master exited during start\n{self._maillog_tail()}")
            try:
                with socket.create_connection(self.address, timeout=2) as s:
                    s.settimeout(max(0.1, min(5.0, deadline - time.monotonic())))
                    banner = s.recv(512)
                    if banner.startswith(b"220"):
                        with contextlib.suppress(OSError):
                            s.sendall(b"QUIT\r\n")
                            s.recv(512)
                        return
                    last = RuntimeError(f"unexpected banner {banner!r}")
            except OSError as exc:
                last = exc
            time.sleep(0.05)
        raise PostfixUnavailable(
            f"smtpd on {self.address} did not answer: {last}\n{self._maillog_tail()}"
        )

    def stop(self, timeout: float = 15.0) -> None:
        """``postfix -c <confdir> stop``; make sure the master and its children are gone.
        The directory (queue, log) stays: start() again resumes with the same queue."""
        if not self._running:
            return
        self._running = False
        pid = self._read_master_pid() or self.master_pid
        if pid is not None and _alive(pid):
            with contextlib.suppress(PostfixUnavailable, subprocess.TimeoutExpired):
                self._run(POSTFIX, "-c", self.config_directory, "stop", check=False,
                          timeout=timeout)
            deadline = time.monotonic() + timeout
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(pid):
                # The master runs in its own session (setsid), with its children in its
                # process group: kill exactly that group, nothing else.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
                deadline = time.monotonic() + 5
                while _alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
        # Children that outlived the master (none expected) are in the same group.
        if pid is not None and _group_alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)

    def close(self) -> None:
        """stop(), then remove the instance's directory if it was made outside `tmpdir` (the
        log is first copied to ``<tmpdir>/postfix-<port>.maillog``), unless ``keep``."""
        try:
            self.stop()
        finally:
            if not self.keep and self._own_root and not self._root_removed:
                # Keep the log where the caller asked for the instance (tests read it after).
                with contextlib.suppress(OSError):
                    shutil.copyfile(self.root / "maillog", self._saved_maillog)
                self._root_removed = True
                self._prepared = False
                shutil.rmtree(self.root, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self._running and self.master_pid is not None and _alive(self.master_pid)

    # ----------------------------------------------------------------- commands and state

    def postconf(self, *names: str) -> dict[str, str]:
        """Effective values of main.cf parameters (``postconf -c <confdir> name ...``)."""
        out = self._run(POSTCONF, "-c", self.config_directory, *names).stdout
        vals: dict[str, str] = {}
        for line in out.splitlines():
            k, _, v = line.partition(" = ")
            vals[k.strip()] = v
        return vals

    def queue_size(self) -> int:
        """Messages in the queue (incoming, active, deferred, hold); 0 once all are done."""
        n = 0
        for q in ("maildrop", "incoming", "active", "deferred", "hold"):
            base = self.queue_directory / q
            if base.is_dir():
                n += sum(len(files) for _, _, files in os.walk(base))
        return n

    def wait_queue_empty(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while self.queue_size() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.queue_size():
            raise TimeoutError(f"{self.queue_size()} message(s) still queued after {timeout}s")

    def flush(self) -> None:
        """Retry deferred mail now (``postqueue -f``)."""
        self._run(POSTQUEUE, "-c", self.config_directory, "-f")

    # ----------------------------------------------------------------- sending

    def send(
        self,
        sender: str,
        recipients: Sequence[str],
        message: bytes | str,
        *,
        starttls: bool = False,
        helo: str = "client.test",
        timeout: float = 30.0,
    ) -> SendResult:
        """Submit one message to its smtpd with smtplib; raise on any refusal."""
        data = message.encode() if isinstance(message, str) else message
        if starttls and not self.smtpd_tls:
            raise ValueError("this instance was made without smtpd_tls")
        with smtplib.SMTP(*self.address, local_hostname=helo, timeout=timeout) as s:
            s.ehlo()
            if starttls:
                ctx = ssl.create_default_context(cafile=str(self.cert_path))
                ctx.check_hostname = False  # the certificate names myhostname, we dial an IP
                s.starttls(context=ctx)
                s.ehlo()
            code, reply = s.mail(sender)
            if code != 250:
                raise smtplib.SMTPSenderRefused(code, reply, sender)
            for r in recipients:
                code, reply = s.rcpt(r)
                if code not in (250, 251):
                    raise smtplib.SMTPRecipientsRefused({r: (code, reply)})
            code, reply = s.data(data)
            if code != 250:
                raise smtplib.SMTPDataError(code, reply)
        text = reply.decode(errors="replace")
        m = _QUEUED_AS.search(text)
        return SendResult(code, text, m.group(1) if m else None)

    # ----------------------------------------------------------------- the log

    def maillog(self) -> str:
        try:
            return self.maillog_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _maillog_tail(self, n: int = 30) -> str:
        return "\n".join(self.maillog().splitlines()[-n:])

    def log_lines(self, program: str | None = None) -> list[tuple[str, int, str]]:
        """(program, pid, text) of every log line, e.g. ("postfix/smtp", 123, "ABC: to=<..>")."""
        out: list[tuple[str, int, str]] = []
        for line in self.maillog().splitlines():
            m = _LOG_LINE.match(line)
            if m and (program is None or m["prog"].endswith("/" + program)):
                out.append((m["prog"], int(m["pid"]), m["text"]))
        return out

    def deliveries(self, queue_id: str | None = None) -> list[Delivery]:
        out: list[Delivery] = []
        for line in self.maillog().splitlines():
            lm = _LOG_LINE.match(line)
            if not lm:
                continue
            dm = _DELIVERY.match(lm["text"])
            if not dm or (queue_id is not None and dm["qid"] != queue_id):
                continue
            out.append(Delivery(
                queue_id=dm["qid"], recipient=dm["rcpt"], status=dm["status"],
                relay=dm["relay"], dsn=dm["dsn"], detail=dm["detail"],
                service=lm["prog"].rsplit("/", 1)[-1], pid=int(lm["pid"]), line=line,
            ))
        return out

    def wait_for_log(self, pattern: str | re.Pattern[str], timeout: float = 30.0) -> re.Match[str]:
        """The first match of `pattern` in the maillog (searched whole), waiting for it."""
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.maillog())
            if m:
                return m
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{rx.pattern!r} not in {self.maillog_path} after {timeout}s\n"
                    f"{self._maillog_tail()}"
                )
            time.sleep(0.05)

    def wait_delivery(
        self,
        queue_id: str,
        recipient: str | None = None,
        *,
        final: bool = True,
        timeout: float = 30.0,
    ) -> Delivery:
        """The delivery line for `queue_id` (and `recipient`): with final=True, wait past
        ``status=deferred`` for sent/bounced/expired; with final=False, return the first."""
        deadline = time.monotonic() + timeout
        while True:
            for d in self.deliveries(queue_id):
                if recipient is not None and d.recipient != recipient:
                    continue
                if not final or d.status != "deferred":
                    return d
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"no {'final ' if final else ''}delivery of {queue_id} logged after "
                    f"{timeout}s\n{self._maillog_tail()}"
                )
            time.sleep(0.05)

    def tls_line_for(self, delivery: Delivery) -> str | None:
        """The ``... TLS connection established to ...`` line of the smtp process that made
        this delivery (the last such line of that pid before the delivery line), if any."""
        found: str | None = None
        for line in self.maillog().splitlines():
            if line == delivery.line:
                return found
            lm = _LOG_LINE.match(line)
            if lm and int(lm["pid"]) == delivery.pid and "TLS connection established to" in \
                    lm["text"]:
                found = lm["text"]
        return found


def _alive(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie (the master is not our child to reap)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def _group_alive(pgid: int) -> bool:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False
