"""Validation of a new generation request, and the queued generation it becomes.

`validate_request` cleans the text, checks every field against the limits below and the caller's
plan, and reports every invalid field at once (`validation_failed` with one FieldError each). The
prompt policy (`core.generations.prompt_policy`) runs on the cleaned prompt afterwards, so that a
rejected prompt is never confused with a malformed one.
"""

from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import Final
from urllib.parse import urlsplit

import msgspec

from core.billing.plans import Plan, QueuePriority
from core.errors import DomainError, ErrorCode, FieldError
from core.generations.generation import Generation, GenerationStatus
from core.identifiers import is_id
from core.webhooks.targets import MAX_URL_LENGTH

MAX_PROMPT_LENGTH: Final = 4000
MAX_IMAGES: Final = 4
MAX_SEED: Final = 2**32 - 1
DEFAULT_SIZE: Final = "512x512"
ALLOWED_SIZES: Final = (
    "256x256",
    "512x512",
    "768x768",
    "1024x1024",
    "512x768",
    "768x512",
    "1024x768",
    "768x1024",
    "1536x1536",
    "2048x2048",
)
ALLOWED_STYLES: Final = (
    "photographic",
    "digital-art",
    "anime",
    "watercolor",
    "oil-painting",
    "pixel-art",
    "line-art",
    "3d-model",
)
# Styles in beta, each offered only to the users its feature flag (core.flags) is on for: style → key.
BETA_STYLES: Final = {"sunset": "beta-style-sunset"}
_WHITESPACE_CONTROLS: Final = frozenset("\t\n\r\v\f\x1c\x1d\x1e\x1f\x85")


class GenerationRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What a client may set on a new generation (POST /v1/generations), as sent."""

    prompt: str
    negative_prompt: str | None = None
    size: str | None = None
    n: int = 1
    seed: int | None = None
    style: str | None = None
    init_image: str | None = None  # an upload's id
    webhook_url: str | None = None


class ValidRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A request that passed validation: cleaned text, a known size within the plan."""

    prompt: str
    negative_prompt: str | None
    size: str
    width: int
    height: int
    n: int
    seed: int | None  # None: the use case draws one from the Ids port
    style: str | None
    init_image_id: str | None
    webhook_url: str | None


def clean_text(raw: str) -> str:
    """Control characters out (line breaks and tabs become spaces, so words stay apart), lone
    surrogates out, canonical composition (NFC, which changes no meaning), trimmed."""
    kept: list[str] = []
    for char in raw:
        if char in _WHITESPACE_CONTROLS:
            kept.append(" ")
        elif unicodedata.category(char) not in ("Cc", "Cs"):
            kept.append(char)
    return unicodedata.normalize("NFC", "".join(kept)).strip()


def parse_size(size: str) -> tuple[int, int] | None:
    """(width, height) of an allowed size, else None."""
    if size not in ALLOWED_SIZES:
        return None
    width, _, height = size.partition("x")
    return int(width), int(height)


def seed_from(random_bytes: bytes) -> int:
    """A seed in 0..2**32-1 from four random bytes (`Ids.random_bytes(4)`)."""
    if len(random_bytes) != 4:
        raise ValueError("a seed takes exactly 4 random bytes")
    return int.from_bytes(random_bytes, "big")


def requested_style(request: GenerationRequest) -> str | None:
    """The style as validation reads it: trimmed, lower-case, None when blank."""
    return None if request.style is None else request.style.strip().lower() or None


