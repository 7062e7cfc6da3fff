"""`pictor flags`: list, show, set, delete and evaluate feature flags from the command line.

The operator at the command line acts as an administrator (audited with no actor, the correlation
id `cli:flags`); a change reaches every running process through the flag cache's bus.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO, TypeVar

import msgspec
import svcs

from core.accounts.context import Caller
from core.errors import DomainError, ErrorCode
from core.flags.model import Flag, FlagDefinition, FlagKind, Rule, Variant
from core.flags.service import FlagAdministration
from core.ports import Clock
from entrypoints.settings import Settings

T = TypeVar("T")
CALLER = Caller(correlation_id="cli:flags")


def add_flags_commands(commands: Any) -> None:
    """Add `flags` and its subcommands to the `pictor` parser's subcommands."""
    flags = commands.add_parser("flags", help="manage feature flags")
    sub = flags.add_subparsers(dest="flags_command", required=True)

    listing = sub.add_parser("list", help="every flag, one a line (stale ones marked)")
    listing.set_defaults(handler=_list)

    get = sub.add_parser("get", help="one flag as JSON (the shape `set --file` reads)")
    get.add_argument("key")
    get.set_defaults(handler=_get)

    set_ = sub.add_parser(
        "set",
        help="create or change a flag: from --file (JSON; '-' reads stdin), then the options on top; "
        "options alone change an existing flag's fields",
    )
    set_.add_argument("key")
    set_.add_argument("--file", help="the flag's definition as JSON, as `get` prints it")
    set_.add_argument("--description")
    set_.add_argument("--kind", choices=[kind.value for kind in FlagKind])
    set_.add_argument(
        "--enabled", action=argparse.BooleanOptionalAction, default=None, help="switch it on or off"
    )
    set_.add_argument(
        "--default", help="true/false, or a variant's name: what it serves when it does not apply"
    )
    set_.add_argument("--rollout", type=int, help="percent of users (0-100) the rules did not match")
    set_.add_argument(
        "--variant",
        action="append",
        metavar="NAME=WEIGHT",
        help="a variant (weights in thousandths, sum 1000)",
    )
    set_.add_argument(
        "--rule",
        action="append",
        metavar="JSON",
        help="a targeting rule as JSON (repeat for more), e.g."
        ' \'{"attribute": "plan", "values": ["pro"], "serve": true}\'',
    )
    set_.add_argument("--no-rules", action="store_true", help="remove every targeting rule")
    set_.add_argument("--expires-at", help="an ISO 8601 time with its offset, e.g. 2030-01-01T00:00:00Z")
    set_.add_argument("--no-expiry", action="store_true", help="remove the expiry")
    set_.set_defaults(handler=_set)

    delete = sub.add_parser("delete", help="remove a flag")
    delete.add_argument("key")
    delete.set_defaults(handler=_delete)

    evaluate = sub.add_parser("evaluate", help="what a flag serves a user now, and why")
    evaluate.add_argument("key")
    evaluate.add_argument("--user", required=True, metavar="EMAIL", help="the user's email address")
    evaluate.set_defaults(handler=_evaluate)


# --- commands ----------------------------------------------------------------------------------


def _list(settings: Settings, args: argparse.Namespace) -> int:
    flags, now = _run(settings, args, lambda admin, _: admin.list(None))
    if not flags:
        _say("no feature flags")
    for flag in flags:
        state = "on " if flag.enabled else "off"
        stale = "  STALE" if flag.is_stale(now) else ""
        line = f"{flag.key}  {flag.kind.value}  {state}  rollout {flag.rollout}%{stale}  {flag.description}"
        _say(line.rstrip())
    return 0


def _get(settings: Settings, args: argparse.Namespace) -> int:
    flag, now = _run(settings, args, lambda admin, _: admin.get(None, args.key))
    _say(json.dumps(_shown(flag, now), indent=2))
    return 0


def _set(settings: Settings, args: argparse.Namespace) -> int:
    try:
        file_definition = _read_file(args.file) if args.file else None
    except (OSError, msgspec.DecodeError, msgspec.ValidationError) as error:
        _say(f"pictor flags set: cannot read {args.file}: {error}", sys.stderr)
        return 2

    async def work(admin: FlagAdministration, _: Clock) -> tuple[Flag, bool]:
        base = file_definition
        if base is None:
            try:
                base = (await admin.get(None, args.key)).definition()
            except DomainError as error:
                if error.code is not ErrorCode.NOT_FOUND:
                    raise
                base = FlagDefinition()  # a new flag: the options on top of the defaults
        return await admin.put(None, args.key, _with_options(base, args), CALLER)

    try:
        (flag, created), now = _run(settings, args, work)
    except _OptionError as error:
        _say(f"pictor flags set: {error}", sys.stderr)
        return 2
    _say(f"{'created' if created else 'saved'} {flag.key}")
    _say(json.dumps(_shown(flag, now), indent=2))
    return 0


