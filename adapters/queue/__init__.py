"""The JobQueue port on SAQ (Valkey/Redis or PostgreSQL back end), and its workers.

Modules: `saq_queue` (the port), `saq_worker` (workers serving it), `saq_backends` (SAQ queue
classes tuned for Pictor), `context` (what a running SAQ job sees), `cron` (periodic jobs),
`factory` (pick an adapter by URL). This package imports nothing itself, so `cron` stays light.
"""
