"""Typed settings: defaults, then a TOML file, then `MAILCASE_*` environment variables.

Every option has a default, a type and a one-line description (the `description` of its
field), so that `mailcase config show` can print the effective configuration and a bad key
or value fails at start naming the key and the reason.

Environment overrides: `MAILCASE_DATA_DIR` sets the top-level `data_dir`; a section key is
written with a double underscore, e.g. `MAILCASE_INBOUND__TLS=required` or
`MAILCASE_DATABASE__URL=postgresql://…`.

The instance (its data directory) is found as Postfix finds its configuration directory, never
from the working directory: `--data-dir`, then `MAILCASE_DATA_DIR`, then `data_dir` in the
config file (`--config`, `MAILCASE_CONFIG`), else `default_data_dir()`.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mailcase.errors import ConfigError

__all__ = [
    "Settings",
    "data_dir_origin",
    "default_data_dir",
    "load_settings",
    "parse_hostport",
    "settings_as_toml",
]

ENV_PREFIX = "MAILCASE_"

def default_data_dir(environ: Mapping[str, str] | None = None, euid: int | None = None) -> Path:
    """The data directory when nothing names one: the same wherever the command is run.

    As root the system's place for state (FHS `/var/lib`); for other users the XDG base
    directory spec's data home (`$XDG_DATA_HOME`, only if absolute, else ~/.local/share)."""
    env = os.environ if environ is None else environ
    if (os.geteuid() if euid is None else euid) == 0:
        return Path("/var/lib/mailcase")
    xdg = env.get("XDG_DATA_HOME", "")
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "mailcase"
    home = env.get("HOME")
    return (Path(home) if home else Path.home()) / ".local" / "share" / "mailcase"


def data_dir_origin(
    config_file: Path | None,
    data_dir_option: Path | None,
    environ: Mapping[str, str] | None = None,
) -> str:
    """Which rule of the resolution order (module docstring) chose the data directory."""
    env = os.environ if environ is None else environ
    if data_dir_option is not None:
        return "from --data-dir"
    if env.get("MAILCASE_DATA_DIR"):
        return "from MAILCASE_DATA_DIR"
    path = config_file or (Path(env["MAILCASE_CONFIG"]) if env.get("MAILCASE_CONFIG") else None)
    if path is not None:
        try:
            with open(path, "rb") as f:
                if "data_dir" in tomllib.load(f):
                    return f"from data_dir in {path}"
        except (OSError, tomllib.TOMLDecodeError):
            pass  # load_settings reports it
    return "the default for this user"


def parse_hostport(value: str, *, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """Split `HOST:PORT` (IPv6 as `[::1]:25`); raises ValueError with what was wrong."""
    value = value.strip()
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"{value!r} is not [IPv6]:PORT")
        port_s = rest[1:]
    else:
        host, sep, port_s = value.rpartition(":")
        if not sep:
            host, port_s = default_host, value
    if not port_s.isdigit() or not 0 <= int(port_s) <= 65535:
        raise ValueError(f"{value!r}: port must be a number from 0 to 65535")
    return host or default_host, int(port_s)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    @model_validator(mode="before")
    @classmethod
    def _empty_means_unset(cls, data: Any) -> Any:
        """`key = ""` for an option whose default is None means "not set" (as `config show`
        prints it), never an empty path or name."""
        if isinstance(data, dict):
            for key, value in list(data.items()):
                field = cls.model_fields.get(key)
                if value == "" and field is not None and field.default is None:
                    data[key] = None
        return data

    @field_validator("listen", mode="after", check_fields=False)
    @classmethod
    def _listen_ok(cls, v: str) -> str:
        parse_hostport(v)
        return v