def validate_request(
    request: GenerationRequest, plan: Plan, *, beta_styles: frozenset[str] = frozenset()
) -> ValidRequest:
    """The cleaned request, or `validation_failed` listing every invalid field. `beta_styles` are
    the styles of BETA_STYLES open to this caller; the others are refused like unknown ones."""
    errors: list[FieldError] = []
    prompt = clean_text(request.prompt)
    if not prompt:
        errors.append(FieldError("prompt", "The prompt is empty", "required"))
    elif len(prompt) > MAX_PROMPT_LENGTH:
        errors.append(FieldError("prompt", f"At most {MAX_PROMPT_LENGTH} characters", "too_long"))
    negative = None if request.negative_prompt is None else clean_text(request.negative_prompt) or None
    if negative is not None and len(negative) > MAX_PROMPT_LENGTH:
        errors.append(FieldError("negative_prompt", f"At most {MAX_PROMPT_LENGTH} characters", "too_long"))
    size = DEFAULT_SIZE if request.size is None else request.size.strip().lower()
    dimensions = parse_size(size)
    if dimensions is None:
        errors.append(FieldError("size", f"One of {', '.join(ALLOWED_SIZES)}", "size_not_allowed"))
    elif dimensions[0] * dimensions[1] > plan.max_image_pixels:
        errors.append(
            FieldError(
                "size",
                f"The {plan.name} plan allows images of at most {plan.max_image_pixels} pixels",
                "size_not_allowed",
            )
        )
    if isinstance(request.n, bool) or not 1 <= request.n <= MAX_IMAGES:
        errors.append(FieldError("n", f"Between 1 and {MAX_IMAGES} images", "out_of_range"))
    if request.seed is not None and (isinstance(request.seed, bool) or not 0 <= request.seed <= MAX_SEED):
        errors.append(FieldError("seed", f"Between 0 and {MAX_SEED}", "out_of_range"))
    style = requested_style(request)
    if style is not None and style not in ALLOWED_STYLES and style not in beta_styles:
        offered = (*ALLOWED_STYLES, *sorted(beta_styles))
        errors.append(FieldError("style", f"One of {', '.join(offered)}", "unknown_style"))
    init_image = request.init_image
    if init_image is not None and not is_id(init_image):
        errors.append(FieldError("init_image", "Not an upload id", "invalid_id"))
    webhook_url = None if request.webhook_url is None else request.webhook_url.strip()
    if webhook_url is not None and not is_webhook_url_shape(webhook_url):
        errors.append(FieldError("webhook_url", "An absolute http(s) URL", "invalid_url"))
    if errors:
        raise DomainError(ErrorCode.VALIDATION_FAILED, "The request is invalid; see errors", errors=errors)
    assert dimensions is not None  # for the type checker: an error was raised otherwise
    return ValidRequest(
        prompt=prompt,
        negative_prompt=negative,
        size=size,
        width=dimensions[0],
        height=dimensions[1],
        n=request.n,
        seed=request.seed,
        style=style,
        init_image_id=None if init_image is None else init_image.lower(),
        webhook_url=webhook_url,
    )


def is_webhook_url_shape(url: str) -> bool:
    """http or https, a host, no credentials, no fragment, printable ASCII, bounded length. Whether
    the host may be called (SSRF) is decided when delivering, against the resolved address."""
    if not 0 < len(url) <= MAX_URL_LENGTH or not url.isascii() or not url.isprintable():
        return False
    if any(char.isspace() for char in url):
        return False
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return False
    return (
        parts.scheme in ("http", "https")
        and bool(parts.hostname)
        and parts.username is None
        and parts.password is None
        and not parts.fragment
    )


def new_generation(
    request: ValidRequest, *, generation_id: str, user_id: str, plan: Plan, seed: int, now: datetime
) -> Generation:
    """The queued generation a validated request becomes; `seed` is the request's, or a random one
    drawn by the use case when the request had none."""
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed must be within 0..{MAX_SEED}")
    return Generation(
        id=generation_id,
        user_id=user_id,
        status=GenerationStatus.QUEUED,
        prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        size=request.size,
        width=request.width,
        height=request.height,
        n=request.n,
        seed=seed,
        style=request.style,
        init_image_id=request.init_image_id,
        webhook_url=request.webhook_url,
        priority=plan.priority is QueuePriority.PRIORITY,
        retention_days=plan.image_retention_days,
        created_at=now,
        updated_at=now,
    )
