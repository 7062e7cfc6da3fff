"""The alert settings, the ops webhook secret the embedded set-up generates, and readiness when
alerts are posted."""

from __future__ import annotations

from pathlib import Path

import pytest
import svcs

from adapters.memory.error_log import MemoryErrorLog
from core.error_tracking.alerts import OPS_WEBHOOK_SECRET, signing_secret
from core.errors import DomainError, ErrorCode
from core.ports import ErrorLog, Secrets
from entrypoints.error_tracking import ErrorTracking, alert_rules, tracking_of
from entrypoints.settings import SettingsError, settings_from_mapping
from entrypoints.wiring import build_secrets, ensure_generated_secrets, service_registry

MEMORY = {
    "PICTOR_DATABASE_URL": "memory://",
    "PICTOR_VALKEY_URL": "memory://",
    "PICTOR_STORAGE_URL": "memory://",
    "PICTOR_QUEUE_URL": "memory://",
    "PICTOR_SECRET_URL_SIGNING_KEY": "signing-key-for-tests",
    "PICTOR_SECRET_WEBHOOK_SECRET_KEY": "webhook-master-key-for-tests",
}


def test_the_defaults_and_the_rules_they_make() -> None:
    settings = settings_from_mapping({})
    assert settings.ops_webhook_url is None
    rules = alert_rules(settings)
    assert (rules.http_5xx_rate, rules.job_failure_rate, rules.min_volume, rules.cooldown_seconds) == (
        0.05,
        0.25,
        20,
        900,
    )
    assert (rules.window.bucket_seconds, rules.window.covered_seconds) == (10, 300)


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"PICTOR_ALERT_5XX_RATE": "5"}, "PICTOR_ALERT_5XX_RATE"),
        ({"PICTOR_ALERT_5XX_RATE": "-0.1"}, "PICTOR_ALERT_5XX_RATE"),
        ({"PICTOR_ALERT_JOB_FAILURE_RATE": "1"}, "PICTOR_ALERT_JOB_FAILURE_RATE"),
        ({"PICTOR_ALERT_MIN_REQUESTS": "0"}, "PICTOR_ALERT_MIN_REQUESTS"),
        ({"PICTOR_ALERT_WINDOW_SECONDS": "5"}, "PICTOR_ALERT_WINDOW_SECONDS"),
        ({"PICTOR_ALERT_WINDOW_SECONDS": "a while"}, "PICTOR_ALERT_WINDOW_SECONDS"),
        ({"PICTOR_ALERT_COOLDOWN_SECONDS": "0"}, "PICTOR_ALERT_COOLDOWN_SECONDS"),
        ({"PICTOR_OPS_WEBHOOK_URL": "ftp://ops.example"}, "PICTOR_OPS_WEBHOOK_URL"),
    ],
)
def test_bad_values_name_their_variable(variables: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        settings_from_mapping(variables)


async def test_the_embedded_set_up_generates_a_usable_ops_secret(tmp_path: Path) -> None:
    settings = settings_from_mapping({"PICTOR_DATA_DIR": str(tmp_path)})
    assert OPS_WEBHOOK_SECRET in await ensure_generated_secrets(settings, {})
    (version,) = await build_secrets(settings, {}).versions(OPS_WEBHOOK_SECRET)
    assert signing_secret(version.value) is not None
    assert OPS_WEBHOOK_SECRET not in await ensure_generated_secrets(settings, {})  # kept, not replaced


@pytest.mark.parametrize(("secret", "ready"), [("too-short", False), ("x" * 24, True), (None, False)])
async def test_with_an_ops_url_readiness_needs_a_secret_that_signs(
    tmp_path: Path, secret: str | None, ready: bool
) -> None:
    environ = {
        **MEMORY,
        "PICTOR_DATA_DIR": str(tmp_path),
        "PICTOR_OPS_WEBHOOK_URL": "https://ops.example/hook",
    }
    if secret is not None:
        environ["PICTOR_SECRET_OPS_WEBHOOK_SECRET"] = secret
    settings = settings_from_mapping(environ)
    async with service_registry(settings, environ=environ) as registry, svcs.Container(registry) as container:
        pings = {ping.name: ping for ping in container.get_pings()}
        ping = pings[f"{Secrets.__module__}.{Secrets.__qualname__}"]
        if ready:
            await ping.aping()
        else:
            with pytest.raises(DomainError) as raised:
                await ping.aping()
            assert raised.value.code is ErrorCode.SECRET_MISSING
            assert OPS_WEBHOOK_SECRET in raised.value.detail


async def test_without_valkey_the_log_is_this_process_memory(tmp_path: Path) -> None:
    settings = settings_from_mapping({**MEMORY, "PICTOR_DATA_DIR": str(tmp_path)})
    async with service_registry(settings, environ=MEMORY) as registry, svcs.Container(registry) as container:
        assert isinstance(await container.aget(ErrorLog), MemoryErrorLog)
        assert isinstance(tracking_of(registry), ErrorTracking)
    assert tracking_of(svcs.Registry()) is None
