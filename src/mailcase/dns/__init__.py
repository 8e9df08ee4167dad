"""The one DNS resolver of mailcase (see `mailcase.dns.resolver` for why and how).

    resolver = Resolver(["127.0.0.1:5353"], timeout=5.0)   # [] = the system's resolver
    answer = await resolver.mx("example.com")               # Answer[MXRecord]
    answer = resolver.txt_sync("_dmarc.example.com")        # from a worker thread

A lookup returns an `Answer` with at least one record, or raises `NoSuchRecord` (permanent:
`NXDomain`, `NoData`, `InvalidName`) or `TemporaryDNSError` (`DNSTimeout`, `ServerFailure`).
"""

from mailcase.dns.resolver import (
    Answer,
    DNSLookupError,
    DNSTimeout,
    InvalidName,
    MXRecord,
    NoData,
    NoSuchRecord,
    NXDomain,
    Resolver,
    ServerFailure,
    TemporaryDNSError,
    TLSARecord,
    TXTRecord,
    parse_nameserver,
    tlsa_name,
)

__all__ = [
    "Answer",
    "DNSLookupError",
    "DNSTimeout",
    "InvalidName",
    "MXRecord",
    "NXDomain",
    "NoData",
    "NoSuchRecord",
    "Resolver",
    "ServerFailure",
    "TLSARecord",
    "TXTRecord",
    "TemporaryDNSError",
    "parse_nameserver",
    "tlsa_name",
]
