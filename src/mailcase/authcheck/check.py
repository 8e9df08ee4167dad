"""`authenticate`: SPF, DKIM, ARC and DMARC for one received message, all DNS through one
`Resolver`.

It is synchronous because dkimpy and pyspf are; the event loop should call
`authenticate_async`, which runs it in a worker thread. A message is never rejected from here:
the verdicts are values, and what to do with them (bounce, discard, requeue, flag) is the
receiving feature's decision.
"""

from __future__ import annotations

import asyncio
import re

from mailcase.authcheck.dkimcheck import KeyFetcher, check_arc, check_dkim
from mailcase.authcheck.dmarc import check_dmarc, header_block
from mailcase.authcheck.results import AuthResults
from mailcase.authcheck.spfcheck import check_spf
from mailcase.dns import Resolver

__all__ = ["authenticate", "authenticate_async", "remove_own_results"]


def authenticate(
    raw_message: bytes,
    *,
    client_ip: str,
    helo: str,
    mail_from: str,
    resolver: Resolver,
    authserv_id: str,
) -> AuthResults:
    """Check SPF (for `mail_from`, or `helo` with a null reverse-path), every DKIM
    signature, the ARC chain when there is one, then DMARC for the From domain.

    `raw_message` is the message as received (CRLF or LF line ends). `authserv_id` names this
    server in the Authentication-Results header (RFC 8601 §2.5: usually its host name).
    """
    spf = check_spf(client_ip=client_ip, helo=helo, mail_from=mail_from, resolver=resolver)
    fetcher = KeyFetcher(resolver)  # one per message: DKIM and ARC share its key cache
    dkim = check_dkim(raw_message, fetcher)
    arc = check_arc(raw_message, fetcher)
    dmarc = check_dmarc(raw_message, spf, dkim, resolver)
    return AuthResults(authserv_id=authserv_id, spf=spf, dkim=dkim, dmarc=dmarc, arc=arc)


async def authenticate_async(
    raw_message: bytes,
    *,
    client_ip: str,
    helo: str,
    mail_from: str,
    resolver: Resolver,
    authserv_id: str,
) -> AuthResults:
    """`authenticate` in a worker thread, for callers on the event loop."""
    return await asyncio.to_thread(
        authenticate,
        raw_message,
        client_ip=client_ip,
        helo=helo,
        mail_from=mail_from,
        resolver=resolver,
        authserv_id=authserv_id,
    )


_FIELD_NAME = re.compile(rb"^([!-9;-~]+)[ \t]*:", re.ASCII)
_COMMENT = re.compile(rb"\([^()]*\)")


def remove_own_results(raw_message: bytes, authserv_id: str) -> bytes:
    """Drop Authentication-Results fields that claim our `authserv_id`.

    RFC 8601 §5: a border MTA MUST remove such fields arriving from outside, or a sender could
    forge our verdicts. Other servers' fields are kept. The body is not touched.
    """
    head = header_block(raw_message)
    body = raw_message[len(head) :]
    ours = authserv_id.strip().lower().encode()
    lines = head.splitlines(keepends=True)
    fields: list[list[bytes]] = []
    for line in lines:
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1].append(line)
        else:
            fields.append([line])
    kept = []
    for f in fields:
        m = _FIELD_NAME.match(f[0])
        if m and m.group(1).lower() == b"authentication-results":
            value = b"".join(f)[m.end() :]
            value = _COMMENT.sub(b" ", value)
            claimed = value.split(b";", 1)[0].strip().split()[:1]
            if claimed and claimed[0].strip(b'"').lower() == ours:
                continue
        kept.extend(f)
    return b"".join(kept) + body
