"""Sans-IO SMTP: the server state machine, path grammar, DATA framing and reply values.

Nothing in this package does I/O: no asyncio, ssl or socket imports. The asyncio shell lives
in `mailcase.inbound`; import names from the submodules (`mailcase.smtp.server`, …).
"""

__all__: list[str] = []
