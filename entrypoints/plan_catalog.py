"""Reading the plan catalog: the built-in file, extended or replaced by PICTOR_PLANS_FILE."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from core.billing.plans import PlanCatalog, PlanCatalogError, parse_catalog
from entrypoints.settings import PREFIX, Settings, SettingsError

BUILTIN_PLANS = "builtin_plans.toml"


def builtin_catalog() -> PlanCatalog:
    text = resources.files("entrypoints").joinpath(BUILTIN_PLANS).read_bytes()
    return parse_catalog(text, source=f"built-in {BUILTIN_PLANS}")


def load_plan_catalog(settings: Settings) -> PlanCatalog:
    """The catalog this configuration sells. A broken operator file stops start-up with a message
    that names the variable, the file and the field."""
    builtin = builtin_catalog()
    if settings.plans_file is None:
        return builtin
    path = Path(settings.plans_file).expanduser()
    try:
        text = path.read_bytes()
    except OSError as error:
        raise SettingsError(f"{PREFIX}PLANS_FILE: cannot read {path}: {error.strerror or error}") from None
    try:
        return parse_catalog(text, source=str(path), base=builtin)
    except PlanCatalogError as error:
        raise SettingsError(f"{PREFIX}PLANS_FILE: {error}") from None
