"""The billing use cases built from a request's, a job's or a command's svcs container (the HTTP
routes, the worker and the CLI share these, like `entrypoints.use_cases`)."""

from __future__ import annotations

import svcs

from core.billing.plans import PlanCatalog
from core.billing.quotas import Quotas
from core.billing.subscription_management import Subscriptions
from core.ports import Clock, Database, Ids, PrincipalCache


async def subscriptions_from(container: svcs.Container) -> Subscriptions:
    database, catalog, principals, ids, clock = await container.aget(
        Database, PlanCatalog, PrincipalCache, Ids, Clock
    )
    return Subscriptions(database=database, catalog=catalog, principals=principals, ids=ids, clock=clock)


async def quotas_from(container: svcs.Container) -> Quotas:
    database, catalog, ids, clock = await container.aget(Database, PlanCatalog, Ids, Clock)
    return Quotas(database=database, catalog=catalog, ids=ids, clock=clock)
