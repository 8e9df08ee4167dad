"""Storage of Email-to-Case, one module per aggregate.

- `routing`: routing addresses (and their receiving addresses, so SMTP accepts them);
- `contacts`: contacts;
- `cases`: cases and their numbers, status, priority, owner or queue;
- `emails`: the emails of a case and their attachments, deduplication of inbound messages;
- `threads`: threading, i.e. which case a Message-ID belongs to and who is on its thread.

Two kinds of function:

- with an Engine (the CLI and the API): each opens its own transaction (writes through
  `begin_write`) and returns frozen records;
- with a Connection (the pipeline, `cases reply`): they write inside the caller's transaction,
  so a case, its email, its Message-IDs, the delivery record and any queued reply commit
  together or not at all.
"""