class ServerSettings(_Section):
    hostname: str = Field("mailcase.localhost", description="Name used in the SMTP greeting, Received headers and the generated certificate.")
    event_loop: Literal["uvloop", "asyncio"] = Field("uvloop", description="Event loop of the server processes: 'uvloop' (libuv, less CPU per message) or Python's standard 'asyncio' loop.")
    secret_file: Path | None = Field(None, description="File with the server secret that signs thread tokens (32 random bytes); empty: data_dir/secret.key, created on first use (mode 0600). Nodes sharing a database must share it.")
    roles: list[Literal["smtp", "pipeline", "delivery", "web", "fetch"]] = Field(["smtp", "pipeline", "delivery", "web", "fetch"], min_length=1, description="What `mailcase serve` runs in this process (--roles smtp,pipeline,delivery,web,fetch; fetch: the IMAP mailbox sources); on PostgreSQL, nodes sharing one database can split them.")

    @field_validator("roles", mode="before")
    @classmethod
    def _roles_list(cls, v: object) -> object:
        if isinstance(v, str):  # MAILCASE_SERVER__ROLES=smtp,web
            return [r.strip().lower() for r in v.split(",") if r.strip()]
        return v

    @field_validator("secret_file", mode="before")
    @classmethod
    def _empty_secret_is_none(cls, v: object) -> object:
        return None if v == "" else v


class InboundSettings(_Section):
    listen: str = Field("127.0.0.1:2525", description="HOST:PORT the SMTP server listens on.")
    tls: Literal["optional", "required"] = Field("optional", description="'required' refuses MAIL from senders that did not issue STARTTLS (530 5.7.0).")
    max_message_size: int = Field(35 * 1024 * 1024, ge=1024, description="Largest message accepted, in octets (advertised with SIZE; bigger gets 552 5.3.4).")
    max_recipients: int = Field(100, ge=1, description="Recipients accepted per message (RFC 5321 §4.5.3.1.8 asks for at least 100).")
    max_command_line: int = Field(512, ge=512, description="Longest command line in octets, CRLF included (RFC 5321 §4.5.3.1.4).")
    max_text_line: int = Field(0, ge=0, description="Longest message line accepted in octets, CRLF included; longer gets 500 5.5.2. 0: any length within max_message_size, stored as received (like Postfix; broken web forms and old clients send such mail). 1000 is RFC 5321 §4.5.3.1.6's strict limit.")

    @field_validator("max_text_line")
    @classmethod
    def _text_line_limit(cls, v: int) -> int:
        if 0 < v < 1000:
            raise ValueError("must be 0 (no limit) or at least 1000 (RFC 5321 §4.5.3.1.6)")
        return v
    max_errors: int = Field(10, ge=1, description="Protocol errors (unknown commands, bad syntax) per session before 421 4.7.0 and disconnect.")
    soft_error_limit: int = Field(10, ge=1, description="Errors per session (protocol errors and permanently refused recipients) after which each further error reply waits error_sleep_time (Postfix smtpd_soft_error_limit).")
    hard_error_limit: int = Field(20, ge=1, description="Errors per session (protocol errors and permanently refused recipients) at which the session ends with 421 4.7.0; stops address probing (Postfix smtpd_hard_error_limit).")
    junk_command_limit: int = Field(100, ge=1, description="NOOP, RSET, VRFY, EXPN and HELP commands a session may send after its last accepted message before each further one counts as an error (Postfix smtpd_junk_command_limit): a client cannot keep a connection open for ever with NOOPs.")
    error_sleep_time: float = Field(1.0, ge=0, le=60, description="Seconds each error reply past soft_error_limit is held back; only that session waits (Postfix smtpd_error_sleep_time).")
    rejection_log_limit: int = Field(10, ge=0, description="Rejections of one session written to the email log one by one; the rest are counted and written as one summary entry per stage and reason when the session ends.")
    bare_newline: Literal["reject", "normalize"] = Field("reject", description="Bare CR or LF in DATA: refuse the message (SMTP smuggling protection) or rewrite it to CRLF.")
    command_timeout: float = Field(300.0, gt=0, description="Seconds a whole command line may take, counted from its first octet, and the longest wait for the next command (RFC 5321 §4.5.3.2: 5 minutes).")
    data_timeout: float = Field(180.0, gt=0, description="Seconds to wait for the next chunk of message content in DATA or BDAT (RFC 5321 §4.5.3.2.6: 3 minutes).")
    min_data_rate: int = Field(500, ge=0, description="Minimum message content rate in octets per second (Postfix smtpd_min_data_rate): each read earns octets/rate seconds on top of a data_timeout allowance, so a slower DATA or BDAT transfer is cut off with 421 4.4.2; 0 disables.")
    tls_handshake_timeout: float = Field(30.0, gt=0, description="Seconds allowed for a STARTTLS handshake.")
    max_connections: int = Field(1000, ge=1, description="Concurrent SMTP connections per process; more get 421 4.7.0.")
    max_connections_per_ip: int = Field(50, ge=1, description="Concurrent SMTP connections per client IP (Postfix default 50); more get 421 4.7.0.")
    processes: int = Field(0, ge=0, le=64, description="SMTP acceptor processes sharing one listening socket; 0 = one per CPU core. With several, the pipeline and HTTP API run in a parent process of their own.")
    greeting_delay: float = Field(0.0, ge=0, description="Seconds to wait before the greeting; a client that talks first is refused (554 5.5.0).")
    smtputf8: bool = Field(True, description="Advertise SMTPUTF8 (RFC 6531).")


