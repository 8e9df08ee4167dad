"""A small authoritative DNS server for tests, on UDP and TCP, on loopback only.

Tests need real DNS traffic (mailcase's resolver, dkimpy and pyspf all go through it), but never
the network: this server answers from a zone given as Python data, on one free port of 127.0.0.1
for both UDP and TCP, in background threads. The zone and the server's misbehaviour can be
changed while it runs.

    zone = {
        "example.test": {
            "A": ["192.0.2.10"],
            "MX": [(10, "mx.example.test")],          # (0, ".") is a null MX (RFC 7505)
            "TXT": ["v=spf1 ip4:127.0.0.0/8 -all"],   # long strings are split into 255 octets
        },
        "sel._domainkey.example.test": {"TXT": ["v=DKIM1; k=rsa; p=MIIB..."]},
        "_dmarc.example.test": {"TXT": ["v=DMARC1; p=reject"]},
        "_25._tcp.mx.example.test": {"TLSA": [(3, 1, 1, "ab12...")]},   # hex or bytes
        "www.example.test": {"CNAME": "example.test"},
    }
    with DNSServer(zone) as server:
        resolver = Resolver([server.address])
        server.servfail("broken.example.test")      # answers SERVFAIL
        server.delay("slow.example.test", 2.0)      # answers after 2 s
        server.drop("dead.example.test")            # never answers (the client times out)
        server.secure("_25._tcp.mx.example.test")   # AD bit set when the query asks (RFC 6840)
        server.set("example.test", "A", "192.0.2.11")

Semantics, kept close to a real authoritative server:
- names are case-insensitive, with or without the trailing dot;
- a name with no records but with names below it exists (NODATA, not NXDOMAIN: RFC 8020);
- CNAMEs are followed inside the zone (up to 8) and the chain is put in the answer;
- over UDP an answer larger than the client's EDNS payload size (512 without EDNS) is sent
  truncated (TC bit), so the client has to retry over TCP, as RFC 7766 asks;
- every query is recorded in `queries` (transport, name, type), to check what clients did.
"""

from __future__ import annotations

import binascii
import ipaddress
import socket
import socketserver
import struct
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from dnslib import (  # type: ignore[import-untyped]
    AAAA,
    CNAME,
    EDNS0,
    MX,
    PTR,
    QTYPE,
    RCODE,
    RR,
    TLSA,
    TXT,
    A,
    DNSHeader,
    DNSRecord,
)

__all__ = ["DNSServer", "Query", "Zone"]

Zone = Mapping[str, Mapping[str, Any]]
"""name → {type → value or list of values}; see the module docstring for the value forms."""

_TYPES = ("A", "AAAA", "MX", "TXT", "TLSA", "CNAME", "PTR")
_MAX_CNAME_CHAIN = 8
_TCP_IDLE = 5.0  # seconds a TCP connection may stay idle before we close it
_EDNS_PAYLOAD = 1232  # what we announce; RFC 9715 / DNS flag day 2020 size


@dataclass(frozen=True, slots=True)
class Query:
    """One query the server received."""

    transport: str  # "udp" or "tcp"
    name: str  # lower case, no trailing dot
    qtype: str  # "A", "TXT", ...
    edns_payload: int | None  # the client's EDNS UDP payload size, None without EDNS
    ad: bool  # the AD bit was set in the query (RFC 6840 §5.7)
    do: bool  # the EDNS DO bit was set


def _norm(name: str) -> str:
    return name.strip().rstrip(".").lower()


def _txt_strings(value: Any) -> list[bytes]:
    """A TXT value as character-strings of at most 255 octets (RFC 1035 §3.3.14)."""
    if isinstance(value, str | bytes):
        data = value.encode() if isinstance(value, str) else value
        return [data[i : i + 255] for i in range(0, len(data), 255)] or [b""]
    strings = [s.encode() if isinstance(s, str) else bytes(s) for s in value]
    if any(len(s) > 255 for s in strings):
        raise ValueError("a TXT character-string is at most 255 octets; pass one str to split")
    return strings


