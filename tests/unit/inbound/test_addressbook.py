"""The RCPT address cache: an address another process just added is accepted at once."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from mailcase.inbound.addressbook import AddressBook
from mailcase.policy import Accept
from mailcase.storage import addresses


def _decide(book: AddressBook, rcpt: str) -> object:
    """The session's own RCPT decision (`Session._on_rcpt` calls `AddressBook.decide`)."""
    return book.decide(rcpt, tls_active=False)


def test_an_address_added_right_after_a_load_is_accepted_at_the_first_miss(
    db_engine: Engine,
) -> None:
    addresses.add(db_engine, "first@example.test")
    book = AddressBook(db_engine)
    book.reload()
    # Another process adds an address a moment after our load (well within the miss interval).
    addresses.add(db_engine, "new@example.test")
    assert isinstance(_decide(book, "new@example.test"), Accept)


def test_misses_without_a_change_do_not_reload(db_engine: Engine) -> None:
    addresses.add(db_engine, "first@example.test")
    book = AddressBook(db_engine)
    book.reload()
    assert book.reload_on_miss() is False  # nothing changed: one generation read, no reload
    assert not isinstance(_decide(book, "nobody@example.test"), Accept)
