"""SMTP replies as values.

A `Reply` is what the server says: a three-digit code, an enhanced status code (RFC 3463,
advertised with ENHANCEDSTATUSCODES, RFC 2034) and text. Replies are values, never strings
assembled at the call site, so that tests compare them and the wire format lives in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Reply"]


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply; `lines` beyond the first make it multi-line (EHLO, HELP)."""

    code: int
    enhanced: str | None
    text: str
    more: tuple[str, ...] = ()

    @property
    def is_positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def is_transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        return self.code >= 500

    def lines(self) -> list[str]:
        """The text lines, the enhanced code prefixed to each (RFC 2034 §3)."""
        texts = [self.text, *self.more]
        if self.enhanced is None:
            return texts
        return [f"{self.enhanced} {t}" if t else self.enhanced for t in texts]

    def to_bytes(self) -> bytes:
        """Wire form: `250-first` … `250 last`, each line ending in CRLF (RFC 5321 §4.2.1)."""
        ls = self.lines()
        out = []
        for i, line in enumerate(ls):
            sep = " " if i == len(ls) - 1 else "-"
            out.append(f"{self.code}{sep}{line}\r\n")
        return "".join(out).encode("utf-8")

    def __str__(self) -> str:
        return " ".join([str(self.code), *self.lines()[:1]])
