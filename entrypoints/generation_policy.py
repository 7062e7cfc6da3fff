"""What generations and uploads may be, from the settings: the prompt policy and upload limits."""

from __future__ import annotations

from pathlib import Path

from core.generations.prompt_policy import PromptPolicy, parse_blocked_terms
from core.images import ImageLimits
from entrypoints.settings import PREFIX, Settings, SettingsError


def load_prompt_policy(settings: Settings) -> PromptPolicy:
    """The blocked terms of PICTOR_BLOCKED_TERMS_FILE (one a line, `#` comments), or none."""
    if settings.blocked_terms_file is None:
        return PromptPolicy()
    path = Path(settings.blocked_terms_file).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise SettingsError(f"{PREFIX}BLOCKED_TERMS_FILE: cannot read {path}: {error}") from None
    try:
        return PromptPolicy(parse_blocked_terms(text))
    except ValueError as error:
        raise SettingsError(f"{PREFIX}BLOCKED_TERMS_FILE: {path}: {error}") from None


def upload_limits(settings: Settings) -> ImageLimits:
    return ImageLimits(max_bytes=settings.upload_max_bytes, max_pixels=settings.upload_max_pixels)