def _rdata(rtype: str, value: Any) -> Any:
    """Build the dnslib RDATA for one record value."""
    if rtype == "A":
        return A(str(ipaddress.IPv4Address(value)))
    if rtype == "AAAA":
        return AAAA(str(ipaddress.IPv6Address(value)))
    if rtype == "MX":
        if isinstance(value, str):
            pref, exchange = value.split(None, 1)
            value = (int(pref), exchange)
        pref, exchange = value
        return MX(exchange if exchange.endswith(".") else exchange + ".", int(pref))
    if rtype == "TXT":
        return TXT(_txt_strings(value))
    if rtype == "TLSA":
        usage, selector, mtype, data = value
        raw = binascii.unhexlify(data) if isinstance(data, str) else bytes(data)
        return TLSA(int(usage), int(selector), int(mtype), raw)
    if rtype == "CNAME":
        return CNAME(value if value.endswith(".") else value + ".")
    if rtype == "PTR":
        return PTR(value if value.endswith(".") else value + ".")
    raise ValueError(f"unsupported record type {rtype!r}; one of {_TYPES}")


def _as_list(rtype: str, values: Any) -> list[Any]:
    # A lone TXT string, MX/TLSA tuple or name is one record; a list is several.
    if rtype == "CNAME":
        return [values] if isinstance(values, str) else list(values)
    if isinstance(values, list):
        return values
    return [values]


@dataclass(slots=True)
class _Behaviour:
    rcode: int | None = None  # answer with this rcode instead of data
    delay: float = 0.0  # seconds before answering
    drop: bool = False  # never answer


