from pathlib import Path

import pytest

from entrypoints.settings import Settings, SettingsError, load_settings, masked, settings_from_mapping


def test_defaults_are_the_embedded_configuration():
    settings = settings_from_mapping({})
    assert settings.host == "127.0.0.1"
    assert settings.port == 8000
    assert settings.uses_embedded_database
    assert settings.resolved_storage_url.startswith("file://")
    assert settings.resolved_storage_url.endswith("/var/blobs")
    assert settings.public_base_url == "http://127.0.0.1:8000"
    assert settings.runs_embedded_worker
    assert (settings.db_pool_min, settings.db_pool_max, settings.db_pool_acquire_timeout) == (5, 20, 5.0)


def test_variables_are_converted_to_their_types():
    settings = settings_from_mapping(
        {
            "PICTOR_PORT": "9000",
            "PICTOR_WEBHOOKS_ALLOW_PRIVATE": "true",
            "PICTOR_DB_SLOW_QUERY_SECONDS": "0.5",
        }
    )
    assert settings.port == 9000
    assert settings.webhooks_allow_private is True
    assert settings.db_slow_query_seconds == 0.5


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"PICTOR_PORT": "eighty"}, "PICTOR_PORT"),
        ({"PICTOR_PORT": "70000"}, "PICTOR_PORT"),
        ({"PICTOR_DATABASE_URL": "mysql://db"}, "PICTOR_DATABASE_URL"),
        ({"PICTOR_VALKEY_URL": "http://cache"}, "PICTOR_VALKEY_URL"),
        ({"PICTOR_STORAGE_URL": "ftp://x"}, "PICTOR_STORAGE_URL"),
        ({"PICTOR_LOG_FORMAT": "xml"}, "PICTOR_LOG_FORMAT"),
        ({"PICTOR_DB_POOL_MIN": "30"}, "PICTOR_DB_POOL_MIN"),
        ({"PICTOR_BASE_URL": "example.com"}, "PICTOR_BASE_URL"),
        ({"PICTOR_PROT": "8000"}, "PICTOR_PROT"),
        ({"PICTOR_WEBHOOKS_ALLOW_PRIVATE": "perhaps"}, "PICTOR_WEBHOOKS_ALLOW_PRIVATE"),
    ],
)
def test_errors_name_the_variable(variables, named):
    with pytest.raises(SettingsError, match=named):
        settings_from_mapping(variables)


def test_test_and_secret_variables_are_not_settings():
    settings_from_mapping({"PICTOR_REQUIRE_SERVICES": "1", "PICTOR_SECRET_URL_SIGNING_KEY": "k"})


def test_masking_hides_secrets_and_url_passwords():
    settings = settings_from_mapping(
        {
            "PICTOR_DATABASE_URL": "postgresql://app:hunter2@db:5432/pictor",
            "PICTOR_METRICS_TOKEN": "tok",
            "PICTOR_S3_SECRET_ACCESS_KEY": "s3cret",
        }
    )
    shown = masked(settings)
    text = repr(shown)
    assert "hunter2" not in text and "tok'" not in text and "s3cret" not in text
    assert shown["database_url"] == "postgresql://app:********@db:5432/pictor"


def test_env_file_is_read_and_the_environment_wins(tmp_path: Path):
    env_file = tmp_path / ".env"
    env_file.write_text('# comment\nPICTOR_PORT=9001\nexport PICTOR_HOST="0.0.0.0"\n')
    settings = load_settings({"PICTOR_PORT": "9002"}, env_file=env_file)
    assert settings.port == 9002
    assert settings.host == "0.0.0.0"


def test_struct_validation_also_applies_to_direct_construction():
    with pytest.raises(SettingsError):
        Settings(port=0)


def test_repr_never_shows_secrets():
    settings = settings_from_mapping(
        {"PICTOR_METRICS_TOKEN": "tok-123", "PICTOR_DATABASE_URL": "postgresql://u:hunter2@h/db"}
    )
    assert "tok-123" not in repr(settings)
    assert "hunter2" not in str(settings)


def test_passwords_in_query_strings_are_masked_too():
    shown = masked(
        settings_from_mapping({"PICTOR_DATABASE_URL": "postgresql://u@h/db?password=hunter2&sslmode=require"})
    )
    assert shown["database_url"] == "postgresql://u@h/db?password=********&sslmode=require"


def test_a_bad_scheme_error_does_not_echo_the_url():
    with pytest.raises(SettingsError) as caught:
        settings_from_mapping({"PICTOR_DATABASE_URL": "mysql://u:hunter2@h/db"})
    assert "hunter2" not in str(caught.value)
    assert "mysql" in str(caught.value)


@pytest.mark.parametrize(
    "variables",
    [
        {"PICTOR_DATABASE_URL": "memory://"},
        {
            "PICTOR_DATABASE_URL": "postgresql://h/db",
            "PICTOR_QUEUE_URL": "memory://",
            "PICTOR_VALKEY_URL": "redis://h",
        },
        {
            "PICTOR_DATABASE_URL": "postgresql://h/db",
            "PICTOR_STORAGE_URL": "memory://",
            "PICTOR_VALKEY_URL": "redis://h",
        },
        {"PICTOR_DATABASE_URL": "postgresql://h/db"},  # no Valkey: each process would cache alone
    ],
)
def test_several_server_processes_need_shared_state(variables):
    with pytest.raises(SettingsError, match="memory://"):
        settings_from_mapping({**variables, "PICTOR_HTTP_WORKERS": "2"})


def test_several_server_processes_with_shared_services_are_fine():
    settings = settings_from_mapping(
        {
            "PICTOR_DATABASE_URL": "postgresql://h/db",
            "PICTOR_VALKEY_URL": "redis://h",
            "PICTOR_HTTP_WORKERS": "4",
        }
    )
    assert settings.http_workers == 4


def test_shutdown_durations_cannot_be_negative():
    with pytest.raises(SettingsError, match="PICTOR_SHUTDOWN_DRAIN_SECONDS"):
        settings_from_mapping({"PICTOR_SHUTDOWN_DRAIN_SECONDS": "-1"})


@pytest.mark.parametrize(
    ("variables", "embedded_worker"),
    [
        ({}, True),  # embedded database: its queue is served in-process
        ({"PICTOR_DATABASE_URL": "memory://"}, True),
        ({"PICTOR_DATABASE_URL": "postgresql://h/db"}, False),  # production: `pictor worker`
        ({"PICTOR_DATABASE_URL": "postgresql://h/db", "PICTOR_QUEUE_URL": "memory://"}, True),
        ({"PICTOR_DATABASE_URL": "postgresql://h/db", "PICTOR_EMBEDDED_WORKER": "true"}, True),
        ({"PICTOR_EMBEDDED_WORKER": "false"}, False),
    ],
)
def test_which_set_ups_run_jobs_inside_the_api(variables, embedded_worker):
    assert settings_from_mapping(variables).runs_embedded_worker is embedded_worker


def test_namespace_is_checked():
    with pytest.raises(SettingsError, match="PICTOR_NAMESPACE"):
        settings_from_mapping({"PICTOR_NAMESPACE": "Bad Name"})
