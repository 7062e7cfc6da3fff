"""The Litestar application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, cast

import svcs
from litestar import Litestar, get
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin, YamlRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.response import Redirect
from litestar.static_files import create_static_files_router
from swagger_ui_bundle import swagger_ui_path

from entrypoints.generation_policy import upload_limits
from entrypoints.http.auth import require_json_bodies
from entrypoints.http.error_tracking import ErrorTrackingMiddleware
from entrypoints.http.metrics_sampling import metrics_sampling_lifespan
from entrypoints.http.openapi_fixes import StrictStructSchemaPlugin
from entrypoints.http.problems import problem_details_plugin
from entrypoints.http.request_context import RequestContext
from entrypoints.http.routes.accounts import AuthController, MeController
from entrypoints.http.routes.admin import AdminController
from entrypoints.http.routes.admin_errors import AdminErrorsController
from entrypoints.http.routes.admin_metrics import AdminMetricsController
from entrypoints.http.routes.admin_queues import AdminQueuesController
from entrypoints.http.routes.api_keys import ApiKeysController
from entrypoints.http.routes.billing import SubscriptionController, get_usage
from entrypoints.http.routes.files import download_file
from entrypoints.http.routes.flags import AdminFlagsController, get_flags
from entrypoints.http.routes.generations import GenerationsController
from entrypoints.http.routes.health import live, ready
from entrypoints.http.routes.metrics import MetricsController
from entrypoints.http.routes.openai_images import OpenAIImagesController
from entrypoints.http.routes.plans import list_plans
from entrypoints.http.routes.problem_types import get_problem_type, list_problem_types
from entrypoints.http.routes.uploads import uploads_router
from entrypoints.http.routes.webhooks import WebhookEndpointsController, WebhookSecretController
from entrypoints.http.shutdown import ShutdownState
from entrypoints.http.svcs_plugin import SvcsPlugin
from entrypoints.settings import Settings
from entrypoints.wiring import service_registry

VERSION = "0.1.0"

RegistryFactory = Callable[[], AbstractAsyncContextManager[svcs.Registry]]
Lifespan = Callable[[Litestar], AbstractAsyncContextManager[None]]


@get("/docs", include_in_schema=False, sync_to_thread=False)
def docs() -> Redirect:
    return Redirect("/schema/swagger")


def _openapi_config() -> OpenAPIConfig:
    assets = "/docs/assets"
    return OpenAPIConfig(
        title="Pictor",
        version=VERSION,
        description="Image generation as a service. Errors are RFC 9457 problem+json with a stable `code`.",
        path="/schema",
        components=Components(
            security_schemes={
                "bearer": SecurityScheme(
                    type="http",
                    scheme="bearer",
                    description="A session token (from POST /v1/auth/login) or an API key (`pk_live_…`).",
                )
            }
        ),
        render_plugins=[
            JsonRenderPlugin(),  # /schema/openapi.json
            YamlRenderPlugin(),
            SwaggerRenderPlugin(
                path="/swagger",
                js_url=f"{assets}/swagger-ui-bundle.js",
                css_url=f"{assets}/swagger-ui.css",
                standalone_preset_js_url=f"{assets}/swagger-ui-standalone-preset.js",
            ),
        ],
    )


def create_app(
    settings: Settings,
    *,
    registry_factory: RegistryFactory | None = None,
    extra_lifespans: Sequence[Lifespan] = (),
    drain_file: Path | None = None,
) -> Litestar:
    """The HTTP API for `settings`.

    `registry_factory` replaces the wiring (tests pass one over in-memory adapters);
    `extra_lifespans` run inside the registry's lifetime (the embedded worker uses it);
    `drain_file`, once it exists, makes readiness fail (`pictor serve` creates it on SIGTERM).
    """
    factory = registry_factory or (lambda: service_registry(settings))
    shutdown = ShutdownState(drain_file)
    error_tracking = ErrorTrackingMiddleware()  # counts while its lifespan runs

    @asynccontextmanager
    async def mark_draining(_: Litestar) -> AsyncIterator[None]:
        yield
        shutdown.begin()  # first thing on shutdown: readiness fails

    app = Litestar(
        route_handlers=[
            live,
            ready,
            MetricsController,
            download_file,
            AuthController,
            MeController,
            ApiKeysController,
            AdminController,
            AdminErrorsController,
            AdminMetricsController,
            AdminQueuesController,
            AdminFlagsController,
            get_flags,
            list_plans,
            SubscriptionController,
            get_usage,
            uploads_router(upload_limits(settings)),
            GenerationsController,
            OpenAIImagesController,
            WebhookEndpointsController,
            WebhookSecretController,
            list_problem_types,
            get_problem_type,
            docs,
            create_static_files_router(
                path="/docs/assets", directories=[swagger_ui_path], include_in_schema=False
            ),
        ],
        plugins=[SvcsPlugin(factory), problem_details_plugin(), StrictStructSchemaPlugin()],
        before_request=require_json_bodies,
        lifespan=[
            error_tracking.lifespan,
            *extra_lifespans,
            metrics_sampling_lifespan(settings),
            mark_draining,
        ],
        openapi_config=_openapi_config(),
        logging_config=None,
        state=State({"shutdown": shutdown, "settings": settings}),
        request_max_body_size=10 * 1024 * 1024,
    )
    hsts = settings.public_base_url.startswith("https:")
    handler = error_tracking.around(cast("Any", app.asgi_handler))
    app.asgi_handler = cast("Any", RequestContext(handler, hsts=hsts))
    return app
