"""Parsing inbound mail. For now only what the SMTP accept path needs from the header block."""

from mailcase.mime.headers import header_block, message_id

__all__ = ["header_block", "message_id"]