class DNSServer:
    """An authoritative DNS server on 127.0.0.1 (UDP and TCP, same port) for one test.

    Use it as a context manager, or call `start()` and `stop()`. All methods are thread-safe
    and may be called while the server runs.
    """

    def __init__(self, zone: Zone | None = None, *, ttl: int = 60) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._records: dict[str, dict[str, list[Any]]] = {}
        self._behaviour: dict[tuple[str, str | None], _Behaviour] = {}
        self._secure: set[str] = set()
        self._stopping = threading.Event()
        self._udp: _UDPServer | None = None
        self._tcp: _TCPServer | None = None
        self._threads: list[threading.Thread] = []
        self.queries: list[Query] = []
        self.errors: list[BaseException] = []
        if zone:
            self.load(zone)

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> DNSServer:
        """Bind UDP and TCP on one free loopback port and serve in background threads."""
        if self._udp is not None:
            raise RuntimeError("DNSServer already started")
        self._stopping.clear()
        last: OSError | None = None
        for _ in range(50):
            udp = _UDPServer(("127.0.0.1", 0), _UDPHandler, self)
            port = udp.server_address[1]
            try:
                tcp = _TCPServer(("127.0.0.1", port), _TCPHandler, self)
            except OSError as exc:  # the port is taken for TCP: try another one
                udp.server_close()
                last = exc
                continue
            break
        else:
            raise RuntimeError(f"no free port for UDP and TCP on 127.0.0.1: {last}")
        self._udp, self._tcp = udp, tcp
        for srv in (udp, tcp):
            t = threading.Thread(
                target=srv.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
            )
            t.name = f"dnsserver-{type(srv).__name__}-{port}"
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        """Stop serving and close both sockets; delayed or dropped answers are abandoned."""
        self._stopping.set()
        for srv in (self._udp, self._tcp):
            if srv is not None:
                srv.shutdown()
                srv.server_close()
        for t in self._threads:
            t.join(timeout=5)
        self._threads.clear()
        self._udp = self._tcp = None

    def __enter__(self) -> DNSServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._udp is None:
            raise RuntimeError("DNSServer not started")
        return int(self._udp.server_address[1])

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``, the form mailcase's `dns.nameservers` setting takes."""
        return f"127.0.0.1:{self.port}"

    # -- the zone --------------------------------------------------------------------------

    def load(self, zone: Zone) -> None:
        """Set every record in `zone` (replacing those types at those names)."""
        for name, types in zone.items():
            for rtype, values in types.items():
                self.set(name, rtype, *_as_list(rtype.upper(), values))

    def set(self, name: str, rtype: str, *values: Any) -> None:
        """Replace the records of one type at a name (no values: remove them)."""
        rtype = rtype.upper()
        for v in values:
            _rdata(rtype, v)  # fail now, in the test, on a malformed value
        with self._lock:
            node = self._records.setdefault(_norm(name), {})
            if values:
                node[rtype] = list(values)
            else:
                node.pop(rtype, None)

    def add(self, name: str, rtype: str, *values: Any) -> None:
        """Add records of one type at a name."""
        rtype = rtype.upper()
        for v in values:
            _rdata(rtype, v)
        with self._lock:
            self._records.setdefault(_norm(name), {}).setdefault(rtype, []).extend(values)

    def remove(self, name: str, rtype: str | None = None) -> None:
        """Remove one type at a name, or the whole name (it becomes NXDOMAIN)."""
        with self._lock:
            if rtype is None:
                self._records.pop(_norm(name), None)
            else:
                self._records.get(_norm(name), {}).pop(rtype.upper(), None)

    # -- misbehaviour ------------------------------------------------------------------------

    def servfail(self, name: str, qtype: str | None = None) -> None:
        """Answer queries for `name` (of `qtype`, or all types) with SERVFAIL."""
        self.fail(name, "SERVFAIL", qtype)

    def fail(self, name: str, rcode: str, qtype: str | None = None) -> None:
        """Answer queries for `name` with an error rcode (SERVFAIL, REFUSED, NXDOMAIN ...)."""
        self._set_behaviour(name, qtype, rcode=int(getattr(RCODE, rcode.upper())))

    def delay(self, name: str, seconds: float, qtype: str | None = None) -> None:
        """Answer queries for `name` only after `seconds`."""
        self._set_behaviour(name, qtype, delay=seconds)

    def drop(self, name: str, qtype: str | None = None) -> None:
        """Never answer queries for `name`: the client runs into its timeout."""
        self._set_behaviour(name, qtype, drop=True)

    def heal(self, name: str | None = None) -> None:
        """Forget the misbehaviour set for `name` (or for every name)."""
        with self._lock:
            if name is None:
                self._behaviour.clear()
            else:
                for key in [k for k in self._behaviour if k[0] == _norm(name)]:
                    del self._behaviour[key]

    def secure(self, name: str, on: bool = True) -> None:
        """Set the AD bit on answers for `name` when the query asks for it (AD or DO set).

        This only imitates what a validating resolver says; nothing is signed.
        """
        with self._lock:
            (self._secure.add if on else self._secure.discard)(_norm(name))

    def _set_behaviour(self, name: str, qtype: str | None, **kw: Any) -> None:
        key = (_norm(name), qtype.upper() if qtype else None)
        with self._lock:
            b = self._behaviour.setdefault(key, _Behaviour())
            for k, v in kw.items():
                setattr(b, k, v)

    def queries_for(self, name: str, qtype: str | None = None) -> list[Query]:
        """The recorded queries for one name (and type)."""
        n = _norm(name)
        with self._lock:
            return [q for q in self.queries if q.name == n and (qtype is None or q.qtype == qtype)]

    # -- answering ---------------------------------------------------------------------------

    def _exists(self, name: str) -> bool:
        if self._records.get(name):
            return True
        suffix = "." + name
        return any(n.endswith(suffix) and v for n, v in self._records.items())

    def _answer(self, data: bytes, transport: str) -> bytes | None:
        """The packed reply to one query, or None to stay silent."""
        request = DNSRecord.parse(data)
        opt = next((r for r in request.ar if r.rtype == QTYPE.OPT), None)
        payload = max(512, int(opt.rclass)) if opt is not None else None
        do = bool(opt is not None and (opt.ttl >> 15) & 1)
        ad = bool(request.header.ad)
        qname = _norm(str(request.q.qname))
        qtype = str(QTYPE.get(request.q.qtype))
        with self._lock:
            self.queries.append(Query(transport, qname, qtype, payload, ad, do))
            behaviour = self._behaviour.get((qname, qtype)) or self._behaviour.get((qname, None))
            # A copy, so that the test may change it while this answer waits.
            b = _Behaviour(behaviour.rcode, behaviour.delay, behaviour.drop) if behaviour else None
        if b is not None and b.drop:
            self._stopping.wait(30)
            return None
        if b is not None and b.delay and self._stopping.wait(b.delay):
            return None

        reply = request.reply()  # id, question, qr/aa/ra, rd copied
        reply.header.ad = 0
        if opt is not None:
            reply.add_ar(EDNS0(udp_len=_EDNS_PAYLOAD, flags="do" if do else ""))
        if b is not None and b.rcode is not None:
            reply.header.rcode = b.rcode
            return self._pack(request, reply, transport, payload)

        with self._lock:
            name, secure = qname, True
            for _ in range(_MAX_CNAME_CHAIN + 1):
                node = self._records.get(name, {})
                secure = secure and name in self._secure
                wanted = node.get(qtype, [])
                if wanted:
                    for v in wanted:
                        reply.add_answer(
                            RR(
                                name + ".",
                                getattr(QTYPE, qtype),
                                rdata=_rdata(qtype, v),
                                ttl=self.ttl,
                            )
                        )
                    break
                if "CNAME" in node and qtype != "CNAME":
                    target = _norm(node["CNAME"][0])
                    reply.add_answer(
                        RR(name + ".", QTYPE.CNAME, rdata=_rdata("CNAME", target), ttl=self.ttl)
                    )
                    name = target
                    continue
                if not self._exists(name):
                    reply.header.rcode = RCODE.NXDOMAIN
                break
            # dnslib's reply() copies the query's AD bit: set it only for "secure" names.
            reply.header.ad = 1 if secure and (ad or do) else 0
        return self._pack(request, reply, transport, payload)

    @staticmethod
    def _pack(request: DNSRecord, reply: DNSRecord, transport: str, payload: int | None) -> bytes:
        packed = bytes(reply.pack())
        limit = payload or 512
        if transport == "udp" and len(packed) > limit:
            # Truncated: header and question only, TC set (RFC 2181 §9, RFC 7766).
            header = DNSHeader(
                id=request.header.id,
                qr=1,
                aa=1,
                ra=1,
                tc=1,
                rd=request.header.rd,
                rcode=reply.header.rcode,
            )
            truncated = DNSRecord(header, q=request.q)
            packed = bytes(truncated.pack())
        return packed


