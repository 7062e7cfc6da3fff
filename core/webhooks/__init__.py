"""Webhook rules: Standard Webhooks signatures and the SSRF guard's target rules (pure)."""
