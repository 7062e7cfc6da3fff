"""`Idempotency-Key` for POST routes (API.md): the first response under a key is stored for 24 h
and replayed to repeats of the same request; a different request under the key is 422, a repeat
while the first is still running is 409 (rules in `core.idempotency`).

The claim is committed in its own unit of work before the work starts, so a concurrent duplicate
(in this process or another) sees it and never does the work twice. A request that fails releases
its claim, so the client may retry with the same key; only answers are remembered, never errors.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec
from litestar import Request, Response

from core import idempotency
from core.accounts.principal import Principal
from core.errors import DomainError, ErrorCode
from core.ports import Clock, Database

log = logging.getLogger("pictor.idempotency")

JSON: Final = "application/json"


class Answer(msgspec.Struct, frozen=True, kw_only=True):
    """A route's response in a form that can be stored and replayed byte for byte."""

    status: int
    body: bytes  # JSON
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def json(cls, status: int, content: Any, headers: tuple[tuple[str, str], ...] = ()) -> Answer:
        return cls(status=status, body=msgspec.json.encode(content), headers=headers)

    def response(self, *, replayed: bool = False) -> Response[bytes]:
        headers = dict(self.headers)
        if replayed:
            headers[idempotency.REPLAYED_HEADER] = "true"
        return Response(self.body, status_code=self.status, media_type=JSON, headers=headers)


async def request_body_json(request: Request[Any, Any, Any]) -> Any:
    """The request's body decoded as JSON (None when empty), for the fingerprint."""
    raw = await request.body()
    if not raw.strip():
        return None
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise DomainError(ErrorCode.BAD_REQUEST, "The body is not valid JSON") from None


async def answer_once(
    request: Request[Any, Any, Any],
    principal: Principal,
    *,
    database: Database,
    clock: Clock,
    work: Callable[[], Awaitable[Answer]],
) -> Response[bytes]:
    """`work`'s answer, done at most once per `Idempotency-Key` when the request carries one."""
    key = request.headers.get(idempotency.HEADER)
    if key is None:
        return (await work()).response()
    key = idempotency.validate_key(key)
    request_fingerprint = idempotency.fingerprint(
        request.method, request.url.path, await request_body_json(request)
    )
    now = clock.now()
    record = idempotency.new_record(principal.user_id, key, request_fingerprint, now)
    async with database.unit_of_work() as uow:
        existing = await uow.idempotency.claim(record)
        await uow.commit()
    if existing is not None:
        # 422 for another request under the key, 409 while the first runs; else replay it.
        if idempotency.decide(existing, request_fingerprint, now) is idempotency.Decision.REPLAY:
            assert existing.response_status is not None and existing.response_body is not None
            stored = Answer(
                status=existing.response_status,
                body=existing.response_body,
                headers=existing.response_headers,
            )
            return stored.response(replayed=True)
        # PROCEED with a record present cannot happen (claim replaces expired ones); be safe.
        raise DomainError(
            ErrorCode.IDEMPOTENCY_IN_PROGRESS,
            "A request with this Idempotency-Key is still being processed; retry later",
            headers={"Retry-After": "1"},
        )
    try:
        answer = await work()
    except BaseException:
        await _release(database, principal.user_id, key)
        raise
    try:
        async with database.unit_of_work() as uow:
            await uow.idempotency.complete(
                principal.user_id,
                key,
                response_status=answer.status,
                response_body=answer.body,
                response_headers=answer.headers,
            )
            await uow.commit()
    except Exception:
        # The work is done and must be answered; a repeat gets 409 until the record expires.
        log.warning("could not record the idempotent response", exc_info=True)
    return answer.response()


async def _release(database: Database, user_id: str, key: str) -> None:
    try:
        async with database.unit_of_work() as uow:
            await uow.idempotency.release(user_id, key)
            await uow.commit()
    except Exception:
        log.warning("could not release an idempotency key; it expires in 24 h", exc_info=True)
