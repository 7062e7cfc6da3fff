"""Two places where the OpenAPI document and the server must agree, and Litestar alone does not.

- Request bodies are msgspec Structs with `forbid_unknown_fields`: the server answers
  `422 validation_failed` to a field it does not know, so their schemas say
  `additionalProperties: false` (clients and schema-driven testers otherwise send extras).
- An automatic `OPTIONS` answer must list every method of its path in `Allow`. Litestar 2 builds
  it for the first handler registered at a path and does not update it when a controller adds
  more methods there (e.g. GET and POST on /v1/generations), so the header is set from the routes
  where the request context shapes every answer's headers (no extra layer on other requests).
"""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Litestar

# Litestar's own plugin for msgspec Structs (not exported): ours refines its schemas. Our plugin
# comes first among the app's plugins, so Litestar uses it for every Struct.
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin
from litestar.routes import HTTPRoute

if TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator
    from litestar.openapi.spec import Schema
    from litestar.typing import FieldDefinition


class StrictStructSchemaPlugin(StructSchemaPlugin):
    """Struct schemas, with `additionalProperties: false` where the Struct refuses unknown fields."""

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: SchemaCreator) -> Schema:
        schema = super().to_openapi_schema(field_definition, schema_creator)
        config = getattr(field_definition.type_, "__struct_config__", None)
        if isinstance(config, msgspec.structs.StructConfig) and config.forbid_unknown_fields:
            schema.additional_properties = False
        return schema


_STATE_KEY = "allow_by_path_template"
# A route's `{id:str}` is `{id}` in the scope's `path_template`.
_TYPED_PARAMETER = re.compile(r"\{(\w+):[^}]+\}")


def _allowed_methods(app: Litestar) -> dict[str, bytes]:
    """`Allow` values by path template, from the app's routes (built once per app)."""
    allowed: dict[str, bytes] | None = app.state.get(_STATE_KEY)
    if allowed is None:
        allowed = {
            _TYPED_PARAMETER.sub(r"{\1}", route.path): ", ".join(sorted(route.methods)).encode()
            for route in app.routes
            if isinstance(route, HTTPRoute)
        }
        app.state[_STATE_KEY] = allowed
    return allowed


def with_full_allow(
    headers: list[tuple[bytes, bytes]], scope: MutableMapping[str, Any]
) -> list[tuple[bytes, bytes]]:
    """The headers of an OPTIONS answer with an `Allow` that lists all of its path's methods (the
    request context, which shapes every answer's headers, calls it for OPTIONS only)."""
    template: Any = scope.get("path_template")
    app: Any = scope.get("litestar_app")
    allow = None if template is None or app is None else _allowed_methods(app).get(template)
    if allow is None:
        return headers
    return [(name, allow if name.lower() == b"allow" else value) for name, value in headers]
