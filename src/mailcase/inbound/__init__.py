"""asyncio shell around the sans-IO SMTP server: listener, sessions, STARTTLS, limits."""
