"""What a fetched message is stored with: its envelope sender and the email log's source note."""

from __future__ import annotations

from mailcase.sources.fetcher import envelope_sender, source_reply_text


def test_the_envelope_sender_is_the_mailbox_servers_return_path() -> None:
    msg = b"Return-Path: <bounces@list.example>\r\nFrom: A <a@example.test>\r\n\r\nbody\r\n"
    assert envelope_sender(msg) == "bounces@list.example"


def test_a_null_return_path_stays_null_and_a_missing_one_falls_back_to_from() -> None:
    assert envelope_sender(b"Return-Path: <>\r\nFrom: a@example.test\r\n\r\nx") == ""
    assert envelope_sender(b"From: Ann\r\n <ann@example.test>\r\n\r\nx") == "ann@example.test"
    assert envelope_sender(b"Subject: none\r\n\r\nReturn-Path: <body@x.test>\r\n") == ""


def test_the_email_log_names_source_folder_uidvalidity_and_uid() -> None:
    assert source_reply_text("helpdesk", "Support/Inbox", 7, 42) == (
        "fetched from source helpdesk folder 'Support/Inbox' uidvalidity 7 uid 42")