class TLSSettings(_Section):
    @field_validator("cert_file", "key_file", mode="before")
    @classmethod
    def _empty_is_none(cls, v: object) -> object:
        return None if v == "" else v

    cert_file: Path | None = Field(None, description="PEM certificate chain; empty: a self-signed P-256 certificate is generated under data_dir/tls.")
    key_file: Path | None = Field(None, description="PEM private key for cert_file.")
    min_version: Literal["TLSv1.2", "TLSv1.3"] = Field("TLSv1.2", description="Oldest TLS version accepted (Salesforce too accepts only 1.2+).")


class DatabaseSettings(_Section):
    url: str = Field("", description="SQLAlchemy URL; empty: sqlite under data_dir/mailcase.db. PostgreSQL: postgresql://user:pass@host/db")

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, v: str) -> str:
        if v and not v.startswith(("sqlite://", "postgresql://", "postgresql+psycopg://")):
            raise ValueError("must start with sqlite:// or postgresql://")
        return v


class HTTPSettings(_Section):
    listen: str = Field("127.0.0.1:8025", description="HOST:PORT of the HTTP API, /docs, /healthz and /metrics.")


class PipelineSettings(_Section):
    poll_interval: float = Field(0.5, gt=0, description="Seconds between looks for newly accepted messages when idle.")
    batch_size: int = Field(0, ge=0, description="Messages processed per transaction; 0 = automatic: 50 when this process also accepts SMTP on SQLite (its commits wait while a batch runs), else 500.")
    nice: int = Field(19, ge=0, le=19, description="With SMTP acceptors in processes of their own: how many steps below normal CPU priority processing runs (Linux nice), so that under load accepting goes first and processing catches up after; 0 = same priority.")
    catch_up_after: float = Field(10.0, gt=0, description="Seconds processing may stay behind (full batches only) at its lower priority; then it runs at normal priority until it has caught up, so that a flood does not pile up unprocessed.")
    batch_bytes: int = Field(16 * 1024 * 1024, ge=0, description="Most message bytes in one processing batch (always at least one message): the memory processing takes grows with this, not with batch_size x message size; 0 = no limit.")
    parse_time_limit: float = Field(10.0, gt=0, description="Seconds parsing one message (MIME, HTML sanitising) may take; past it the message takes the safe path (text only, its HTML kept as the attachment body.html) so that it cannot hold up the others.")
    html_max_chars: int = Field(524_288, ge=0, description="Characters of a message's HTML read before sanitising; the rest is cut (html_truncated). The sanitiser's cost grows with size x nesting.")
    html_max_depth: int = Field(256, ge=1, description="HTML start tags nested deeper than this are dropped before sanitising (their text stays), so deep nesting cannot make sanitising slow.")


