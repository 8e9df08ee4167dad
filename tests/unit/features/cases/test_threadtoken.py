"""Thread tokens: round trip, and altered or guessed tokens refused."""

from __future__ import annotations

import secrets

import pytest

from mailcase.features.cases.threadtoken import (
    TOKEN_PATTERN,
    find_case_ids,
    make_token,
    strip_tokens,
    with_token_in_body,
    with_token_in_subject,
)

SECRET = b"k" * 32
OTHER = b"o" * 32


@pytest.mark.parametrize("case_id", [0, 1, 31, 32, 1027, 2**31, 2**63 - 1])
def test_round_trip(case_id: int) -> None:
    token = make_token(SECRET, case_id)
    assert token.startswith("thread::") and token.endswith("::")
    assert TOKEN_PATTERN.fullmatch(token)
    assert find_case_ids(SECRET, f"Re: hello {token} bye") == ([case_id], [])


def test_signature_has_at_least_80_bits() -> None:
    sig = make_token(SECRET, 5).split(".")[1].rstrip(":")
    assert len(sig) * 5 >= 80


def test_other_secret_refuses() -> None:
    token = make_token(OTHER, 42)
    assert find_case_ids(SECRET, token) == ([], [token])


def test_altered_case_id_refused() -> None:
    token = make_token(SECRET, 42)
    head, sig = token[len("thread::"):-2].split(".")
    forged = f"thread::{make_token(SECRET, 43)[8:].split('.')[0]}.{sig}::"
    assert forged != token
    assert find_case_ids(SECRET, forged) == ([], [forged])


def test_altered_signature_refused() -> None:
    token = make_token(SECRET, 42)
    i = len(token) - 5
    flipped = token[:i] + ("a" if token[i] != "a" else "b") + token[i + 1:]
    assert find_case_ids(SECRET, flipped) == ([], [flipped])


def test_guessed_tokens_refused() -> None:
    guesses = [
        "thread::b." + "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz234567") for _ in range(24)) + "::"
        for _ in range(200)
    ]
    ids, refused = find_case_ids(SECRET, " ".join(guesses))
    assert ids == []
    assert len(refused) == len(set(guesses))


def test_zero_padded_id_with_valid_signature_refused() -> None:
    token = make_token(SECRET, 5)  # "thread::f.<sig>::"
    padded = token.replace("thread::f.", "thread::af.")
    assert find_case_ids(SECRET, padded) == ([], [padded])


def test_case_insensitive_and_several_tokens() -> None:
    a, b = make_token(SECRET, 7), make_token(SECRET, 9)
    text = f"RE: AW: [External] {a.upper()} and {b} and again {a}"
    assert find_case_ids(SECRET, text) == ([7, 9], [])


def test_subject_and_body_helpers() -> None:
    token = make_token(SECRET, 1027)
    subject = with_token_in_subject("Printer on fire", token)
    assert subject == f"Printer on fire [ {token} ]"
    assert with_token_in_subject(subject, token) == subject
    other = make_token(SECRET, 1)
    assert with_token_in_subject(f"Re: x [ {other} ]", token) == f"Re: x [ {token} ]"
    assert strip_tokens(subject) == "Printer on fire"
    body = with_token_in_body("Hello\n", token)
    assert body == f"Hello\n\n[ {token} ]\n"
    assert with_token_in_body(body, token) == body
    assert find_case_ids(SECRET, body) == ([1027], [])


def test_empty_secret_refused() -> None:
    with pytest.raises(ValueError):
        make_token(b"", 1)
