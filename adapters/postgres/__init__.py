"""PostgreSQL adapters: the pool, the persistence port, migrations and the embedded server.

`embedded` is imported on its own (it loads pgserver), the rest from here.
"""

from adapters.postgres.database import PostgresDatabase, PostgresOutboxRepository, PostgresUnitOfWork
from adapters.postgres.migrations import MigrationError, apply_migrations, pending_migrations
from adapters.postgres.pool import PostgresPool, open_pool

__all__ = [
    "MigrationError",
    "PostgresDatabase",
    "PostgresOutboxRepository",
    "PostgresPool",
    "PostgresUnitOfWork",
    "apply_migrations",
    "open_pool",
    "pending_migrations",
]
