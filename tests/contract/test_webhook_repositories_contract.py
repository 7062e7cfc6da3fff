"""The webhook endpoint, secret and delivery repositories' contract.

Run against PostgreSQL (fresh schema, migrated) and the in-memory fake through the unit of work that
hands them out: owner scoping (another user's id finds nothing), newest-first lists and keyset
pages, the fan-out's subscription filter, one current secret version per owner with row-locked
rotations, idempotent delivery records, and the dispatcher's leases: due rows only, earliest first,
never claimed twice while leased, and disjoint between concurrent claimers.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

import msgspec
import pytest

from adapters.memory.ids import SequentialIds
from core.accounts.users import User
from core.errors import DomainError, ErrorCode
from core.events import GENERATION_FAILED, GENERATION_SUCCEEDED, SUBSCRIPTION_UPDATED
from core.ports import Database, UnitOfWork
from core.webhooks.deliveries import (
    SVIX_SCHEDULE_SECONDS,
    AttemptResult,
    DeliveryStatus,
    WebhookDelivery,
    canceled,
    new_delivery,
    record_attempt,
    retried_by_hand,
)
from core.webhooks.endpoints import EndpointStatus, WebhookEndpoint
from core.webhooks.signing_secrets import SecretOwner, WebhookSecretVersion, new_version, retire
from tests.support.billing_data import T0, add_users, make_user, open_database
from tests.support.units_of_work import committed, read, still_waiting

T = TypeVar("T")
NOT_A_UUID = "not-a-uuid"
LEASE = timedelta(seconds=30)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def make_endpoint(ids: SequentialIds, user: User, **changes: Any) -> WebhookEndpoint:
    endpoint = WebhookEndpoint(
        id=ids.new_id(), user_id=user.id, url="https://hooks.example.com/pictor", created_at=T0, updated_at=T0
    )
    return msgspec.structs.replace(endpoint, **changes)


def make_version(
    ids: SequentialIds,
    user: User,
    owner: SecretOwner = SecretOwner.ACCOUNT,
    owner_id: str | None = None,
    now: datetime = T0,
    **changes: Any,
) -> WebhookSecretVersion:
    version = new_version(
        id=ids.new_id(),
        owner=owner,
        owner_id=user.id if owner_id is None else owner_id,
        user_id=user.id,
        key_version="v1",
        salt=ids.random_bytes(32),
        now=now,
    )
    return msgspec.structs.replace(version, **changes)


def make_delivery(
    ids: SequentialIds,
    user: User,
    endpoint: WebhookEndpoint | None,
    *,
    event_id: str = "evt-1",
    url: str | None = None,
    now: datetime = T0,
    **changes: Any,
) -> WebhookDelivery:
    delivery = new_delivery(
        id=ids.new_id(),
        user_id=user.id,
        endpoint_id=None if endpoint is None else endpoint.id,
        url=url or (endpoint.url if endpoint is not None else "https://client.example.com/hook"),
        event_id=event_id,
        event_type=GENERATION_SUCCEEDED,
        event_occurred_at=T0 - timedelta(seconds=1),
        data={"generation_id": "g-1", "status": "succeeded", "n": 2, "images": 2, "ratio": 0.5},
        schedule=SVIX_SCHEDULE_SECONDS,
        now=now,
    )
    return msgspec.structs.replace(delivery, **changes)


def attempted(delivery: WebhookDelivery, result: AttemptResult, now: datetime) -> WebhookDelivery:
    """The delivery after one attempt with `result` at `now` (the pure rule, mid-range jitter)."""
    return record_attempt(delivery, result, now=now, schedule=SVIX_SCHEDULE_SECONDS, jitter=0.5)[0]


async def add_endpoints(db: Database, *endpoints: WebhookEndpoint) -> None:
    async def add(uow: UnitOfWork) -> None:
        for endpoint in endpoints:
            await uow.webhook_endpoints.add(endpoint)

    await committed(db, add)


async def add_deliveries(db: Database, *deliveries: WebhookDelivery) -> list[bool]:
    async def add(uow: UnitOfWork) -> list[bool]:
        return [await uow.webhook_deliveries.add(delivery) for delivery in deliveries]

    return await committed(db, add)


# --- endpoints ---------------------------------------------------------------------------------


async def test_an_endpoint_reads_back_as_written_in_utc_for_its_owner_only(
    db: Database, ada: User, grace: User, ids: SequentialIds
) -> None:
    plus_two = timezone(timedelta(hours=2))
    endpoint = make_endpoint(
        ids,
        ada,
        events=(GENERATION_SUCCEEDED, GENERATION_FAILED),
        created_at=T0.astimezone(plus_two),
        updated_at=T0.astimezone(plus_two),
    )
    await add_endpoints(db, endpoint)
    expected = msgspec.structs.replace(endpoint, created_at=T0, updated_at=T0)
    async with db.unit_of_work() as uow:
        stored = await uow.webhook_endpoints.get_for_user(ada.id, endpoint.id)
        assert stored == expected
        assert stored is not None and stored.created_at.utcoffset() == timedelta(0)
        assert stored.status is EndpointStatus.ACTIVE
        assert await uow.webhook_endpoints.get(endpoint.id) == expected  # any user's, for the job
        assert await uow.webhook_endpoints.get_for_user(grace.id, endpoint.id) is None
        assert await uow.webhook_endpoints.get_for_user(ada.id, ids.new_id()) is None
        assert await uow.webhook_endpoints.get_for_user(ada.id, NOT_A_UUID) is None
        assert await uow.webhook_endpoints.get_for_user(NOT_A_UUID, endpoint.id) is None
        assert await uow.webhook_endpoints.get(NOT_A_UUID) is None
        assert await uow.webhook_endpoints.get(ids.new_id()) is None
        assert await uow.webhook_endpoints.get_for_user(ada.id, endpoint.id.upper()) == expected


async def test_an_endpoint_needs_a_new_id_its_user_and_a_sane_url(
    db: Database, ada: User, ids: SequentialIds
) -> None:
    endpoint = make_endpoint(ids, ada)
    await add_endpoints(db, endpoint)
    async with db.unit_of_work() as uow:
        with pytest.raises(DomainError) as raised:
            await uow.webhook_endpoints.add(
                msgspec.structs.replace(endpoint, url="https://other.example.com")
            )
        assert raised.value.code is ErrorCode.CONFLICT
        with pytest.raises(ValueError):
            await uow.webhook_endpoints.add(make_endpoint(ids, make_user(ids, "ghost@example.com")))
        with pytest.raises(ValueError):
            await uow.webhook_endpoints.add(
                make_endpoint(ids, ada, url="https://x.example.com/" + "a" * 2048)
            )
        assert await uow.webhook_endpoints.get(endpoint.id) == endpoint  # still usable


async def test_endpoints_are_listed_newest_first_per_user(
    db: Database, ada: User, grace: User, ids: SequentialIds
) -> None:
    mine = [make_endpoint(ids, ada) for _ in range(3)]
    theirs = make_endpoint(ids, grace)
    await add_endpoints(db, mine[1], theirs, mine[0], mine[2])
    assert await read(db, lambda uow: uow.webhook_endpoints.list_for_user(ada.id)) == list(reversed(mine))
    assert await read(db, lambda uow: uow.webhook_endpoints.list_for_user(grace.id)) == [theirs]
    assert await read(db, lambda uow: uow.webhook_endpoints.list_for_user(NOT_A_UUID)) == []
    assert await read(db, lambda uow: uow.webhook_endpoints.list_for_user(ids.new_id())) == []


async def test_the_active_endpoints_of_several_users_come_by_user_oldest_first(
    db: Database, ada: User, grace: User, ids: SequentialIds
) -> None:
    everything = make_endpoint(ids, ada)  # an empty filter wants every type
    successes = make_endpoint(ids, ada, events=(GENERATION_SUCCEEDED,))
    failures = make_endpoint(ids, ada, events=(GENERATION_FAILED, SUBSCRIPTION_UPDATED))
    disabled = make_endpoint(ids, ada, status=EndpointStatus.DISABLED, disabled_reason="410 Gone")
    graces = make_endpoint(ids, grace)
    await add_endpoints(db, failures, graces, disabled, successes, everything)

    async def active(*user_ids: str) -> dict[str, list[WebhookEndpoint]]:
        return await read(db, lambda uow: uow.webhook_endpoints.list_active_for_users(user_ids))

    both = await active(ada.id, grace.id, ids.new_id(), NOT_A_UUID)
    assert both == {ada.id: [everything, successes, failures], grace.id: [graces]}
    assert await active(grace.id) == {grace.id: [graces]}
    assert await active() == {} and await active(NOT_A_UUID) == {}
    # What the fan-out then asks of each: the type against the filter.
    assert [e for e in both[ada.id] if e.wants(GENERATION_SUCCEEDED)] == [everything, successes]
    assert [e for e in both[ada.id] if e.wants("quota.threshold_reached")] == [everything]


async def test_update_replaces_the_endpoint_but_not_its_owner_or_creation(
    db: Database, ada: User, grace: User, ids: SequentialIds
) -> None:
    endpoint = make_endpoint(ids, ada)
    await add_endpoints(db, endpoint)
    disabled = msgspec.structs.replace(
        endpoint,
        url="https://new.example.com/hook",
        events=(GENERATION_FAILED,),
        status=EndpointStatus.DISABLED,
        disabled_reason="the receiver answered 410 Gone",
        updated_at=at(60),
    )
    tampered = msgspec.structs.replace(disabled, user_id=grace.id, created_at=at(60))
    await committed(db, lambda uow: uow.webhook_endpoints.update(tampered))
    assert await read(db, lambda uow: uow.webhook_endpoints.get_for_user(ada.id, endpoint.id)) == disabled

    ghost = make_endpoint(ids, ada)  # never added: an update changes nothing
    await committed(db, lambda uow: uow.webhook_endpoints.update(ghost))
    assert await read(db, lambda uow: uow.webhook_endpoints.get(ghost.id)) is None


async def test_delete_takes_the_endpoints_secrets_and_keeps_its_deliveries(
    db: Database, ada: User, grace: User, ids: SequentialIds
) -> None:
    endpoint, other = make_endpoint(ids, ada), make_endpoint(ids, ada)
    await add_endpoints(db, endpoint, other)
    current = make_version(ids, ada, SecretOwner.ENDPOINT, endpoint.id)
    retiring = make_version(ids, ada, SecretOwner.ENDPOINT, endpoint.id, expires_at=at(3600))
    others = make_version(ids, ada, SecretOwner.ENDPOINT, other.id)
    account = make_version(ids, ada, SecretOwner.ACCOUNT, ada.id)

    async def add_versions(uow: UnitOfWork) -> None:
        for version in (current, retiring, others, account):
            assert await uow.webhook_secrets.add(version) is True

    await committed(db, add_versions)
    delivery = make_delivery(ids, ada, endpoint)
    await add_deliveries(db, delivery)

    assert await committed(db, lambda uow: uow.webhook_endpoints.delete(grace.id, endpoint.id)) is False
    assert await committed(db, lambda uow: uow.webhook_endpoints.delete(ada.id, NOT_A_UUID)) is False
    async with db.unit_of_work() as uow:  # a rolled-back delete deletes nothing
        assert await uow.webhook_endpoints.delete(ada.id, endpoint.id) is True
        assert await uow.webhook_endpoints.get(endpoint.id) is None
        assert await uow.webhook_secrets.live(SecretOwner.ENDPOINT, endpoint.id, T0) == []
    assert await read(db, lambda uow: uow.webhook_endpoints.get(endpoint.id)) == endpoint

    assert await committed(db, lambda uow: uow.webhook_endpoints.delete(ada.id, endpoint.id)) is True
    assert await committed(db, lambda uow: uow.webhook_endpoints.delete(ada.id, endpoint.id)) is False
    async with db.unit_of_work() as uow:
        assert await uow.webhook_endpoints.get(endpoint.id) is None
        assert await uow.webhook_endpoints.list_for_user(ada.id) == [other]
        assert await uow.webhook_secrets.live(SecretOwner.ENDPOINT, endpoint.id, T0) == []
        assert await uow.webhook_secrets.current_for_update(SecretOwner.ENDPOINT, endpoint.id) is None
        assert await uow.webhook_secrets.live(SecretOwner.ENDPOINT, other.id, T0) == [others]
        assert await uow.webhook_secrets.live(SecretOwner.ACCOUNT, ada.id, T0) == [account]
        kept = await uow.webhook_deliveries.get_for_user(ada.id, delivery.id)
        assert kept == delivery and kept.endpoint_id == endpoint.id
        assert await uow.webhook_deliveries.list_for_endpoint(ada.id, endpoint.id, after=None, limit=10) == [
            delivery
        ]
        # The endpoint's secret slot is free again (a re-created id would get a fresh secret).
        assert await uow.webhook_secrets.add(make_version(ids, ada, SecretOwner.ENDPOINT, endpoint.id))


# --- secrets -----------------------------------------------------------------------------------


async def test_an_owner_has_one_current_version_at_a_time(
    db: Database, ada: User, grace: User, ids: SequentialIds
) -> None:
    first = make_version(ids, ada)
    assert await committed(db, lambda uow: uow.webhook_secrets.add(first)) is True
    second = make_version(ids, ada, now=at(1))
    assert await committed(db, lambda uow: uow.webhook_secrets.add(second)) is False  # nothing stored
    async with db.unit_of_work() as uow:
        assert await uow.webhook_secrets.live(SecretOwner.ACCOUNT, ada.id, at(2)) == [first]
        # A version that is not current does not compete; other owners have their own slot.
        assert await uow.webhook_secrets.add(make_version(ids, ada, expires_at=at(60))) is True
        endpoint_owner = make_version(ids, ada, SecretOwner.ENDPOINT, ada.id)  # same id, other kind
        assert await uow.webhook_secrets.add(endpoint_owner) is True
        assert await uow.webhook_secrets.add(make_version(ids, grace)) is True
        with pytest.raises(DomainError) as raised:  # a reused id is a bug, not a race
            await uow.webhook_secrets.add(msgspec.structs.replace(first, expires_at=at(60)))
        assert raised.value.code is ErrorCode.CONFLICT
        with pytest.raises(ValueError):
            await uow.webhook_secrets.add(make_version(ids, make_user(ids, "ghost@example.com")))
        assert len(await uow.webhook_secrets.live(SecretOwner.ACCOUNT, ada.id, at(2))) == 2  # still usable


async def test_of_two_racing_first_uses_one_stores_and_the_other_reads_the_winner(
    db: Database, ada: User, ids: SequentialIds
) -> None:
    mine, theirs = make_version(ids, ada), make_version(ids, ada)
    async with db.unit_of_work() as first:
        assert await first.webhook_secrets.add(mine) is True
        racing = asyncio.create_task(committed(db, lambda uow: uow.webhook_secrets.add(theirs)))
        assert await still_waiting(racing)  # the unique index makes it wait for the first to end
        await first.rollback()
    assert await racing is True  # the first gave up, so the second one's version is current

    later = make_version(ids, ada)
    async with db.unit_of_work() as first:
        assert await first.webhook_secrets.current_for_update(SecretOwner.ACCOUNT, ada.id) == theirs
        await first.webhook_secrets.update(retire(theirs, at(10)))
        assert await first.webhook_secrets.add(make_version(ids, ada, now=at(10))) is True
        racing = asyncio.create_task(committed(db, lambda uow: uow.webhook_secrets.add(later)))
        assert await still_waiting(racing)
        await first.commit()
    assert await racing is False


async def test_current_for_update_makes_rotations_take_turns(
    db: Database, ada: User, ids: SequentialIds
) -> None:
    original = make_version(ids, ada)
    await committed(db, lambda uow: uow.webhook_secrets.add(original))
    rotated = make_version(ids, ada, now=at(10))

    async with db.unit_of_work() as rotation:
        locked = await rotation.webhook_secrets.current_for_update(SecretOwner.ACCOUNT, ada.id)
        assert locked == original

        async def second_rotation() -> WebhookSecretVersion | None:
            async with db.unit_of_work() as uow:
                return await uow.webhook_secrets.current_for_update(SecretOwner.ACCOUNT, ada.id)

        waiting = asyncio.create_task(second_rotation())
        assert await still_waiting(waiting)
        await rotation.webhook_secrets.update(retire(original, at(10)))
        assert await rotation.webhook_secrets.add(rotated) is True
        await rotation.commit()

    assert await waiting == rotated  # the version the first rotation made, not a stale or no copy
    async with db.unit_of_work() as uow:
        assert await uow.webhook_secrets.current_for_update(SecretOwner.ENDPOINT, ada.id) is None
        assert await uow.webhook_secrets.current_for_update(SecretOwner.ACCOUNT, NOT_A_UUID) is None


async def test_live_versions_at_different_times_and_their_clean_up(
    db: Database, ada: User, grace: User, ids: SequentialIds
) -> None:
    first = make_version(ids, ada, now=T0)
    second = make_version(ids, ada, now=at(100))
    third = make_version(ids, ada, now=at(200))
    theirs = make_version(ids, grace, now=T0, expires_at=at(150))

    async def rotate(uow: UnitOfWork) -> None:
        # Two rotations: first retires at 100 (ends 100 + 24 h), second at 200 (ends 200 + 24 h).
        await uow.webhook_secrets.add(first)
        await uow.webhook_secrets.update(retire(first, at(100)))
        await uow.webhook_secrets.add(second)
        await uow.webhook_secrets.update(retire(second, at(200)))
        await uow.webhook_secrets.add(third)
        await uow.webhook_secrets.add(theirs)

    await committed(db, rotate)
    first_end, second_end = at(100) + timedelta(hours=24), at(200) + timedelta(hours=24)
    retired_first = msgspec.structs.replace(first, expires_at=first_end)
    retired_second = msgspec.structs.replace(second, expires_at=second_end)

    async def live(now: datetime) -> list[WebhookSecretVersion]:
        return await read(db, lambda uow: uow.webhook_secrets.live(SecretOwner.ACCOUNT, ada.id, now))

    assert await live(at(300)) == [third, retired_second, retired_first]  # newest first
    assert await live(first_end - timedelta(microseconds=1)) == [third, retired_second, retired_first]
    assert await live(first_end) == [third, retired_second]  # its end is the first instant it stops
    assert await live(second_end + timedelta(days=365)) == [third]
    assert await read(db, lambda uow: uow.webhook_secrets.live(SecretOwner.ACCOUNT, NOT_A_UUID, T0)) == []

    assert await committed(db, lambda uow: uow.webhook_secrets.delete_expired(at(100))) == 0
    assert await committed(db, lambda uow: uow.webhook_secrets.delete_expired(first_end)) == 2  # + grace's
    assert await live(at(300)) == [third, retired_second]  # deleting changed nothing that signs
    async with db.unit_of_work() as uow:  # a rolled-back clean-up deletes nothing
        assert await uow.webhook_secrets.delete_expired(second_end + timedelta(days=1)) == 1
    assert await committed(db, lambda uow: uow.webhook_secrets.delete_expired(second_end)) == 1
    assert await committed(db, lambda uow: uow.webhook_secrets.delete_expired(second_end)) == 0
    assert await live(at(300)) == [third]
    assert await read(db, lambda uow: uow.webhook_secrets.live(SecretOwner.ACCOUNT, grace.id, T0)) == []


async def test_a_secret_update_writes_only_expires_at(db: Database, ada: User, ids: SequentialIds) -> None:
    version = make_version(ids, ada)
    await committed(db, lambda uow: uow.webhook_secrets.add(version))
    tampered = msgspec.structs.replace(
        version, salt="AAAA", key_version="v9", created_at=at(5), expires_at=at(3600)
    )
    await committed(db, lambda uow: uow.webhook_secrets.update(tampered))
    assert await read(db, lambda uow: uow.webhook_secrets.live(SecretOwner.ACCOUNT, ada.id, T0)) == [
        msgspec.structs.replace(version, expires_at=at(3600))
    ]
    # Making it current again while another version is current breaks the one-current rule.
    await committed(db, lambda uow: uow.webhook_secrets.add(make_version(ids, ada, now=at(10))))
    async with db.unit_of_work() as uow:
        with pytest.raises(ValueError):
            await uow.webhook_secrets.update(version)


# --- deliveries --------------------------------------------------------------------------------


async def test_a_delivery_reads_back_as_written_for_its_owner_only(
    db: Database, ada: User, grace: User, ids: SequentialIds
) -> None:
    endpoint = make_endpoint(ids, ada)
    await add_endpoints(db, endpoint)
    plus_two = timezone(timedelta(hours=2))
    delivery = make_delivery(ids, ada, endpoint, now=T0.astimezone(plus_two))
    assert await add_deliveries(db, delivery) == [True]
    expected = msgspec.structs.replace(delivery, created_at=T0, updated_at=T0, next_attempt_at=T0)
    async with db.unit_of_work() as uow:
        stored = await uow.webhook_deliveries.get_for_user(ada.id, delivery.id)
        assert stored == expected
        assert stored is not None and stored.status is DeliveryStatus.PENDING
        assert stored.created_at.utcoffset() == timedelta(0) and stored.data["ratio"] == 0.5
        assert await uow.webhook_deliveries.get_for_user(grace.id, delivery.id) is None
        assert await uow.webhook_deliveries.get_for_user(ada.id, NOT_A_UUID) is None
        assert await uow.webhook_deliveries.get_for_user(NOT_A_UUID, delivery.id) is None
        assert await uow.webhook_deliveries.get_for_update(delivery.id) == expected
        assert await uow.webhook_deliveries.get_for_update(ids.new_id()) is None
        assert await uow.webhook_deliveries.get_for_update(NOT_A_UUID) is None


async def test_adding_a_delivery_twice_for_one_event_and_target_adds_nothing(
    db: Database, ada: User, ids: SequentialIds
) -> None:
    endpoint, other = make_endpoint(ids, ada), make_endpoint(ids, ada)
    await add_endpoints(db, endpoint, other)
    first = make_delivery(ids, ada, endpoint, event_id="evt-1")
    per_request = make_delivery(ids, ada, None, event_id="evt-1", url="https://client.example.com/a")
    assert await add_deliveries(db, first, per_request) == [True, True]

    outcomes = await add_deliveries(
        db,
        make_delivery(ids, ada, endpoint, event_id="evt-1"),  # the event re-published: nothing
        make_delivery(ids, ada, None, event_id="evt-1", url="https://client.example.com/a"),  # nothing
        make_delivery(ids, ada, other, event_id="evt-1"),  # another endpoint
        make_delivery(ids, ada, endpoint, event_id="evt-2"),  # another event
        make_delivery(ids, ada, None, event_id="evt-1", url="https://client.example.com/b"),  # other URL
        # The endpoint's URL without the endpoint: a per-request target of its own.
        make_delivery(ids, ada, None, event_id="evt-1", url=endpoint.url),
        first,  # the very same delivery again
    )
    assert outcomes == [False, False, True, True, True, True, False]
    async with db.unit_of_work() as uow:
        assert (
            len(await uow.webhook_deliveries.list_for_endpoint(ada.id, endpoint.id, after=None, limit=10))
            == 2
        )
        with pytest.raises(DomainError) as raised:  # an id taken by another event is the caller's bug
            await uow.webhook_deliveries.add(make_delivery(ids, ada, endpoint, event_id="evt-9", id=first.id))
        assert raised.value.code is ErrorCode.CONFLICT
        with pytest.raises(ValueError):
            await uow.webhook_deliveries.add(make_delivery(ids, make_user(ids, "ghost@example.com"), None))
        with pytest.raises(ValueError):  # a pending delivery that would never be due
            await uow.webhook_deliveries.add(
                make_delivery(ids, ada, endpoint, event_id="e", next_attempt_at=None)
            )
        assert await uow.webhook_deliveries.get_for_user(ada.id, first.id) == first  # still usable


async def test_adding_many_deliveries_stores_the_new_ones_and_skips_the_known(
    db: Database, ada: User, grace: User, ids: SequentialIds
) -> None:
    endpoint, graces = make_endpoint(ids, ada), make_endpoint(ids, grace)
    await add_endpoints(db, endpoint, graces)
    known = make_delivery(ids, ada, endpoint, event_id="evt-1")
    assert await add_deliveries(db, known) == [True]
    batch = [
        make_delivery(ids, ada, endpoint, event_id="evt-1"),  # the same event and target: skipped
        make_delivery(ids, ada, endpoint, event_id="evt-2"),
        make_delivery(ids, ada, None, event_id="evt-2", url="https://client.example.com/a"),
        make_delivery(ids, grace, graces, event_id="evt-3"),
    ]
    assert await committed(db, lambda uow: uow.webhook_deliveries.add_many(batch)) == 3
    assert await committed(db, lambda uow: uow.webhook_deliveries.add_many(batch)) == 0  # all known now
    assert await committed(db, lambda uow: uow.webhook_deliveries.add_many([])) == 0
    for delivery in batch[1:]:
        stored = await read(db, lambda uow, d=delivery: uow.webhook_deliveries.get_for_user(d.user_id, d.id))
        assert stored == delivery
    assert await read(db, lambda uow: uow.webhook_deliveries.get_for_user(ada.id, batch[0].id)) is None

    async def rolled_back(uow: UnitOfWork) -> None:
        await uow.webhook_deliveries.add_many([make_delivery(ids, ada, endpoint, event_id="evt-4")])
        await uow.rollback()

    await read(db, rolled_back)
    page = await read(
        db, lambda uow: uow.webhook_deliveries.list_for_endpoint(ada.id, endpoint.id, after=None, limit=10)
    )
    assert sorted(d.event_id for d in page) == ["evt-1", "evt-2"]


async def test_a_concurrent_add_of_the_same_event_waits_and_adds_nothing(
    db: Database, ada: User, ids: SequentialIds
) -> None:
    endpoint = make_endpoint(ids, ada)
    await add_endpoints(db, endpoint)
    async with db.unit_of_work() as publisher:
        assert await publisher.webhook_deliveries.add(make_delivery(ids, ada, endpoint)) is True
        again = make_delivery(ids, ada, endpoint)
        racing = asyncio.create_task(committed(db, lambda uow: uow.webhook_deliveries.add(again)))
        assert await still_waiting(racing)
        await publisher.commit()
    assert await racing is False


async def test_deliveries_of_an_endpoint_are_listed_newest_first_in_keyset_pages(
    db: Database, ada: User, grace: User, ids: SequentialIds
) -> None:
    endpoint, other = make_endpoint(ids, ada), make_endpoint(ids, ada)
    await add_endpoints(db, endpoint, other)
    mine = [make_delivery(ids, ada, endpoint, event_id=f"evt-{n}") for n in range(5)]
    elsewhere = make_delivery(ids, ada, other, event_id="evt-0")
    per_request = make_delivery(ids, ada, None, event_id="evt-0")
    await add_deliveries(db, *mine, elsewhere, per_request)
    newest_first = list(reversed(mine))

    async def page(user_id: str, endpoint_id: str, after: str | None, limit: int) -> list[WebhookDelivery]:
        return await read(
            db,
            lambda uow: uow.webhook_deliveries.list_for_endpoint(
                user_id, endpoint_id, after=after, limit=limit
            ),
        )

    first = await page(ada.id, endpoint.id, None, 2)
    assert first == newest_first[:2]
    second = await page(ada.id, endpoint.id, first[-1].id, 2)
    assert second == newest_first[2:4]
    third = await page(ada.id, endpoint.id, second[-1].id, 2)
    assert third == newest_first[4:]
    assert await page(ada.id, endpoint.id, third[-1].id, 2) == []
    assert await page(ada.id, other.id, None, 10) == [elsewhere]
    assert await page(grace.id, endpoint.id, None, 10) == []  # another user's id finds nothing
    assert await page(ada.id, endpoint.id, None, 0) == []
    assert await page(NOT_A_UUID, endpoint.id, None, 10) == []
    assert await page(ada.id, NOT_A_UUID, None, 10) == []
    assert await page(ada.id, endpoint.id, NOT_A_UUID, 10) == []


async def test_claim_due_leases_the_due_deliveries_earliest_first(
    db: Database, ada: User, grace: User, ids: SequentialIds
) -> None:
    endpoint = make_endpoint(ids, ada)
    await add_endpoints(db, endpoint)
    now = at(600)
    late = make_delivery(ids, ada, endpoint, event_id="late", next_attempt_at=at(500))
    early = make_delivery(ids, grace, None, event_id="early", next_attempt_at=at(100))
    on_time = make_delivery(ids, ada, endpoint, event_id="on-time", next_attempt_at=now)
    future = make_delivery(ids, ada, endpoint, event_id="future", next_attempt_at=now + timedelta(seconds=1))
    leased = make_delivery(
        ids, ada, endpoint, event_id="leased", next_attempt_at=at(50), locked_until=at(601)
    )
    lease_over = make_delivery(
        ids, ada, endpoint, event_id="lease-over", next_attempt_at=at(300), locked_until=now
    )
    done = make_delivery(ids, ada, endpoint, event_id="done")
    done = attempted(done, AttemptResult(status_code=204), T0)
    gone = canceled(make_delivery(ids, ada, endpoint, event_id="gone"), "endpoint deleted", T0)
    await add_deliveries(db, late, early, on_time, future, leased, lease_over, done, gone)

    lease_until = now + LEASE
    claimed = await committed(db, lambda uow: uow.webhook_deliveries.claim_due(now, 3, lease_until))
    expected = [msgspec.structs.replace(d, locked_until=lease_until) for d in (early, lease_over, late)]
    assert claimed == expected  # returned as leased
    async with db.unit_of_work() as uow:
        for delivery in expected:
            assert await uow.webhook_deliveries.get_for_user(delivery.user_id, delivery.id) == delivery
        assert await uow.webhook_deliveries.claim_due(now, 0, lease_until) == []

    rest = await committed(db, lambda uow: uow.webhook_deliveries.claim_due(now, 10, lease_until))
    assert [d.id for d in rest] == [on_time.id]
    # Leased rows are not claimed again while their lease lies ahead: halfway through it, only the
    # row whose older lease ran out at 601 and the one that fell due at 601 are claimed ...
    halfway = await committed(db, lambda uow: uow.webhook_deliveries.claim_due(now + LEASE / 2, 10, at(9999)))
    assert halfway == [msgspec.structs.replace(d, locked_until=at(9999)) for d in (leased, future)]
    # ... and they are claimed again once it has passed (the worker that held them died).
    again = await committed(db, lambda uow: uow.webhook_deliveries.claim_due(lease_until, 10, at(9000)))
    assert [d.id for d in again] == [early.id, lease_over.id, late.id, on_time.id]
    assert all(d.locked_until == at(9000) for d in again)


async def test_concurrent_claimers_get_disjoint_deliveries_without_waiting(
    db: Database, ada: User, ids: SequentialIds
) -> None:
    endpoint = make_endpoint(ids, ada)
    await add_endpoints(db, endpoint)
    deliveries = [
        make_delivery(ids, ada, endpoint, event_id=f"evt-{n}", next_attempt_at=at(n)) for n in range(5)
    ]
    await add_deliveries(db, *deliveries)
    now, lease_until = at(100), at(130)
    ordered = [d.id for d in deliveries]

    async with db.unit_of_work() as first, db.unit_of_work() as second:
        first_claim = await first.webhook_deliveries.claim_due(now, 2, lease_until)
        second_claim = await second.webhook_deliveries.claim_due(now, 2, lease_until)  # skips, no wait
        assert [d.id for d in first_claim] == ordered[:2]
        assert [d.id for d in second_claim] == ordered[2:4]
        async with db.unit_of_work() as third:
            assert [d.id for d in await third.webhook_deliveries.claim_due(now, 10, lease_until)] == ordered[
                4:
            ]
        await first.commit()
        await second.rollback()  # its rows are due again at once

    assert [
        d.id for d in await read(db, lambda uow: uow.webhook_deliveries.claim_due(now, 10, lease_until))
    ] == (ordered[2:])


async def test_a_delivery_held_by_a_job_is_not_claimed(db: Database, ada: User, ids: SequentialIds) -> None:
    endpoint = make_endpoint(ids, ada)
    await add_endpoints(db, endpoint)
    delivery = make_delivery(ids, ada, endpoint)
    await add_deliveries(db, delivery)
    async with db.unit_of_work() as job:
        assert await job.webhook_deliveries.get_for_update(delivery.id) == delivery
        assert await read(db, lambda uow: uow.webhook_deliveries.claim_due(T0, 10, at(30))) == []
    assert len(await read(db, lambda uow: uow.webhook_deliveries.claim_due(T0, 10, at(30)))) == 1


async def test_start_attempt_takes_the_delivery_only_for_its_dispatch_and_attempt(
    db: Database, ada: User, ids: SequentialIds
) -> None:
    endpoint = make_endpoint(ids, ada)
    await add_endpoints(db, endpoint)
    delivery = make_delivery(ids, ada, endpoint)
    # Finished, though a lease like the dispatch's is still stored: not pending is enough to refuse.
    finished = msgspec.structs.replace(
        canceled(make_delivery(ids, ada, endpoint, event_id="evt-2"), "endpoint deleted", T0),
        locked_until=at(60),
    )
    await add_deliveries(db, delivery, finished)

    async def start(
        delivery_id: str, attempt: int, dispatched_until: datetime, lease_until: datetime
    ) -> WebhookDelivery | None:
        return await committed(
            db,
            lambda uow: uow.webhook_deliveries.start_attempt(
                delivery_id, attempt, dispatched_until, lease_until
            ),
        )

    assert await start(delivery.id, 1, at(60), at(75)) is None  # never dispatched
    dispatched = await committed(db, lambda uow: uow.webhook_deliveries.claim_due(T0, 10, at(60)))
    assert [d.id for d in dispatched] == [delivery.id]

    assert await start(delivery.id, 0, at(60), at(75)) is None
    assert await start(delivery.id, 2, at(60), at(75)) is None  # attempt 1 has not been made
    assert await start(delivery.id, 1, at(59), at(75)) is None  # not this dispatch's lease
    assert await start(finished.id, 1, at(60), at(75)) is None
    assert await start(NOT_A_UUID, 1, at(60), at(75)) is None
    assert await start(ids.new_id(), 1, at(60), at(75)) is None
    plus_two = timezone(timedelta(hours=2))
    started = await start(delivery.id, 1, at(60).astimezone(plus_two), at(75))  # the same instant
    assert started == msgspec.structs.replace(delivery, locked_until=at(75))
    assert await read(db, lambda uow: uow.webhook_deliveries.get_for_user(ada.id, delivery.id)) == started
    assert await start(delivery.id, 1, at(60), at(80)) is None  # a duplicate job of that dispatch

    # The sender died: its lease runs out, the delivery is dispatched again, and only the new
    # dispatch's job may take it.
    again = await committed(db, lambda uow: uow.webhook_deliveries.claim_due(at(75), 10, at(135)))
    assert [d.id for d in again] == [delivery.id]
    assert await start(delivery.id, 1, at(60), at(150)) is None
    retaken = await start(delivery.id, 1, at(135), at(150))
    assert retaken == msgspec.structs.replace(delivery, locked_until=at(150))

    # The attempt fails and is recorded, which releases the lease: attempt 2 waits for its dispatch.
    retrying = attempted(retaken, AttemptResult(status_code=503), at(76))
    await committed(db, lambda uow: uow.webhook_deliveries.update(retrying))
    assert await start(delivery.id, 1, at(150), at(160)) is None
    assert await start(delivery.id, 2, at(150), at(160)) is None


async def test_start_attempt_waits_for_a_job_holding_the_delivery(
    db: Database, ada: User, ids: SequentialIds
) -> None:
    endpoint = make_endpoint(ids, ada)
    await add_endpoints(db, endpoint)
    sent, abandoned = make_delivery(ids, ada, endpoint), make_delivery(ids, ada, endpoint, event_id="evt-2")
    await add_deliveries(db, sent, abandoned)
    await committed(db, lambda uow: uow.webhook_deliveries.claim_due(T0, 10, at(60)))

    async def start(delivery_id: str) -> WebhookDelivery | None:
        return await committed(
            db, lambda uow: uow.webhook_deliveries.start_attempt(delivery_id, 1, at(60), at(75))
        )

    async with db.unit_of_work() as job:
        locked = await job.webhook_deliveries.get_for_update(sent.id)
        assert locked is not None
        duplicate = asyncio.create_task(start(sent.id))
        assert await still_waiting(duplicate)
        await job.webhook_deliveries.update(attempted(locked, AttemptResult(status_code=200), at(1)))
        await job.commit()
    assert await duplicate is None  # it saw the attempt made, not a stale pending copy

    async with db.unit_of_work() as job:
        assert await job.webhook_deliveries.get_for_update(abandoned.id) is not None
        waiting = asyncio.create_task(start(abandoned.id))
        assert await still_waiting(waiting)
        await job.rollback()
    taken = await waiting  # the holder changed nothing, so the dispatch's job goes ahead
    assert taken is not None and taken.id == abandoned.id and taken.locked_until == at(75)


async def test_update_replaces_the_state_but_not_the_owner_target_or_event(
    db: Database, ada: User, grace: User, ids: SequentialIds
) -> None:
    endpoint = make_endpoint(ids, ada)
    await add_endpoints(db, endpoint)
    delivery = make_delivery(ids, ada, endpoint)
    await add_deliveries(db, delivery)
    failed = attempted(
        msgspec.structs.replace(delivery, attempts=7, locked_until=at(15)),
        AttemptResult(status_code=500, error="x" * 600),
        at(1),
    )
    assert failed.status is DeliveryStatus.FAILED and failed.locked_until is None
    tampered = msgspec.structs.replace(
        failed,
        user_id=grace.id,
        endpoint_id=None,
        url="https://elsewhere.example.com",
        event_id="evt-other",
        event_type=GENERATION_FAILED,
        data={},
        created_at=at(99),
    )
    await committed(db, lambda uow: uow.webhook_deliveries.update(tampered))
    assert await read(db, lambda uow: uow.webhook_deliveries.get_for_user(ada.id, delivery.id)) == failed

    # Retried by hand: pending again and dispatched at once, so its job (attempt 9) takes it and no
    # dispatcher claims it meanwhile.
    by_hand = retried_by_hand(failed, at(3600), at(3660))
    await committed(db, lambda uow: uow.webhook_deliveries.update(by_hand))
    assert await read(db, lambda uow: uow.webhook_deliveries.get_for_user(ada.id, delivery.id)) == by_hand
    assert await read(db, lambda uow: uow.webhook_deliveries.claim_due(at(3600), 10, at(4000))) == []
    taken = await committed(
        db, lambda uow: uow.webhook_deliveries.start_attempt(delivery.id, 9, at(3660), at(3680))
    )
    assert taken == msgspec.structs.replace(by_hand, locked_until=at(3680))

    ghost = make_delivery(ids, ada, endpoint, event_id="never-added")
    await committed(db, lambda uow: uow.webhook_deliveries.update(ghost))
    assert await read(db, lambda uow: uow.webhook_deliveries.get_for_user(ada.id, ghost.id)) is None


async def test_cancel_pending_for_endpoint_cancels_only_its_pending_deliveries(
    db: Database, ada: User, ids: SequentialIds
) -> None:
    endpoint, other = make_endpoint(ids, ada), make_endpoint(ids, ada)
    await add_endpoints(db, endpoint, other)
    pending = [make_delivery(ids, ada, endpoint, event_id=f"evt-{n}") for n in range(2)]
    leased = make_delivery(ids, ada, endpoint, event_id="evt-leased", locked_until=at(30))
    succeeded = attempted(
        make_delivery(ids, ada, endpoint, event_id="evt-ok"), AttemptResult(status_code=200), T0
    )
    elsewhere = make_delivery(ids, ada, other, event_id="evt-0")
    await add_deliveries(db, *pending, leased, succeeded, elsewhere)

    now, reason = at(60), "the endpoint was deleted"
    assert (
        await committed(
            db, lambda uow: uow.webhook_deliveries.cancel_pending_for_endpoint(endpoint.id, reason, now)
        )
        == 3
    )
    async with db.unit_of_work() as uow:
        for delivery in (*pending, leased):
            stored = await uow.webhook_deliveries.get_for_user(ada.id, delivery.id)
            assert stored == canceled(delivery, reason, now)
            assert stored is not None and stored.locked_until is None and stored.next_attempt_at is None
        assert await uow.webhook_deliveries.get_for_user(ada.id, succeeded.id) == succeeded
        assert await uow.webhook_deliveries.get_for_user(ada.id, elsewhere.id) == elsewhere
        assert await uow.webhook_deliveries.cancel_pending_for_endpoint(endpoint.id, reason, now) == 0
        assert await uow.webhook_deliveries.cancel_pending_for_endpoint(NOT_A_UUID, reason, now) == 0
    long_reason = "r" * 1000
    assert (
        await committed(
            db, lambda uow: uow.webhook_deliveries.cancel_pending_for_endpoint(other.id, long_reason, now)
        )
        == 1
    )
    stored = await read(db, lambda uow: uow.webhook_deliveries.get_for_user(ada.id, elsewhere.id))
    assert stored == canceled(elsewhere, long_reason, now)  # the reason cut as the rule cuts it


# --- transactions ------------------------------------------------------------------------------


async def test_rollback_leaves_nothing_behind(db: Database, ada: User, ids: SequentialIds) -> None:
    endpoint = make_endpoint(ids, ada)
    delivery = make_delivery(ids, ada, endpoint)
    async with db.unit_of_work() as uow:
        await uow.webhook_endpoints.add(endpoint)
        assert await uow.webhook_secrets.add(make_version(ids, ada, SecretOwner.ENDPOINT, endpoint.id))
        assert await uow.webhook_deliveries.add(delivery)
        # A unit of work sees its own writes; nobody else does before it commits.
        assert await uow.webhook_endpoints.list_for_user(ada.id) == [endpoint]
        assert await uow.webhook_deliveries.get_for_user(ada.id, delivery.id) == delivery
        assert await read(db, lambda other: other.webhook_endpoints.list_for_user(ada.id)) == []
        assert await read(db, lambda other: other.webhook_deliveries.claim_due(T0, 10, at(30))) == []
        await uow.rollback()
    async with db.unit_of_work() as uow:
        assert await uow.webhook_endpoints.get(endpoint.id) is None
        assert await uow.webhook_secrets.live(SecretOwner.ENDPOINT, endpoint.id, T0) == []
        assert await uow.webhook_deliveries.get_for_user(ada.id, delivery.id) is None
        assert await uow.webhook_deliveries.claim_due(T0, 10, at(30)) == []
        # The unique slots were freed too.
        assert await uow.webhook_secrets.add(make_version(ids, ada, SecretOwner.ENDPOINT, endpoint.id))


async def test_a_finished_unit_of_work_refuses_webhook_work(
    db: Database, ada: User, ids: SequentialIds
) -> None:
    uow = db.unit_of_work()
    async with uow:
        await uow.commit()
        with pytest.raises(RuntimeError):
            await uow.webhook_endpoints.list_for_user(ada.id)
        with pytest.raises(RuntimeError):
            await uow.webhook_secrets.live(SecretOwner.ACCOUNT, ada.id, T0)
        with pytest.raises(RuntimeError):
            await uow.webhook_deliveries.claim_due(T0, 10, at(30))


async def test_deleting_a_user_deletes_their_webhooks(postgres_url: str) -> None:
    # PostgreSQL only: users are never deleted through a port, so the fake has no deletion to mirror.
    import psycopg

    ids = SequentialIds()
    async with open_database(postgres_url) as db:
        ada, grace = make_user(ids, "ada@example.com"), make_user(ids, "grace@example.com")
        await add_users(db, ada, grace)
        endpoints = {user.id: make_endpoint(ids, user) for user in (ada, grace)}
        await add_endpoints(db, *endpoints.values())

        async def add_rest(uow: UnitOfWork) -> None:
            for user in (ada, grace):
                endpoint = endpoints[user.id]
                assert await uow.webhook_secrets.add(
                    make_version(ids, user, SecretOwner.ENDPOINT, endpoint.id)
                )
                assert await uow.webhook_secrets.add(make_version(ids, user))
                # Event ids are unique across users, as the outbox's are.
                event_id = f"evt-{user.email}"
                assert await uow.webhook_deliveries.add(make_delivery(ids, user, endpoint, event_id=event_id))
                assert await uow.webhook_deliveries.add(make_delivery(ids, user, None, event_id=event_id))

        await committed(db, add_rest)
        async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
            await conn.execute("DELETE FROM users WHERE id = %s", (ada.id,))
            counts: dict[str, dict[str, int]] = {}
            for table in ("webhook_endpoints", "webhook_secrets", "webhook_deliveries"):
                cursor = await conn.execute(f"SELECT user_id::text, count(*) FROM {table} GROUP BY user_id")
                counts[table] = dict(await cursor.fetchall())
        assert counts == {
            "webhook_endpoints": {grace.id: 1},
            "webhook_secrets": {grace.id: 2},
            "webhook_deliveries": {grace.id: 2},
        }