def _delete(settings: Settings, args: argparse.Namespace) -> int:
    _run(settings, args, lambda admin, _: admin.delete(None, args.key, CALLER))
    _say(f"deleted {args.key}")
    return 0


def _evaluate(settings: Settings, args: argparse.Namespace) -> int:
    evaluation, _ = _run(settings, args, lambda admin, _: admin.evaluate_for(None, args.key, args.user))
    _say(
        json.dumps({"key": args.key, "user": args.user.strip(), **msgspec.to_builtins(evaluation)}, indent=2)
    )
    return 0


# --- helpers -----------------------------------------------------------------------------------


def _say(text: str, stream: TextIO | None = None) -> None:
    """One line of the command's output (stdout unless said otherwise)."""
    (stream or sys.stdout).write(f"{text}\n")


class _OptionError(ValueError):
    """A command-line option that cannot be read."""


def _run(
    settings: Settings,
    args: argparse.Namespace,
    work: Callable[[FlagAdministration, Clock], Awaitable[T]],
) -> tuple[T, datetime]:
    """`work` with the flag use cases of a registry for `settings`, and the time it ended."""

    async def run() -> tuple[T, datetime]:
        from entrypoints.feature_flags import flag_administration_from
        from entrypoints.wiring import service_registry

        async with (
            service_registry(settings, environ=args.environ) as registry,
            svcs.Container(registry) as container,
        ):
            admin = await flag_administration_from(container)
            clock = await container.aget(Clock)
            result = await work(admin, clock)
            return result, clock.now()

    try:
        return asyncio.run(run())
    except DomainError as error:
        if not error.errors:
            raise  # `pictor` prints the detail and exits 2
        lines = "".join(f"\n  {field.field}: {field.message}" for field in error.errors)
        raise DomainError(error.code, f"{error.detail}{lines}") from error


def _read_file(name: str) -> FlagDefinition:
    text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
    document = msgspec.json.decode(text, type=dict[str, Any])
    for shown_only in ("key", "stale", "created_at", "updated_at"):  # what `get` adds to a definition
        document.pop(shown_only, None)
    return msgspec.convert(document, FlagDefinition)


def _with_options(base: FlagDefinition, args: argparse.Namespace) -> FlagDefinition:
    """`base` with the fields the options set."""
    changes: dict[str, Any] = {}
    if args.description is not None:
        changes["description"] = args.description
    if args.kind is not None:
        changes["kind"] = FlagKind(args.kind)
    if args.enabled is not None:
        changes["enabled"] = args.enabled
    if args.default is not None:
        lowered = args.default.strip().lower()
        changes["default"] = {"true": True, "false": False}.get(lowered, args.default)
    if args.rollout is not None:
        changes["rollout"] = args.rollout
    if args.variant:
        changes["variants"] = tuple(_variant(text) for text in args.variant)
    if args.no_rules:
        changes["rules"] = ()
    if args.rule:
        changes["rules"] = tuple(_rule(text) for text in args.rule)
    if args.no_expiry:
        changes["expires_at"] = None
    if args.expires_at is not None:
        try:
            changes["expires_at"] = datetime.fromisoformat(args.expires_at.replace("Z", "+00:00"))
        except ValueError as error:
            raise _OptionError(f"--expires-at: {error}") from error
    return msgspec.structs.replace(base, **changes)


def _variant(text: str) -> Variant:
    name, _, weight = text.partition("=")
    try:
        return Variant(name=name, weight=int(weight))
    except ValueError as error:
        raise _OptionError(f"--variant {text!r}: NAME=WEIGHT, the weight a whole number") from error


def _rule(text: str) -> Rule:
    try:
        return msgspec.json.decode(text, type=Rule)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        raise _OptionError(f"--rule {text!r}: {error}") from error


def _shown(flag: Flag, now: datetime) -> dict[str, Any]:
    shown: dict[str, Any] = msgspec.to_builtins(flag)
    shown["stale"] = flag.is_stale(now)
    return shown
