"""Responses that carry message content (raw mail, attachments, exports): always downloads.

What a stored message or attachment holds was written by whoever sent it. Served inline from
our origin, a browser could render it (text/html, image/svg+xml, or HTML sniffed out of
text/plain) and run its script next to the API. So every such response is a download
(`Content-Disposition: attachment`, RFC 6266), with MIME sniffing off (`nosniff`) and a
Content-Security-Policy that allows nothing and sandboxes the document, should a browser
render it anyway. One helper, so that a new content route cannot forget one of the three.

JSON answers carry sender-written text too (subjects, HTML bodies): `ApiContentHeaders` gives
every /api/ response `nosniff` and the same CSP, so none can be sniffed or rendered as a page.
"""

from __future__ import annotations

import re

from fastapi import Response
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CONTENT_HEADERS", "ApiContentHeaders", "download", "safe_filename"]

#: Headers of every response carrying content that a sender wrote.
CONTENT_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
}

_UNSAFE = re.compile(r"[^A-Za-z0-9._ -]")
_MEDIA_TYPE = re.compile(r"[\w.+-]+/[\w.+-]+")


def safe_filename(name: str, default: str = "download") -> str:
    """`name` reduced to characters that need no quoting in a header (at most 200)."""
    return _UNSAFE.sub("_", name)[:200].strip() or default


def download(data: bytes | str, *, media_type: str, filename: str) -> Response:
    """`data` as a download named `filename` (sanitised); a `media_type` that is not a plain
    type/subtype (a sender's Content-Type may carry parameters or junk) becomes
    application/octet-stream."""
    if not _MEDIA_TYPE.fullmatch(media_type):
        media_type = "application/octet-stream"
    return Response(
        data,
        media_type=media_type,
        headers={
            "Content-Disposition": f'attachment; filename="{safe_filename(filename)}"',
            **CONTENT_HEADERS,
        },
    )


class ApiContentHeaders:
    """ASGI middleware: `CONTENT_HEADERS` on every response under /api/ (not on /docs, whose
    page needs its scripts)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith("/api/"):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in CONTENT_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)
