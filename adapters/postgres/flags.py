"""The feature flag repository on PostgreSQL (migration 0007).

Works on its unit of work's connection, inside its transaction; rows map to `core.flags.model.Flag`
explicitly (rules, variants and the default value as JSON) and times come back in UTC. A flag the
table refuses (its CHECKs) raises ValueError from inside a savepoint, so the unit of work stays
usable.
"""

from __future__ import annotations

import builtins
from datetime import UTC
from typing import TYPE_CHECKING, Any

import msgspec
from psycopg import errors

from adapters.postgres.row_values import aware, aware_or_none, utc_or_none
from core.flags.model import Flag, FlagKind, FlagValue, Rule, Variant, is_flag_key

if TYPE_CHECKING:
    from adapters.postgres.database import PostgresUnitOfWork

_COLUMNS = (
    "key, description, kind, enabled, default_value::text, rules::text, rollout, variants::text,"
    " expires_at, created_at, updated_at"
)
_value_decoder = msgspec.json.Decoder(FlagValue)
_rules_decoder = msgspec.json.Decoder(tuple[Rule, ...])
_variants_decoder = msgspec.json.Decoder(tuple[Variant, ...])


class PostgresFeatureFlagRepository:
    """Implements `core.ports.FeatureFlagRepository` on `feature_flags`."""

    def __init__(self, uow: PostgresUnitOfWork) -> None:
        self._uow = uow

    async def list(self) -> list[Flag]:
        return await self._select("ORDER BY key", ())

    async def get(self, key: str) -> Flag | None:
        if not is_flag_key(key):  # no row can have it; the CHECK would refuse it
            return None
        found = await self._select("WHERE key = %s", (key,))
        return found[0] if found else None

    async def get_for_update(self, key: str) -> Flag | None:
        if not is_flag_key(key):
            return None
        found = await self._select("WHERE key = %s FOR UPDATE", (key,))
        return found[0] if found else None

    async def put(self, flag: Flag) -> bool:
        values = (
            flag.description,
            FlagKind(flag.kind).value,
            flag.enabled,
            msgspec.json.encode(flag.default).decode(),
            msgspec.json.encode(flag.rules).decode(),
            flag.rollout,
            msgspec.json.encode(flag.variants).decode(),
            aware_or_none(flag.expires_at, "expires_at"),
            aware(flag.updated_at, "updated_at"),
        )
        conn = self._uow.connection
        try:
            async with conn.transaction():  # a savepoint: a refused row leaves the unit of work usable
                # Insert, or (the key exists, or a concurrent insert of it committed meanwhile,
                # which the primary key makes us wait for) replace what is there.
                inserted = await conn.execute(
                    """
                    INSERT INTO feature_flags (key, description, kind, enabled, default_value, rules,
                                               rollout, variants, expires_at, updated_at, created_at)
                    VALUES (%s, %s, %s, %s, %s::jsonb, %s::jsonb, %s, %s::jsonb, %s, %s, %s)
                    ON CONFLICT (key) DO NOTHING
                    """,
                    (flag.key, *values, aware(flag.created_at, "created_at")),
                )
                if inserted.rowcount == 1:
                    return True
                await conn.execute(
                    """
                    UPDATE feature_flags
                    SET description = %s, kind = %s, enabled = %s, default_value = %s::jsonb,
                        rules = %s::jsonb, rollout = %s, variants = %s::jsonb, expires_at = %s,
                        updated_at = %s
                    WHERE key = %s
                    """,
                    (*values, flag.key),
                )
                return False
        except (errors.CheckViolation, errors.NumericValueOutOfRange) as error:
            raise ValueError(f"the flag breaks a rule of its table: {error}") from error

    async def delete(self, key: str) -> bool:
        if not is_flag_key(key):
            return False
        cursor = await self._uow.connection.execute("DELETE FROM feature_flags WHERE key = %s", (key,))
        return cursor.rowcount == 1

    async def _select(self, where: str, params: tuple[Any, ...]) -> builtins.list[Flag]:
        cursor = await self._uow.connection.execute(
            f"SELECT {_COLUMNS} FROM feature_flags {where}",  # fixed clauses; values are bound
            params,
        )
        return [_flag(row) for row in await cursor.fetchall()]


def _flag(row: tuple[Any, ...]) -> Flag:
    key, description, kind, enabled, default, rules, rollout, variants, expires_at, created_at, updated_at = (
        row
    )
    return Flag(
        key=key,
        description=description,
        kind=FlagKind(kind),
        enabled=enabled,
        default=_value_decoder.decode(default),
        rules=_rules_decoder.decode(rules),
        rollout=rollout,
        variants=_variants_decoder.decode(variants),
        expires_at=utc_or_none(expires_at),
        created_at=created_at.astimezone(UTC),
        updated_at=updated_at.astimezone(UTC),
    )
