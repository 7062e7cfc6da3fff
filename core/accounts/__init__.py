"""Accounts and access: users, credentials (sessions, API keys), one-time tokens, audit records."""
