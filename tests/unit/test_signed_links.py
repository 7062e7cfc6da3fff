"""Properties of the signed-link rule (core/signed_links.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from core.errors import DomainError, ErrorCode
from core.secrets import URL_SIGNING_KEY, SecretVersion
from core.signed_links import sign_link, verify_link

# Paths and secret values are text the caller encodes as UTF-8 (lone surrogates cannot be).
encodable_text = st.text(st.characters(codec="utf-8"))
paths = encodable_text.map(lambda tail: "/v1/files/" + tail)
expiries = st.integers(min_value=1, max_value=2**36)  # sums of two stay within datetime's years
secrets = st.builds(
    lambda version, value: SecretVersion(name=URL_SIGNING_KEY, version=version, value=value),
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=8),
    encodable_text,
)


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def error_code(
    path: str, params: dict[str, str | None], keys: list[SecretVersion], now: datetime
) -> ErrorCode | None:
    try:
        verify_link(
            path,
            expires=params.get("expires"),
            kid=params.get("kid"),
            sig=params.get("sig"),
            secrets=keys,
            now=now,
        )
    except DomainError as error:
        return error.code
    return None


@given(path=paths, expires=expiries, secret=secrets)
def test_a_signed_link_verifies_until_it_expires(path: str, expires: int, secret: SecretVersion) -> None:
    params: dict[str, str | None] = dict(sign_link(path, expires=expires, secret=secret))

    assert error_code(path, params, [secret], at(expires - 1)) is None
    assert error_code(path, params, [secret], at(expires)) is ErrorCode.LINK_EXPIRED


@given(
    path=paths,
    expires=expiries,
    secret=secrets,
    position=st.integers(min_value=0),
    replacement=st.characters(),
)
def test_any_single_character_change_to_the_signature_is_refused(
    path: str, expires: int, secret: SecretVersion, position: int, replacement: str
) -> None:
    params: dict[str, str | None] = dict(sign_link(path, expires=expires, secret=secret))
    sig = params["sig"]
    assert sig is not None
    position %= len(sig)
    assume(sig[position] != replacement)
    params["sig"] = sig[:position] + replacement + sig[position + 1 :]

    assert error_code(path, params, [secret], at(expires - 1)) is ErrorCode.INVALID_SIGNATURE


@given(path=paths, other=paths, expires=expiries, secret=secrets)
def test_a_link_does_not_verify_for_another_path(
    path: str, other: str, expires: int, secret: SecretVersion
) -> None:
    assume(path != other)
    params: dict[str, str | None] = dict(sign_link(path, expires=expires, secret=secret))

    assert error_code(other, params, [secret], at(0)) is ErrorCode.INVALID_SIGNATURE


@given(path=paths, expires=expiries, later=expiries, secret=secrets)
def test_an_extended_expiry_is_a_forgery_even_after_the_real_one(
    path: str, expires: int, later: int, secret: SecretVersion
) -> None:
    params: dict[str, str | None] = dict(sign_link(path, expires=expires, secret=secret))
    forged = {**params, "expires": str(expires + later)}

    # Checked before the expiry: an expired, tampered link says "invalid", not "expired".
    assert error_code(path, forged, [secret], at(0)) is ErrorCode.INVALID_SIGNATURE
    assert error_code(path, forged, [secret], at(expires + later + 1)) is ErrorCode.INVALID_SIGNATURE


@given(
    path=paths,
    expires=expiries,
    secret=secrets,
    spelling=st.sampled_from(["0{}", "+{}", " {}", "{}.0", "{} "]),
)
def test_only_the_canonical_spelling_of_the_expiry_verifies(
    path: str, expires: int, secret: SecretVersion, spelling: str
) -> None:
    params: dict[str, str | None] = dict(sign_link(path, expires=expires, secret=secret))
    respelled = {**params, "expires": spelling.format(expires)}

    assert error_code(path, respelled, [secret], at(0)) is ErrorCode.INVALID_SIGNATURE


def test_other_unicode_digits_are_not_an_expiry() -> None:
    secret = SecretVersion(name=URL_SIGNING_KEY, version="v1", value="k")
    params: dict[str, str | None] = dict(sign_link("/p", expires=12, secret=secret))

    for spelling in ("\u0661\u0662", "\uff11\uff12", "1\u00b2"):  # Arabic-Indic, full-width, superscript
        assert (
            error_code("/p", {**params, "expires": spelling}, [secret], at(0)) is ErrorCode.INVALID_SIGNATURE
        )


@given(
    path=paths,
    expires=st.one_of(st.none(), st.text()),
    kid=st.one_of(st.none(), st.text()),
    sig=st.one_of(st.none(), st.text()),
    keys=st.lists(secrets, max_size=3),
)
def test_garbage_input_only_ever_fails_as_invalid_signature(
    path: str, expires: str | None, kid: str | None, sig: str | None, keys: list[SecretVersion]
) -> None:
    code = error_code(path, {"expires": expires, "kid": kid, "sig": sig}, keys, at(0))

    assert code is ErrorCode.INVALID_SIGNATURE


@pytest.mark.parametrize("missing", ["expires", "sig"])
def test_a_link_missing_a_parameter_is_refused(missing: str) -> None:
    secret = SecretVersion(name=URL_SIGNING_KEY, version="v1", value="k")
    params: dict[str, str | None] = dict(sign_link("/p", expires=100, secret=secret))
    params[missing] = None

    assert error_code("/p", params, [secret], at(0)) is ErrorCode.INVALID_SIGNATURE


def test_rotation_keeps_old_links_while_their_version_is_listed() -> None:
    old = SecretVersion(name=URL_SIGNING_KEY, version="v1", value="old value")
    new = SecretVersion(name=URL_SIGNING_KEY, version="v2", value="new value")
    old_link: dict[str, str | None] = dict(sign_link("/p", expires=100, secret=old))
    new_link: dict[str, str | None] = dict(sign_link("/p", expires=100, secret=new))

    assert error_code("/p", old_link, [new, old], at(0)) is None
    assert error_code("/p", new_link, [new, old], at(0)) is None
    assert error_code("/p", old_link, [new], at(0)) is ErrorCode.INVALID_SIGNATURE
    assert error_code("/p", new_link, [], at(0)) is ErrorCode.INVALID_SIGNATURE


def test_a_link_whose_kid_is_unknown_is_still_checked_against_every_listed_version() -> None:
    # Links from before key versions were recorded carry no (or a stale) kid.
    secret = SecretVersion(name=URL_SIGNING_KEY, version="v7", value="value")
    params: dict[str, str | None] = dict(sign_link("/p", expires=100, secret=secret))

    assert error_code("/p", {**params, "kid": None}, [secret], at(0)) is None
    assert error_code("/p", {**params, "kid": "v6"}, [secret], at(0)) is None


def test_a_link_claiming_one_version_is_not_checked_against_another() -> None:
    v1 = SecretVersion(name=URL_SIGNING_KEY, version="v1", value="one")
    v2 = SecretVersion(name=URL_SIGNING_KEY, version="v2", value="two")
    params: dict[str, str | None] = dict(sign_link("/p", expires=100, secret=v1))

    assert error_code("/p", {**params, "kid": "v2"}, [v2, v1], at(0)) is ErrorCode.INVALID_SIGNATURE


def test_the_signature_is_urlsafe_text() -> None:
    secret = SecretVersion(name=URL_SIGNING_KEY, version="v1", value="k")

    params = sign_link("/v1/files/a b", expires=1_900_000_000, secret=secret)

    assert params["expires"] == "1900000000"
    assert params["kid"] == "v1"
    assert len(params["sig"]) == 43  # 256-bit HMAC, base64url without padding
    assert set(params["sig"]) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