class _UDPServer(socketserver.ThreadingUDPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, addr: tuple[str, int], handler: type, dns: DNSServer) -> None:
        self.dns = dns
        super().__init__(addr, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        self.dns.errors.append(sys.exc_info()[1] or RuntimeError("unknown"))


class _TCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], handler: type, dns: DNSServer) -> None:
        self.dns = dns
        super().__init__(addr, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        self.dns.errors.append(sys.exc_info()[1] or RuntimeError("unknown"))


class _UDPHandler(socketserver.BaseRequestHandler):
    server: _UDPServer

    def handle(self) -> None:
        data, sock = self.request
        reply = self.server.dns._answer(data, "udp")
        if reply is not None and not self.server.dns._stopping.is_set():
            try:
                sock.sendto(reply, self.client_address)
            except OSError:  # the socket closed under a delayed answer at stop()
                pass


class _TCPHandler(socketserver.BaseRequestHandler):
    server: _TCPServer

    def handle(self) -> None:
        conn: socket.socket = self.request
        conn.settimeout(_TCP_IDLE)
        try:
            for data in _tcp_messages(conn):
                reply = self.server.dns._answer(data, "tcp")
                if reply is None or self.server.dns._stopping.is_set():
                    return
                conn.sendall(struct.pack("!H", len(reply)) + reply)
        except OSError:  # idle timeout, reset by the client, or closed at stop()
            return


def _tcp_messages(conn: socket.socket) -> Iterator[bytes]:
    """Length-prefixed DNS messages from a TCP stream (RFC 1035 §4.2.2)."""
    while True:
        head = _recv_exact(conn, 2)
        if head is None:
            return
        body = _recv_exact(conn, struct.unpack("!H", head)[0])
        if body is None:
            return
        yield body


def _recv_exact(conn: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf
