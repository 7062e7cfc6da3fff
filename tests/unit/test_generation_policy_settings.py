"""The prompt policy and upload limits as configured: PICTOR_BLOCKED_TERMS_FILE, upload limits."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import DomainError, ErrorCode
from entrypoints.generation_policy import load_prompt_policy, upload_limits
from entrypoints.settings import SettingsError, settings_from_mapping


def test_blocked_terms_come_from_the_file(tmp_path: Path) -> None:
    terms = tmp_path / "blocked.txt"
    terms.write_text("# one term a line\nforbidden\n\n  other thing  # comment\n")
    policy = load_prompt_policy(settings_from_mapping({"PICTOR_BLOCKED_TERMS_FILE": str(terms)}))
    policy.check("a perfectly fine prompt")
    with pytest.raises(DomainError) as caught:
        policy.check("something FORBIDDEN here")
    assert caught.value.code is ErrorCode.PROMPT_REJECTED


def test_without_a_file_nothing_is_blocked() -> None:
    load_prompt_policy(settings_from_mapping({})).check("forbidden")


def test_an_unreadable_file_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"^PICTOR_BLOCKED_TERMS_FILE: cannot read"):
        load_prompt_policy(settings_from_mapping({"PICTOR_BLOCKED_TERMS_FILE": str(tmp_path / "missing")}))


def test_upload_limits_follow_the_settings() -> None:
    limits = upload_limits(
        settings_from_mapping({"PICTOR_UPLOAD_MAX_BYTES": "1000", "PICTOR_UPLOAD_MAX_PIXELS": "640000"})
    )
    assert (limits.max_bytes, limits.max_pixels) == (1000, 640000)
    with pytest.raises(SettingsError, match="PICTOR_UPLOAD_MAX_BYTES"):
        settings_from_mapping({"PICTOR_UPLOAD_MAX_BYTES": "0"})
