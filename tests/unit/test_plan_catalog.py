"""The plan catalog as data: the built-in file, an operator's PICTOR_PLANS_FILE extending or
replacing it, and validation errors that say which file and which field is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.billing.plans import PlanCatalog, PlanCatalogError, QueuePriority, parse_catalog
from entrypoints.plan_catalog import builtin_catalog, load_plan_catalog
from entrypoints.settings import SettingsError, settings_from_mapping

SOURCE = "/etc/pictor/plans.toml"

# One plan's fields, valid, for the documents below to vary.
STARTER = """
[plans.starter]
name = "Starter"
monthly_price_cents = 500
currency = "USD"
monthly_images = 200
rate_limit = { requests = 120, per_seconds = 60, burst = 30 }
max_concurrent_jobs = 2
max_image_pixels = 589824
features = ["api_access"]
"""

FREE_ONLY = """
[plans.free]
name = "Gratis"
monthly_price_cents = 0
currency = "USD"
monthly_images = 5
rate_limit = { requests = 3, per_seconds = 60, burst = 3 }
max_concurrent_jobs = 1
max_image_pixels = 262144
"""


def operator_file(body: str, *, header: str = "format = 1\n") -> str:
    return header + body


def parse_over_builtin(text: str) -> PlanCatalog:
    return parse_catalog(text, source=SOURCE, base=builtin_catalog())


def error_of(text: str, *, base: PlanCatalog | None = None) -> str:
    with pytest.raises(PlanCatalogError) as raised:
        parse_catalog(text, source=SOURCE, base=base)
    return str(raised.value)


# --- the built-in catalog ----------------------------------------------------------------------


def test_builtin_catalog_sells_free_pro_and_team_cheapest_first():
    catalog = builtin_catalog()

    assert [plan.code for plan in catalog] == ["free", "pro", "team"]
    assert catalog.default.code == "free"
    assert catalog.default.is_free
    assert catalog.currency == "USD"
    for plan in catalog:
        assert isinstance(plan.monthly_price_cents, int)
        assert plan.monthly_images > 0
        assert plan.rate_limit.requests > 0 and plan.rate_limit.burst > 0
        assert plan.max_concurrent_jobs >= 1 and plan.max_image_pixels > 0
        assert "api_access" in plan.features
    pro = catalog.get("pro")
    assert pro is not None
    assert pro.monthly_price_cents == 2000
    assert pro.priority is QueuePriority.PRIORITY
    assert catalog.get("enterprise") is None
    assert catalog.effective("enterprise") == catalog.default  # a removed plan falls back to free
    assert len(catalog.version) == 16


# --- an operator's file ------------------------------------------------------------------------


def test_operator_file_overrides_one_plan_and_adds_another():
    catalog = parse_over_builtin(operator_file(FREE_ONLY + STARTER))

    assert [plan.code for plan in catalog] == ["free", "starter", "pro", "team"]
    free = catalog.effective("free")
    assert free.name == "Gratis"
    assert free.rate_limit.requests == 3
    assert free.features == ()  # the override replaces the plan whole, it does not merge fields
    assert catalog.get("pro") == builtin_catalog().get("pro")  # untouched plans are kept
    starter = catalog.get("starter")
    assert starter is not None
    assert starter.monthly_price_cents == 500
    assert starter.rate_limit.as_rate_limit().period_seconds == 60
    assert catalog.default.code == "free"


def test_replace_builtin_keeps_only_the_operators_plans():
    free_in_eur = FREE_ONLY.replace('"USD"', '"EUR"')
    starter_in_eur = STARTER.replace('"USD"', '"EUR"')
    catalog = parse_over_builtin(
        operator_file(free_in_eur + starter_in_eur, header="format = 1\nreplace_builtin = true\n")
    )

    assert [plan.code for plan in catalog] == ["free", "starter"]
    assert catalog.currency == "EUR"
    assert "pro" not in catalog


def test_operator_may_choose_another_free_default():
    basic = FREE_ONLY.replace("[plans.free]", "[plans.basic]")
    catalog = parse_over_builtin(operator_file(basic, header='format = 1\ndefault_plan = "basic"\n'))

    assert catalog.default.code == "basic"


def test_version_changes_with_the_content_and_only_with_it():
    first = parse_over_builtin(operator_file(FREE_ONLY))
    same = parse_over_builtin(operator_file(FREE_ONLY))
    cheaper_limit = parse_over_builtin(
        operator_file(FREE_ONLY.replace("monthly_images = 5", "monthly_images = 6"))
    )

    assert first.version == same.version
    assert first.version != cheaper_limit.version
    assert first.version != builtin_catalog().version


# --- validation: every error names the file and the field ------------------------------------


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        pytest.param(
            operator_file(STARTER.replace("monthly_price_cents = 500", 'monthly_price_cents = "5.00"')),
            ["plans.starter", "monthly_price_cents", "Expected `int`"],
            id="wrong-type",
        ),
        pytest.param(
            operator_file(STARTER.replace("monthly_price_cents = 500", "monthly_price_cents = 4.99")),
            ["plans.starter", "monthly_price_cents"],
            id="price-as-float",
        ),
        pytest.param(
            operator_file(STARTER.replace("monthly_images = 200", "monthly_images = -1")),
            ["plans.starter", "monthly_images"],
            id="negative-quota",
        ),
        pytest.param(
            operator_file(STARTER + "colour = 'blue'\n"),
            ["plans.starter", "unknown field", "colour"],
            id="unknown-plan-field",
        ),
        pytest.param(
            operator_file(STARTER.replace("burst = 30 }", "burst = 30, jitter = 1 }")),
            ["plans.starter", "unknown field", "jitter", "rate_limit"],
            id="unknown-rate-limit-field",
        ),
        pytest.param(
            operator_file(STARTER, header="format = 1\nflavour = 'x'\n"),
            ["unknown field", "flavour"],
            id="unknown-top-level-field",
        ),
        pytest.param(
            operator_file(STARTER.replace("[plans.starter]", "[plans.Starter]")),
            ["plans.Starter", "plan code"],
            id="bad-code",
        ),
        pytest.param(
            operator_file(STARTER.replace('currency = "USD"', 'currency = "usd"')),
            ["plans.starter.currency", "ISO 4217", "usd"],
            id="bad-currency",
        ),
        pytest.param(
            operator_file(STARTER.replace('currency = "USD"', 'currency = "EUR"')),
            ["one currency", "EUR", "USD"],
            id="mixed-currencies",
        ),
        pytest.param(
            operator_file(STARTER, header='format = 1\ndefault_plan = "starter"\n'),
            ["default_plan", "starter", "must be free"],
            id="non-free-default",
        ),
        pytest.param(
            operator_file(STARTER, header='format = 1\ndefault_plan = "gold"\n'),
            ["default_plan", "gold", "not a plan"],
            id="unknown-default",
        ),
        pytest.param(
            operator_file(STARTER, header="format = 2\n"),
            ["format must be 1", "got 2"],
            id="format-2",
        ),
        pytest.param(
            operator_file(STARTER, header=""),
            ["format"],
            id="format-missing",
        ),
        pytest.param(
            "format = 1\n[plans.starter\nname = 'x'\n",
            ["not valid TOML"],
            id="invalid-toml",
        ),
        pytest.param(
            "format = 1\nreplace_builtin = true\n",
            ["no plans"],
            id="empty-catalog",
        ),
        pytest.param(
            operator_file(
                STARTER.replace('features = ["api_access"]', 'features = ["api_access", "api_access"]')
            ),
            ["plans.starter.features", "twice"],
            id="duplicate-features",
        ),
        pytest.param(
            operator_file(STARTER.replace('features = ["api_access"]', 'features = ["API Access"]')),
            ["plans.starter.features", "API Access"],
            id="bad-feature-name",
        ),
        pytest.param(
            operator_file(STARTER.replace('name = "Starter"', 'name = "  "')),
            ["plans.starter.name"],
            id="blank-name",
        ),
        pytest.param(
            operator_file(STARTER.replace("burst = 30", "burst = 1201")),
            ["plans.starter.rate_limit.burst"],
            id="burst-beyond-ten-times",
        ),
        pytest.param(
            operator_file(STARTER.replace("per_seconds = 60", "per_seconds = 0")),
            ["plans.starter", "per_seconds"],
            id="zero-window",
        ),
    ],
)
def test_a_broken_operator_file_is_refused_with_file_and_field(document: str, expected: list[str]):
    message = error_of(document, base=builtin_catalog())

    assert message.startswith(f"{SOURCE}: "), message
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


def test_without_a_base_an_empty_document_is_an_empty_catalog():
    message = error_of("format = 1\n")

    assert message == f"{SOURCE}: the catalog has no plans"


def test_without_a_base_the_default_is_free_and_must_exist():
    message = error_of(operator_file(STARTER))

    assert "default_plan 'free' is not a plan" in message


# --- reading PICTOR_PLANS_FILE -----------------------------------------------------------------


def settings_with(plans_file: Path | None, tmp_path: Path):
    environ = {"PICTOR_DATA_DIR": str(tmp_path)}
    if plans_file is not None:
        environ["PICTOR_PLANS_FILE"] = str(plans_file)
    return settings_from_mapping(environ)


def test_without_plans_file_the_builtin_catalog_is_sold(tmp_path: Path):
    catalog = load_plan_catalog(settings_with(None, tmp_path))

    assert catalog.version == builtin_catalog().version


def test_plans_file_extends_the_builtin_catalog(tmp_path: Path):
    path = tmp_path / "plans.toml"
    path.write_text(operator_file(FREE_ONLY + STARTER))

    catalog = load_plan_catalog(settings_with(path, tmp_path))

    assert [plan.code for plan in catalog] == ["free", "starter", "pro", "team"]
    assert catalog.default.rate_limit.requests == 3


def test_a_missing_plans_file_stops_start_up_naming_the_variable(tmp_path: Path):
    missing = tmp_path / "nowhere" / "plans.toml"

    with pytest.raises(SettingsError) as raised:
        load_plan_catalog(settings_with(missing, tmp_path))

    message = str(raised.value)
    assert message.startswith("PICTOR_PLANS_FILE"), message
    assert str(missing) in message


def test_a_broken_plans_file_stops_start_up_naming_variable_file_and_field(tmp_path: Path):
    path = tmp_path / "plans.toml"
    path.write_text(operator_file(STARTER.replace('currency = "USD"', 'currency = "dollars"')))

    with pytest.raises(SettingsError) as raised:
        load_plan_catalog(settings_with(path, tmp_path))

    message = str(raised.value)
    assert message.startswith(f"PICTOR_PLANS_FILE: {path}: plans.starter.currency"), message


def test_the_version_follows_the_file_content(tmp_path: Path):
    path = tmp_path / "plans.toml"
    path.write_text(operator_file(FREE_ONLY))
    before = load_plan_catalog(settings_with(path, tmp_path)).version
    assert load_plan_catalog(settings_with(path, tmp_path)).version == before

    path.write_text(operator_file(FREE_ONLY.replace("burst = 3", "burst = 2")))

    assert load_plan_catalog(settings_with(path, tmp_path)).version != before
