"""Email-to-Case: routing addresses, cases, threading, auto-responses, loop protection."""
