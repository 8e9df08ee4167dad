"""Outbound mail: composing, the durable outbound queue, retry schedule, DSNs, DKIM."""
