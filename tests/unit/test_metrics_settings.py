"""The metrics settings: defaults, and values that cannot work named by their variable."""

from __future__ import annotations

import pytest

from entrypoints.settings import SettingsError, settings_from_mapping


def test_defaults_sample_every_15_seconds_and_keep_the_worker_listener_off() -> None:
    settings = settings_from_mapping({})
    assert settings.metrics_sample_interval_seconds == 15.0
    assert settings.worker_metrics_port is None
    assert settings.worker_metrics_host == "127.0.0.1"


def test_a_worker_metrics_port_is_read() -> None:
    settings = settings_from_mapping(
        {"PICTOR_WORKER_METRICS_PORT": "9464", "PICTOR_WORKER_METRICS_HOST": "0.0.0.0"}
    )
    assert (settings.worker_metrics_host, settings.worker_metrics_port) == ("0.0.0.0", 9464)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PICTOR_WORKER_METRICS_PORT", "0"),
        ("PICTOR_WORKER_METRICS_PORT", "70000"),
        ("PICTOR_WORKER_METRICS_PORT", "http"),
        ("PICTOR_METRICS_SAMPLE_INTERVAL_SECONDS", "0"),
        ("PICTOR_METRICS_SAMPLE_INTERVAL_SECONDS", "-1"),
    ],
)
def test_unusable_values_name_their_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        settings_from_mapping({variable: value})
