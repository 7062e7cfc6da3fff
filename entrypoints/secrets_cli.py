"""`pictor secrets`: list, rotate and retire the versions of named secrets. Never prints a value.

A rotation writes the next version into the secrets directory and keeps the previous ones, so what
they signed (download links, webhook signing secrets derived from the master key, the metrics token
scrapers hold) keeps verifying; the new version signs once every process has read it
(`PICTOR_SECRETS_CACHE_SECONDS` plus a margin). Secrets from the environment, single files and
read-only mounts are refused with what to do instead: they are managed where they come from.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from dataclasses import asdict
from datetime import datetime
from typing import Any

from adapters.secrets.env import ENV_PREFIX
from adapters.secrets.rotation import SecretsDirectory, SecretsOperationRefused, SecretStatus
from adapters.system import SystemIds
from core.secrets import METRICS_TOKEN, RENDERER_API_KEY, URL_SIGNING_KEY, WEBHOOK_SECRET_KEY
from entrypoints.settings import Settings

log = logging.getLogger("pictor.secrets")

PICTOR_SECRETS = (URL_SIGNING_KEY, WEBHOOK_SECRET_KEY, METRICS_TOKEN, RENDERER_API_KEY)

# What each rotation means for what the old version signed, said once it is done.
_AFTER_ROTATION = {
    URL_SIGNING_KEY: "download links signed before keep working until they expire or the old version "
    "is retired",
    WEBHOOK_SECRET_KEY: "webhook signing secrets made with an older version keep signing while it "
    "stays; new endpoint secrets use the new one. Rotate endpoint secrets before retiring it",
    METRICS_TOKEN: "the new token is in {path}; scrapers may use either until the old version is retired",
}


def add_secrets_commands(commands: Any) -> None:
    """Add `secrets` and its subcommands to the `pictor` parser's subcommands."""
    secrets = commands.add_parser("secrets", help="list, rotate and retire secret versions (never values)")
    secret_commands = secrets.add_subparsers(dest="secrets_command", required=True)

    listing = secret_commands.add_parser("list", help="each secret's source and versions")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=_list)

    rotate = secret_commands.add_parser(
        "rotate", help="add a new version in the secrets directory; the previous ones keep verifying"
    )
    rotate.add_argument("names", nargs="+", metavar="NAME")
    rotate.add_argument(
        "--stdin", action="store_true", help="read the new value from stdin (default: generate)"
    )
    rotate.set_defaults(handler=_rotate)

    retire = secret_commands.add_parser("retire", help="remove a version: what it signed stops verifying")
    retire.add_argument("name")
    retire.add_argument("version")
    retire.add_argument("--force", action="store_true", help="even the version that signs now (a leaked key)")
    retire.set_defaults(handler=_retire)


def secrets_directory(settings: Settings, environ: dict[str, str]) -> SecretsDirectory:
    """The operator's view over the same sources the services read (`wiring.secret_sources`)."""
    from entrypoints.wiring import secret_sources

    environment, files = secret_sources(settings, environ)
    return SecretsDirectory(
        settings.secrets_path,
        environment=environment,
        extra_variables={METRICS_TOKEN: "PICTOR_METRICS_TOKEN"},
        activation_seconds=files.activation_seconds,
    )


def _names(settings: Settings, environ: dict[str, str], directory: SecretsDirectory) -> list[str]:
    from_environment = {
        variable[len(ENV_PREFIX) :].lower()
        for variable, value in environ.items()
        if variable.startswith(ENV_PREFIX) and value and not variable.endswith("_PREVIOUS")
    }
    if settings.metrics_token:
        from_environment.add(METRICS_TOKEN)
    extra = sorted((from_environment | set(directory.names_in_directory())) - set(PICTOR_SECRETS))
    return [*PICTOR_SECRETS, *extra]


def _list(settings: Settings, args: argparse.Namespace) -> int:
    directory = secrets_directory(settings, args.environ)

    async def statuses() -> list[SecretStatus]:
        return [await directory.status(name) for name in _names(settings, args.environ, directory)]

    found = asyncio.run(statuses())
    if args.json:
        _say(json.dumps([asdict(status) for status in found], indent=2, default=_iso))
        return 0
    _say(f"secrets directory: {directory.directory}")
    for status in found:
        _say(
            f"{status.name}: {status.source}"
            + ("" if status.source == "missing" else f" ({status.location})")
        )
        for version in status.versions:
            created = f"  created {version.created_at:%Y-%m-%d %H:%M:%S}Z" if version.created_at else ""
            due = (
                f"  signs in {version.signs_in_seconds:.0f} s" if version.signs_in_seconds is not None else ""
            )
            _say(f"  {version.version:<14} {version.state:<8}{created}{due}")
    return 0


def _rotate(settings: Settings, args: argparse.Namespace) -> int:
    if args.stdin and len(args.names) > 1:
        _complain("rotate", "--stdin gives one value: rotate one secret at a time with it")
        return 2
    directory = secrets_directory(settings, args.environ)
    for name in args.names:
        value = sys.stdin.readline().strip() if args.stdin else SystemIds().token(32)
        try:
            added = asyncio.run(directory.rotate(name, value))
            status = asyncio.run(directory.status(name))
        except SecretsOperationRefused as refused:
            _complain("rotate", str(refused))
            return 2
        log.info("secret rotated", extra={"secret": name, "version": added.version})
        older = [v.version for v in status.versions if v.version != added.version]
        path = directory.directory / name / added.version
        _say(
            f"{name}: version {added.version} added ({path}); it signs in "
            f"{added.signs_in_seconds or 0:.0f} s, once every process has read it. "
            f"Still verifying: {', '.join(older)}."
        )
        note = _AFTER_ROTATION.get(name)
        if note:
            _say(note.format(path=path).capitalize() + ".")
    _say("Retire an old version with `pictor secrets retire NAME VERSION` once what it signed has expired.")
    return 0


def _retire(settings: Settings, args: argparse.Namespace) -> int:
    directory = secrets_directory(settings, args.environ)
    try:
        status = asyncio.run(directory.retire(args.name, args.version, force=args.force))
    except SecretsOperationRefused as refused:
        _complain("retire", str(refused))
        return 2
    log.info("secret version retired", extra={"secret": args.name, "version": args.version})
    left = ", ".join(f"{v.version} ({v.state})" for v in status.versions)
    _say(f"{args.name}: version {args.version} retired; what it signed no longer verifies. Left: {left}.")
    return 0


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")


def _complain(command: str, text: str) -> None:
    sys.stderr.write(f"pictor secrets {command}: {text}\n")


def _iso(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
