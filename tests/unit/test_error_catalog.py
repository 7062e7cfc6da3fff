from core.errors import CATALOG, DomainError, ErrorCategory, ErrorCode


def test_every_code_has_a_spec_and_the_catalog_is_big_enough():
    assert set(CATALOG) == set(ErrorCode)
    assert len(ErrorCode) >= 20


def test_codes_are_snake_case_and_statuses_are_http_errors():
    for code in ErrorCode:
        assert code.value == code.value.lower()
        assert " " not in code.value
        assert 400 <= code.status <= 599
        assert code.spec.title
        assert isinstance(code.category, ErrorCategory)


def test_contract_codes_have_the_statuses_api_md_promises():
    expected = {
        "unauthenticated": 401,
        "forbidden": 403,
        "insufficient_scope": 403,
        "not_found": 404,
        "validation_failed": 422,
        "email_taken": 409,
        "weak_password": 422,
        "invalid_credentials": 401,
        "too_many_attempts": 429,
        "quota_exceeded": 402,
        "rate_limited": 429,
        "invalid_state": 409,
        "idempotency_key_reused": 422,
        "idempotency_in_progress": 409,
        "payload_too_large": 413,
        "unsupported_media_type": 415,
        "unsafe_url": 422,
        "internal_error": 500,
    }
    for code, status in expected.items():
        assert ErrorCode(code).status == status


def test_domain_error_defaults_its_detail_to_the_title():
    error = DomainError(ErrorCode.NOT_FOUND)
    assert error.detail == "Not found"
    assert error.errors == []
    assert DomainError(ErrorCode.CONFLICT, "taken", field="email").context == {"field": "email"}
