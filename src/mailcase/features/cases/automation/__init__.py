"""Email-to-Case automation: the case-creation gate, auto-responses, loop protection, limits."""