class DNSSettings(_Section):
    nameservers: list[str] = Field(default_factory=list, description="DNS servers mailcase's resolver asks, as HOST:PORT (empty: those of /etc/resolv.conf). Used for SPF/DKIM/DMARC, MX, TLSA and MTA-STS.")
    timeout: float = Field(5.0, gt=0, description="Seconds a DNS query may take in all before it counts as a temporary failure.")

    @field_validator("nameservers")
    @classmethod
    def _hostports(cls, v: list[str]) -> list[str]:
        for item in v:
            if ":" in item:  # HOST:PORT or [IPv6]:PORT; a bare host means port 53
                parse_hostport(item, default_host="")
        return v


class CasesSettings(_Section):
    """Email-to-Case settings: threading policies, sender authentication, internal users."""

    sender_not_on_thread: Literal["attach", "attach_flagged", "new_case"] = Field("attach_flagged", description="A reply whose sender is neither the contact, on the thread nor internal: attach, attach flagged 'sender not on thread', or open a new case.")
    closed_case_reply: Literal["attach", "reopen", "new_linked_case"] = Field("reopen", description="A reply to a closed case: attach it, reopen the case (status Working), or open a new case linked to it.")
    internal_domains: list[str] = Field(default_factory=list, description="Sender domains of internal users (always on the thread).")
    authenticate: bool = Field(True, description="Check SPF/DKIM/DMARC of mail to routing addresses and store the verdicts (Authentication-Results); needed by require_authenticated_sender.")
    message_id_domain: str = Field("", description="Domain of the Message-IDs of case replies; empty: server.hostname.")


class AutomationSettings(_Section):
    """Auto-responses, loop protection and limits of Email-to-Case (RFC 3834 rules built in)."""

    loop_threshold: int = Field(15, ge=1, description="More than this many messages with the same sender, subject and body to one routing address within loop_window stop case creation for the window.")
    loop_window: float = Field(60.0, gt=0, description="Seconds of the loop-detection window.")
    auto_response_limit: int = Field(10, ge=0, description="Most auto-responses (and non-delivery notices) one sender gets within auto_response_period; 0: none at all.")
    auto_response_period: float = Field(10800.0, gt=0, description="Seconds over which auto_response_limit counts (10800 = 3 hours).")
    daily_case_limit: int = Field(0, ge=0, description="Most cases created from email per UTC day on this instance; 0: no limit.")
    over_limit_action: Literal["bounce", "discard", "requeue"] = Field("requeue", description="What happens to email over the daily case limit: bounce (non-delivery notice), discard (log and drop, raw message kept) or requeue (processed again later).")
    unauthorized_action: Literal["bounce", "discard", "requeue"] = Field("bounce", description="What happens to email from a sender a routing address does not accept (accept-from list, required authentication).")
    requeue_delay: float = Field(900.0, gt=0, description="Seconds before a requeued message is processed again.")
    notify_owner: bool = Field(False, description="Email the case owner on every new email on a case (routing addresses can override it with `mailcase autoresponse notify`).")
    sender_address: str = Field("", description="From address of notifications and non-delivery notices; empty: mailcase@server.hostname.")


#: The outbound TLS modes, defined once: the delivery policy (`tls.outbound`), the relay table's
#: CHECK constraint, the CLI's choices and the REST API's schema all take them from here.
OutboundTLSMode = Literal["off", "preferred", "required", "preferred_verify", "required_verify"]
OUTBOUND_TLS_MODES: tuple[OutboundTLSMode, ...] = get_args(OutboundTLSMode)


