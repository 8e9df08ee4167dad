"""Delivery: route (MX or relay), SMTP client, Delivered | Transient | Permanent with TLS facts."""
