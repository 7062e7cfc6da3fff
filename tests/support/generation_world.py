"""The generation use cases on memory fakes, with users, uploads and sleeps made by hand (unit tests)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import msgspec

from adapters.memory.clock import ManualClock
from adapters.memory.database import MemoryDatabase
from adapters.memory.ids import SequentialIds
from adapters.memory.job_queue import MemoryJobQueue
from core.accounts.principal import SESSION_SCOPES, CredentialKind, Principal
from core.accounts.users import Role, User, UserStatus
from core.billing.plans import Plan, PlanCatalog, PlanRateLimit, QueuePriority
from core.billing.quotas import Quotas
from core.billing.usage import QuotaReservation
from core.events import from_outbox
from core.generations.generation import Generation
from core.generations.prompt_policy import PromptPolicy
from core.generations.service import Generations
from core.generations.uploads import Upload, upload_blob_key

START = datetime(2026, 3, 2, 9, tzinfo=UTC)
STEPS = 4


def plan(code: str, price: int, *, images: int, jobs: int, priority: bool = False) -> Plan:
    return Plan(
        code=code,
        name=code.title(),
        monthly_price_cents=price,
        currency="USD",
        monthly_images=images,
        rate_limit=PlanRateLimit(requests=60, per_seconds=60, burst=10),
        max_concurrent_jobs=jobs,
        max_image_pixels=1024 * 1024,
        priority=QueuePriority.PRIORITY if priority else QueuePriority.STANDARD,
        image_retention_days=7,
    )


CATALOG = PlanCatalog(
    [plan("free", 0, images=6, jobs=3), plan("pro", 2000, images=100, jobs=8, priority=True)],
    default_plan="free",
)


class HandSleep:
    """A `sleep` that never waits: it records each pause and runs `between` (a test's way of
    changing the world while a poller sleeps)."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self.between: Callable[[int], Awaitable[None]] | None = None

    async def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)
        if self.between is not None:
            await self.between(len(self.pauses))


class GenerationWorld:
    def __init__(self) -> None:
        self.clock = ManualClock(START)
        self.ids = SequentialIds()
        self.database = MemoryDatabase()
        self.jobs = MemoryJobQueue()
        self.sleep = HandSleep()
        self.quotas = Quotas(database=self.database, catalog=CATALOG, ids=self.ids, clock=self.clock)
        self.generations = Generations(
            database=self.database,
            catalog=CATALOG,
            quotas=self.quotas,
            jobs=self.jobs,
            policy=PromptPolicy(["forbidden"]),
            ids=self.ids,
            clock=self.clock,
            steps=STEPS,
            sleep=self.sleep,
        )

    async def user(self, email: str = "ann@example.com", *, plan: str = "free") -> Principal:
        user = User(
            id=self.ids.new_id(),
            email=email,
            email_normalized=email,
            display_name=None,
            role=Role.USER,
            status=UserStatus.ACTIVE,
            email_verified=True,
            password_hash="x",
            plan=plan,
            created_at=START,
            updated_at=START,
        )
        async with self.database.unit_of_work() as uow:
            await uow.users.add(user)
            await uow.commit()
        return Principal(
            user=user, scopes=SESSION_SCOPES, credential=CredentialKind.SESSION, credential_id="s1"
        )

    async def principal_of(self, generation: Generation) -> Principal:
        [user] = [u for u in self.database.committed_users() if u.id == generation.user_id]
        return Principal(
            user=user, scopes=SESSION_SCOPES, credential=CredentialKind.SESSION, credential_id="s1"
        )

    async def upload(self, owner: Principal) -> Upload:
        upload_id = self.ids.new_id()
        upload = Upload(
            id=upload_id,
            user_id=owner.user_id,
            blob_key=upload_blob_key(owner.user_id, upload_id, "image/png"),
            content_type="image/png",
            width=64,
            height=64,
            bytes=100,
            sha256="0" * 64,
            created_at=START,
        )
        async with self.database.unit_of_work() as uow:
            await uow.uploads.add(upload)
            await uow.commit()
        return upload

    async def stored(self, generation_id: str) -> Generation:
        async with self.database.unit_of_work() as uow:
            generation = await uow.generations.get_for_update(generation_id)
        assert generation is not None
        return generation

    async def replace(self, generation: Generation) -> None:
        async with self.database.unit_of_work() as uow:
            await uow.generations.update(generation)
            await uow.commit()

    def images_used(self, user_id: str) -> int:
        return sum(p.images_used for p in self.database.committed_usage() if p.user_id == user_id)

    def reservation(self, generation_id: str) -> QuotaReservation:
        [reservation] = [r for r in self.database.committed_reservations() if r.id == generation_id]
        return reservation

    def events(self, type_: str) -> list[dict[str, Any]]:
        """The `data` of the committed events of `type_`, as JSON would carry it."""
        return [
            msgspec.json.decode(msgspec.json.encode(from_outbox(m).data))
            for m in self.database.committed_outbox()
            if m.type == type_
        ]
