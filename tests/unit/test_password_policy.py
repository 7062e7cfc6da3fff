"""The password policy (core.accounts.passwords) and the blocklist that ships with Pictor."""

from __future__ import annotations

import gzip
from importlib import resources

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from adapters.passwords.blocklist import ShippedBlocklist, fold_password
from core.accounts.passwords import (
    DEFAULT_MIN_LENGTH,
    MAX_LENGTH,
    check_password,
    normalize_password,
    password_problem,
)
from core.errors import DomainError, ErrorCode, FieldError

EMAIL = "ada.lovelace@example.com"
BLOCKLIST = ShippedBlocklist()
SMALL_BLOCKLIST = frozenset({"correcthorse", "qwerty123456"})


def problem(password: str, *, email: str = EMAIL, min_length: int = DEFAULT_MIN_LENGTH) -> str | None:
    return password_problem(password, email=email, blocklist=BLOCKLIST, min_length=min_length)


# --- length ---------------------------------------------------------------------------------------


def test_twelve_characters_is_the_default_minimum():
    assert DEFAULT_MIN_LENGTH == 12
    assert problem("tulip-harbor") is None
    assert problem("tulip-harbo") == "Use at least 12 characters"


def test_the_minimum_is_configurable():
    assert problem("tulip-harbor-ok", min_length=16) == "Use at least 16 characters"
    assert problem("tulip-harbor-ok!", min_length=16) is None
    assert problem("tulip-ha", min_length=8) is None


def test_at_most_128_characters():
    assert MAX_LENGTH == 128
    assert problem("tulip-harbor-" + "x" * (128 - 13)) is None
    assert problem("tulip-harbor-" + "x" * (129 - 13)) == "Use at most 128 characters"


def test_a_huge_input_is_refused_as_too_long():
    assert problem("tulip-harbor-" * 100_000) == "Use at most 128 characters"


def test_length_counts_characters_not_bytes():
    # 12 CJK characters are 36 bytes of UTF-8 but 12 characters: enough.
    assert problem("我的密码是一匹正确的马啊") is None
    assert problem("我的密码是一匹正确的马") == "Use at least 12 characters"


# --- Unicode and NFKC -----------------------------------------------------------------------------


def test_full_width_characters_normalize_to_their_ascii_form():
    assert normalize_password("ｔｕｌｉｐ－ｈａｒｂｏｒ") == "tulip-harbor"
    assert check_password("ｔｕｌｉｐ－ｈａｒｂｏｒ", email=EMAIL, blocklist=BLOCKLIST) == "tulip-harbor"


def test_composed_and_decomposed_accents_are_the_same_password():
    composed, decomposed = "crème brûlée au café", "cre\u0300me bru\u0302le\u0301e au cafe\u0301"
    assert composed != decomposed
    assert normalize_password(composed) == normalize_password(decomposed)


def test_length_is_measured_after_normalization():
    # "ﬁ" (one ligature character) normalizes to "fi": 11 typed characters become 12.
    assert len("ﬁsh-and-map") == 11
    assert problem("ﬁsh-and-map") is None
    # A full-width space and letters do not gain characters, they only change form.
    assert problem("ｔｕｌｉｐ－ｈａｒｂｏ") == "Use at least 12 characters"


@pytest.mark.parametrize(
    "password",
    [
        "🐴🔋📎 staple of mine",
        "我的密码是一匹正确的马啊",
        "пароль-для-пиктора",
        "كلمة المرور الطويلة",
        "ünïcödé pässwörd",
    ],
    ids=["emoji", "cjk", "cyrillic", "arabic", "latin-accents"],
)
def test_any_unicode_is_allowed(password: str):
    assert problem(password) is None


# --- no composition rules -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "password",
    ["correct horse battery staple", "thelazybrowndogsleeps", "781294561203849", "MOUNTAIN RIVER SKY"],
    ids=["passphrase", "all-lowercase", "all-digits", "all-uppercase"],
)
def test_no_composition_rules(password: str):
    assert problem(password) is None


def test_too_few_distinct_characters_is_refused():
    assert problem("aaaaaaaaaaaaaaaa") == "Use more than two different characters"
    assert problem("abababababab") == "Use more than two different characters"
    assert problem("AbaBabABabab") == "Use more than two different characters"


# --- the blocklist --------------------------------------------------------------------------------


def test_a_blocklisted_password_is_weak_with_a_reason():
    with pytest.raises(DomainError) as raised:
        check_password("qwerty123456", email=EMAIL, blocklist=BLOCKLIST)
    error = raised.value
    assert error.code is ErrorCode.WEAK_PASSWORD
    assert error.detail == "This password is too common or has appeared in a data breach"
    assert error.errors == [FieldError("password", error.detail, "weak_password")]


@pytest.mark.parametrize(
    "password", ["QWERTY123456", "Qwerty123456", "ＱＷＥＲＴＹ１２３４５６", "1Q2W3E4R5T6Y"]
)
def test_blocklist_matching_ignores_case_and_width(password: str):
    assert problem(password) == "This password is too common or has appeared in a data breach"


