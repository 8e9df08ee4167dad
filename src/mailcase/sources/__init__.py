"""Mailbox sources: the Email-to-Case agent, taking mail from IMAP mailboxes (issue 19).

A source's mail enters through the same durable spool as SMTP mail, so it goes the same way
afterwards (pipeline, routing, threading, limits). Modules, one concern each:

- `models`: the `mail_sources` and `mail_source_folders` tables;
- `plan`: pure decisions (which UIDs to take, what a UIDVALIDITY change means, back-off, the
  deterministic queue id that makes a re-fetch after a crash a no-op);
- `imap`: the client I/O (IMAPClient in a thread: connect with verified TLS, log in, fetch,
  after-actions, IDLE);
- `store`: the rows (add/list/show/remove/pause/resume, the encrypted secret, folder state);
- `fetcher`: the running agent (`Fetcher`, started by the composition root's `fetch` role);
- `commands`: `mailcase source ...`.
"""

from __future__ import annotations

__all__: list[str] = []
