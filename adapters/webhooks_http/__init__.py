"""Webhook delivery over HTTP (the WebhookTransport port on httpx), guarded against SSRF.

`transport` holds the adapter; `conventions` the rules and texts it shares with the in-memory
fake. This package's `__init__` imports nothing, so the fake can use `conventions` without
loading httpx.
"""
