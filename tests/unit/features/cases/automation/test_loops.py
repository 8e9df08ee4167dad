"""Loop fingerprints: the same message under reply prefixes, tokens and re-wrapping."""

from __future__ import annotations

from mailcase.features.cases.automation.loops import fingerprint, normalize_subject

TOKEN = "thread::b3.k5yq3a2cxwzbjr7d4j6ezp2a::"


def test_normalize_subject() -> None:
    assert normalize_subject("Re: RE: AW: Fwd:  Out of office") == "out of office"
    assert normalize_subject(f"Re: Case 1 [ {TOKEN} ]") == "case 1"
    assert normalize_subject("Auto: Re[2]: hello   world") == "hello world"


def test_same_message_same_fingerprint() -> None:
    a = fingerprint("Bot@Client.test", "Out of office", "I am away.\nBack Monday.")
    assert a == fingerprint("bot@client.test", "RE: Out of Office", "I am away. Back   Monday.")
    assert a == fingerprint(
        "bot@client.test", f"Re: Out of office [ {TOKEN} ]", "I am away. Back Monday."
    )


def test_differences_that_matter() -> None:
    a = fingerprint("bot@client.test", "Out of office", "I am away.")
    assert a != fingerprint("other@client.test", "Out of office", "I am away.")
    assert a != fingerprint("bot@client.test", "Out of office 2", "I am away.")
    assert a != fingerprint("bot@client.test", "Out of office", "I am here.")
    # Field boundaries are kept apart.
    assert fingerprint("a", "b c", "d") != fingerprint("a", "b", "c d")
