"""Loading the .eml corpus (tests/fixtures/eml)."""

from __future__ import annotations

from pathlib import Path

from mailcase.mime import InboundEmail, parse_message

EML = Path(__file__).resolve().parents[2] / "fixtures" / "eml"


def raw(name: str) -> bytes:
    return (EML / name).read_bytes()


def parsed(name: str) -> InboundEmail:
    return parse_message(raw(name))


def all_fixtures() -> list[str]:
    return sorted(p.name for p in EML.glob("*.eml"))