def test_the_policy_uses_the_blocklist_it_is_given():
    def small(password: str) -> str | None:
        return password_problem(password, email=EMAIL, blocklist=SMALL_BLOCKLIST)

    assert small("CorrectHorse") is not None
    assert small("correcthorsE") is not None
    assert small("1q2w3e4r5t6y") is None  # only in the shipped list


def test_the_shipped_blocklist_holds_at_least_ten_thousand_entries():
    assert len(BLOCKLIST) >= 10_000


def test_the_shipped_blocklist_holds_every_line_of_its_data_file():
    data = resources.files("adapters.passwords").joinpath("data").joinpath("common-passwords.txt.gz")
    lines = gzip.decompress(data.read_bytes()).decode("utf-8").splitlines()
    assert len(lines) >= 10_000
    assert all(line in BLOCKLIST for line in lines)


@pytest.mark.parametrize(
    "password", ["password", "PASSWORD", "Password1", "ｐａｓｓｗｏｒｄ", "iloveyou", "123456"]
)
def test_the_shipped_blocklist_matches_case_insensitively(password: str):
    assert password in BLOCKLIST


@pytest.mark.parametrize("value", ["tulip-harbor-lantern", "", None, 123456, b"password"])
def test_the_shipped_blocklist_refuses_what_it_does_not_hold(value: object):
    assert value not in BLOCKLIST


def test_blocklists_share_one_loaded_set():
    assert ShippedBlocklist()._entries is BLOCKLIST._entries


def test_fold_password_is_nfkc_then_casefold():
    assert fold_password("Straße") == "strasse"
    assert fold_password("ＡＢＣ") == "abc"


# --- the email's local part -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "password", ["ada.lovelace-rocks-2024", "I am ADA.LOVELACE, hi", "ａｄａ.ｌｏｖｅｌａｃｅ and friends"]
)
def test_a_password_containing_the_local_part_is_refused(password: str):
    assert problem(password) == "Do not use your email address in your password"


def test_the_local_part_without_its_plus_tag_is_refused_too():
    assert problem("grace-hopper-1906", email="grace+pictor@example.com") is not None
    assert problem("pictor-and-more", email="grace+pictor@example.com") is None


def test_a_very_short_local_part_is_not_checked():
    # Forbidding "jo" anywhere would refuse many good passwords for almost no gain.
    assert problem("jolly-jogging-jokes", email="jo@example.com") is None


def test_check_password_returns_the_normalized_password():
    assert check_password("tulip harbor lantern", email=EMAIL, blocklist=BLOCKLIST) == "tulip harbor lantern"


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("short", "Use at least 12 characters"),
        ("x" * 200, "Use at most 128 characters"),
        ("ada.lovelace!!", "Do not use your email address in your password"),
    ],
)
def test_check_password_raises_weak_password_with_the_reason(password: str, reason: str):
    with pytest.raises(DomainError) as raised:
        check_password(password, email=EMAIL, blocklist=BLOCKLIST)
    assert raised.value.code is ErrorCode.WEAK_PASSWORD
    assert raised.value.detail == reason


# --- properties -----------------------------------------------------------------------------------

LOCAL_PARTS = st.from_regex(r"[a-z0-9._-]{1,20}", fullmatch=True)


@given(password=st.text(min_size=DEFAULT_MIN_LENGTH, max_size=MAX_LENGTH), local=LOCAL_PARTS)
def test_anything_long_enough_varied_uncommon_and_without_the_local_part_passes(password: str, local: str):
    folded = normalize_password(password).casefold()
    assume(DEFAULT_MIN_LENGTH <= len(normalize_password(password)) <= MAX_LENGTH)
    assume(len(set(folded)) >= 3)
    assume(folded not in BLOCKLIST)
    assume(local not in folded)
    assert problem(password, email=f"{local}@example.com") is None
    assert check_password(password, email=f"{local}@example.com", blocklist=BLOCKLIST) == normalize_password(
        password
    )


@given(password=st.text(max_size=DEFAULT_MIN_LENGTH - 1))
def test_anything_shorter_than_the_minimum_fails(password: str):
    assume(len(normalize_password(password)) < DEFAULT_MIN_LENGTH)
    assert problem(password) == f"Use at least {DEFAULT_MIN_LENGTH} characters"


@given(password=st.text(min_size=MAX_LENGTH + 1, max_size=3 * MAX_LENGTH))
def test_anything_longer_than_the_maximum_fails(password: str):
    assume(len(normalize_password(password)) > MAX_LENGTH)
    assert problem(password) == f"Use at most {MAX_LENGTH} characters"


def test_every_blocklisted_password_long_enough_is_refused_in_any_case():
    long_enough = [entry for entry in BLOCKLIST._entries if len(entry) >= DEFAULT_MIN_LENGTH]
    assert long_enough
    for entry in long_enough:
        for candidate in (entry, entry.upper()):
            assert problem(candidate, email="zz@example.com") == (
                "This password is too common or has appeared in a data breach"
            ), candidate