class DeliverySettings(_Section):
    """Outbound delivery: Deliverability access level, TLS settings, retries, concurrency."""

    access_level: Literal["none", "system", "all"] = Field("all", description="Deliverability access: 'none' (nothing leaves except password-reset-class system mail), 'system' (system mail only), 'all'. Mail kept back stays in the queue as 'held'.")
    tls_mode: OutboundTLSMode = Field("preferred", description="Outbound TLS: off, preferred (STARTTLS when offered, no certificate check; a failed handshake is retried in plaintext on the same MX, logged on the attempt, as Postfix's 'may'), required, preferred_verify (a certificate offered must verify, no plaintext fallback), required_verify.")
    tls_domains: dict[str, OutboundTLSMode] = Field(default_factory=dict, description="Per-domain TLS mode, e.g. {\"example.com\" = \"required_verify\", \"*.example.org\" = \"required\"}; '*.x' means subdomains of x only; the most specific pattern wins.")
    ca_file: Path | None = Field(None, description="PEM CA bundle for verifying servers' certificates; empty: the system's trust store.")
    mx_port: int = Field(25, ge=1, le=65535, description="Port used for delivery to MX hosts (25; tests put receivers on loopback ports).")
    helo_name: str = Field("", description="Name sent in EHLO; empty: server.hostname.")
    max_queue_time: float = Field(86400.0, ge=60, le=432000, description="Seconds a message may stay undelivered (transient failures) before it bounces; at most 5 days.")
    retry_base: float = Field(300.0, gt=0, description="Seconds before the first retry; each further retry waits twice as long (5, 10, 20 ... minutes).")
    retry_max: float = Field(3600.0, gt=0, description="Longest wait between two retries, in seconds.")
    retry_jitter: float = Field(0.1, ge=0, le=0.5, description="Random spread of each retry wait, as a fraction (0.1: +/-10%), so retries do not arrive in waves.")
    max_connections: int = Field(100, ge=1, description="Outbound SMTP connections open at once in all.")
    max_per_destination: int = Field(20, ge=1, description="Outbound connections open at once to one destination (a domain's MX hosts, or a relay); Postfix's default is 20.")
    messages_per_connection: int = Field(100, ge=1, description="Messages sent over one connection before it is closed (a kept-open connection saves the TCP and TLS set-up).")
    connect_timeout: float = Field(30.0, gt=0, description="Seconds to wait for a TCP connection and the greeting.")
    command_timeout: float = Field(300.0, gt=0, description="Seconds to wait for any reply (RFC 5321 §4.5.3.2 suggests 5 minutes, 10 after the final dot).")
    batch_size: int = Field(500, ge=1, description="Messages claimed from the queue at once.")
    poll_interval: float = Field(1.0, gt=0, description="Seconds between looks at the queue when nothing woke the engine.")
    claim_lease: float = Field(900.0, ge=30, description="Seconds a claimed message is reserved for the node that took it; after a crash on PostgreSQL another node retries it once this passed (SQLite retries at restart).")

    @field_validator("tls_domains")
    @classmethod
    def _patterns(cls, v: dict[str, str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for pattern, mode in v.items():
            p = pattern.strip().lower().rstrip(".")
            bare = p[2:] if p.startswith("*.") else p
            if not bare or "*" in bare or "@" in bare or " " in bare or "." not in bare and bare != "localhost":
                raise ValueError(f"{pattern!r} is not a domain pattern like example.com or *.example.com")
            out[p] = mode
        return out


class DKIMSettings(_Section):
    """DKIM signing, bounce handling (VERP return paths, DSNs) and the compliance BCC."""

    sign: bool = Field(True, description="Sign outbound mail with the sending domain's DKIM key when one is active and its DNS record is found.")
    check_interval: float = Field(3600.0, gt=0, description="Seconds a DNS lookup of a key's record is trusted before signing looks again.")
    rotate_days: int = Field(0, ge=0, description="Days after which `dkim check` starts a rotation (new key on the alternate selector); 0: never.")
    selector: str = Field("mc1", pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$", description="Default DKIM selector for new keys (rotation alternates with `alternate_selector`).")
    alternate_selector: str = Field("mc2", pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$", description="Selector a rotation switches to (and back from).")
    verp: bool = Field(True, description="Use a per-message VERP return path (bounce+ID.MAC@domain) as MAIL FROM so bounces find their message.")
    bounce_domain: str = Field("", description="Domain of VERP return paths; empty: server.hostname. Its MX must point at this server.")
    compliance_bcc: list[str] = Field(default_factory=list, description="Addresses that silently receive a copy of all outbound mail (compliance archive); empty: none.")


class SourcesSettings(_Section):
    poll_interval: float = Field(60.0, gt=0, description="Seconds between two looks into a mailbox folder when IDLE is not used (a server without IDLE, or folders past idle_connections).")
    idle: bool = Field(True, description="Wait with IMAP IDLE (RFC 2177) for new mail when the server offers it (one connection per folder); else poll.")
    idle_connections: int = Field(5, ge=1, le=50, description="Most IMAP connections one source keeps open for IDLE, one per folder; folders past that are polled on one more of them (mail servers limit connections per user, Dovecot to 10).")
    idle_restart: float = Field(1500.0, ge=10, le=1740, description="Seconds after which an IDLE is ended and started again (RFC 2177 §3: servers may drop an IDLE after 29 minutes).")
    batch_size: int = Field(100, ge=1, le=10000, description="Messages fetched from a folder in one round trip.")
    timeout: float = Field(60.0, gt=0, description="Seconds a connect, TLS handshake or IMAP command may take before the source backs off.")
    retry_base: float = Field(10.0, gt=0, description="Seconds before reconnecting after a failure; each further failure in a row waits twice as long.")
    retry_max: float = Field(900.0, gt=0, description="Longest wait before reconnecting after failures, in seconds.")
    ca_file: Path | None = Field(None, description="PEM CA bundle for verifying IMAP servers' certificates; empty: delivery.ca_file, else the system's trust store.")


class LogSettings(_Section):
    maillog: str = Field("stderr", description="Where maillog lines go: 'stderr', 'none' or a file path.")
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Level of the application log (serve --log-level).")
    format: Literal["text", "json"] = Field("text", description="Format of the application log on stderr: 'text' (one line per record) or 'json' (one JSON object per line, for log shippers; serve --log-format).")

    @field_validator("level", mode="before")
    @classmethod
    def _upper_level(cls, v: object) -> object:
        return v.upper() if isinstance(v, str) else v


class Settings(_Section):
    data_dir: Path = Field(default_factory=default_data_dir, description="Directory for the SQLite database, certificates and other state; default /var/lib/mailcase as root, else $XDG_DATA_HOME/mailcase (~/.local/share/mailcase).")
    server: ServerSettings = Field(default_factory=ServerSettings)
    inbound: InboundSettings = Field(default_factory=InboundSettings)
    tls: TLSSettings = Field(default_factory=TLSSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    http: HTTPSettings = Field(default_factory=HTTPSettings)
    pipeline: PipelineSettings = Field(default_factory=PipelineSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    dns: DNSSettings = Field(default_factory=DNSSettings)
    cases: CasesSettings = Field(default_factory=CasesSettings)
    automation: AutomationSettings = Field(default_factory=AutomationSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    dkim: DKIMSettings = Field(default_factory=DKIMSettings)
    sources: SourcesSettings = Field(default_factory=SourcesSettings)

    @property
    def database_url(self) -> str:
        """The effective database URL (the embedded SQLite file unless one is configured)."""
        if self.database.url:
            return self.database.url
        return f"sqlite:///{(self.data_dir / 'mailcase.db').resolve()}"

    @property
    def tls_dir(self) -> Path:
        return self.data_dir / "tls"


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """`MAILCASE_A__B=v` → {"a": {"b": "v"}}; values are validated by the model."""
    out: dict[str, Any] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name in ("MAILCASE_CONFIG", "MAILCASE_DEBUG"):
            continue
        parts = name[len(ENV_PREFIX):].lower().split("__")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(name, "conflicts with another environment variable")
        node[parts[-1]] = value
    return out


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v
    return base


def load_settings(
    config_file: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the effective settings; raises ConfigError naming the key and the reason.

    Precedence, lowest first: defaults, the TOML file (`--config` or `MAILCASE_CONFIG`),
    `MAILCASE_*` variables, command-line `overrides` (e.g. `--data-dir`).
    """
    env = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    path = config_file or (Path(env["MAILCASE_CONFIG"]) if env.get("MAILCASE_CONFIG") else None)
    if path is not None:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError("--config", f"file {str(path)!r} not found") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError("--config", f"{path} is not valid TOML: {e}") from None
    _merge(data, _env_overrides(env))
    if overrides:
        _merge(data, overrides)
    if not str(data.get("data_dir") or "").strip():  # unset or empty (MAILCASE_DATA_DIR=):
        data["data_dir"] = str(default_data_dir(env))  # never "" = the working directory
    try:
        settings = Settings.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        reason = err["msg"]
        if err["type"] == "extra_forbidden":
            reason = "unknown key; see `mailcase config show` for the valid ones"
        raise ConfigError(key, f"{reason} (got {err.get('input')!r})") from None
    if settings.tls.cert_file and not settings.tls.key_file:
        raise ConfigError("tls.key_file", "must be set when tls.cert_file is set")
    return settings


def _plain(v: Any) -> Any:
    """A settings value as TOML can hold it: paths as text, None (not set) as ""."""
    if v is None:
        return ""
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    return v


def _comment(description: str | None) -> list[str]:
    return [f"# {line}" for line in (description or "").splitlines()]


def settings_as_toml(settings: Settings, *, with_descriptions: bool = True) -> str:
    """The effective settings as TOML that loads back, each key with its description.

    Keys and values are written by tomli_w (quoting `"*.example.com"`, escaping quotes,
    backslashes and newlines); only the layout and the comments, which tomli_w does not
    write, are ours. A table-valued option (`delivery.tls_domains`) becomes a sub-table
    after its section's plain keys, since TOML puts a table's keys after the table header.
    Secrets in the database URL (a password) are masked: secrets are never printed.
    """
    lines: list[str] = []
    top = settings.model_dump()

    def key_lines(model: type[BaseModel], values: dict[str, Any], table: str | None) -> None:
        tables: list[tuple[str, Any, str | None]] = []
        for key, field in model.model_fields.items():
            value = values[key]
            if isinstance(value, dict) and not issubclass(_field_type(model, key), BaseModel):
                tables.append((key, value, field.description))
                continue
            if isinstance(value, dict):
                continue  # a section: written by the caller
            if table == "database" and key == "url" and value:
                value = _mask_url(str(value))
            if with_descriptions:
                lines.extend(_comment(field.description))
            lines.append(tomli_w.dumps({key: _plain(value)}).rstrip("\n"))
        for key, value, description in tables:
            lines.append("")
            if with_descriptions:
                lines.extend(_comment(description))
            header = tomli_w.dumps({table: {key: {}}} if table else {key: {}})
            lines.append(header.strip())
            body = tomli_w.dumps(_plain(value)).rstrip("\n")
            if body:
                lines.append(body)

    key_lines(Settings, top, None)
    for name in Settings.model_fields:
        if not isinstance(top[name], dict):
            continue
        lines.append("")
        lines.append(tomli_w.dumps({name: {}}).strip())
        key_lines(type(getattr(settings, name)), top[name], name)
    return "\n".join(lines) + "\n"


def _field_type(model: type[BaseModel], key: str) -> type:
    annotation = model.model_fields[key].annotation
    return annotation if isinstance(annotation, type) else dict


def _mask_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at or ":" not in creds:
        return url
    user = creds.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"
