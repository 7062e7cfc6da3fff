"""The whole bridge between svcs and Litestar (svcs's "write your own integration" recipe).

The registry is opened when the app starts, lives on `app.state`, and is closed when the app
shuts down (after every other lifespan, so nothing outlives its services). A handler that asks
for `svcs_container` gets a container opened for its request and closed after it.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import svcs
from litestar import Litestar
from litestar.config.app import AppConfig
from litestar.di import NamedDependency, Provide
from litestar.params import SkipValidation
from litestar.plugins import InitPlugin
from litestar.types import Scope

REGISTRY_STATE_KEY = "svcs_registry"

# How handlers ask for their request's container: `svcs_container: SvcsContainer`.
# Not validated: it is our own object, and msgspec cannot model svcs's attrs annotations.
SvcsContainer = SkipValidation[NamedDependency[svcs.Container]]


def registry_of(app: Litestar) -> svcs.Registry:
    registry: svcs.Registry = app.state[REGISTRY_STATE_KEY]
    return registry


async def provide_svcs_container(scope: Scope) -> AsyncGenerator[svcs.Container, None]:
    # The ASGI scope, not a Request: Litestar does less to provide it, on every request that asks.
    async with svcs.Container(registry_of(scope["app"])) as container:
        yield container


class SvcsPlugin(InitPlugin):
    def __init__(self, registry_factory: Callable[[], AbstractAsyncContextManager[svcs.Registry]]) -> None:
        self._registry_factory = registry_factory

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        app_config.dependencies["svcs_container"] = Provide(provide_svcs_container)
        app_config.lifespan.insert(0, self._lifespan)
        return app_config

    @asynccontextmanager
    async def _lifespan(self, app: Litestar) -> AsyncIterator[None]:
        async with self._registry_factory() as registry:
            app.state[REGISTRY_STATE_KEY] = registry
            try:
                yield
            finally:
                del app.state[REGISTRY_STATE_KEY]
