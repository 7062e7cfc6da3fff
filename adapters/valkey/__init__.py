"""Valkey (or Redis 7) adapters: the shared cache, and the client they are built on."""
