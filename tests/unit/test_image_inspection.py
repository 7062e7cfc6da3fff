"""Upload inspection: formats by content, byte and pixel limits checked before decoding (bombs),
truncated and corrupt files, and metadata stripped on re-encoding. Images are made with Pillow;
the bomb is a hand-written PNG whose header claims far more pixels than its few bytes hold.
"""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image, ImageCms, ImageFile, PngImagePlugin

from adapters.images.inspection import decode_rgb, inspect_image, strip_metadata
from core.errors import DomainError, ErrorCode
from core.images import ImageLimits, ImageType, sniff_image_type

LIMITS = ImageLimits(max_bytes=2 * 1024 * 1024, max_pixels=4096 * 4096)
ORIENTATION = 0x0112
MAKE = 0x010F


def make_image(fmt: str, size: tuple[int, int] = (64, 48), mode: str = "RGB", **save: object) -> bytes:
    image = Image.new(mode, size, (200, 40, 90) if mode == "RGB" else (200, 40, 90, 128))
    out = io.BytesIO()
    image.save(out, format=fmt, **save)
    return out.getvalue()


def exif_with(orientation: int = 6) -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    exif[MAKE] = "Spy Camera"
    return exif.tobytes()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG of a few dozen bytes whose IHDR claims width x height RGB pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + chunk(b"IEND", b"")
    )


def refusal(data: bytes, limits: ImageLimits = LIMITS) -> DomainError:
    with pytest.raises(DomainError) as caught:
        inspect_image(data, limits)
    return caught.value


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to decode pixels fails the test: refusals must come from the header alone."""

    def load(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)


@pytest.mark.parametrize(
    ("fmt", "content_type"),
    [("PNG", ImageType.PNG), ("JPEG", ImageType.JPEG), ("WEBP", ImageType.WEBP)],
)
def test_png_jpeg_and_webp_are_recognised_by_content(fmt: str, content_type: ImageType):
    data = make_image(fmt)

    facts = inspect_image(data, LIMITS)

    assert facts.content_type is content_type
    assert (facts.width, facts.height, facts.bytes) == (64, 48, len(data))


def test_the_magic_bytes_decide_not_anything_declared():
    assert sniff_image_type(make_image("JPEG")) is ImageType.JPEG
    assert sniff_image_type(b"RIFF\x10\x00\x00\x00WAVEfmt ") is None  # RIFF, but audio
    assert sniff_image_type(b"\x89PNG") is None  # too short to be sure


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(make_image("GIF"), id="gif"),
        pytest.param(make_image("BMP"), id="bmp"),
        pytest.param(b"<svg xmlns='http://www.w3.org/2000/svg'/>", id="svg"),
        pytest.param(b"PK\x03\x04 a zip file named photo.png", id="zip"),
        pytest.param(b"RIFF\x10\x00\x00\x00WAVEfmt data", id="wav"),
    ],
)
def test_other_formats_are_unsupported_media(data: bytes):
    error = refusal(data)

    assert error.code is ErrorCode.UNSUPPORTED_MEDIA_TYPE
    assert error.errors[0].field == "file"
    assert error.errors[0].code == "unsupported_format"


def test_an_empty_file_is_invalid():
    error = refusal(b"")

    assert error.code is ErrorCode.VALIDATION_FAILED
    assert error.errors[0].code == "empty_file"


def test_a_file_over_the_byte_limit_is_too_large_before_it_is_parsed(no_decoding: None):
    error = refusal(make_image("PNG"), ImageLimits(max_bytes=50, max_pixels=LIMITS.max_pixels))

    assert error.code is ErrorCode.PAYLOAD_TOO_LARGE
    assert error.errors[0].code == "too_many_bytes"


def test_an_image_over_the_pixel_limit_is_too_large():
    error = refusal(make_image("PNG", (64, 48)), ImageLimits(max_bytes=LIMITS.max_bytes, max_pixels=64 * 47))

    assert error.code is ErrorCode.PAYLOAD_TOO_LARGE
    assert error.errors[0].code == "too_many_pixels"
    assert error.context["max_pixels"] == 64 * 47


@pytest.mark.parametrize(
    ("width", "height"),
    [
        (50_000, 50_000),  # past Pillow's own bomb guard: it refuses inside Image.open
        (10_000, 10_000),  # between Pillow's warning and its error: our limit refuses
        (5_000, 5_000),  # under Pillow's guards, over ours
    ],
)
def test_a_decompression_bomb_is_refused_from_its_header_without_decoding(
    width: int, height: int, no_decoding: None
):
    bomb = png_claiming(width, height)
    assert len(bomb) < 200

    error = refusal(bomb)

    assert error.code is ErrorCode.PAYLOAD_TOO_LARGE
    assert error.errors[0].field == "file"
    assert error.errors[0].code == "too_many_pixels"


def test_a_bomb_is_refused_by_strip_metadata_too(no_decoding: None):
    with pytest.raises(DomainError) as caught:
        strip_metadata(png_claiming(50_000, 50_000), LIMITS)
    assert caught.value.code is ErrorCode.PAYLOAD_TOO_LARGE


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_a_truncated_file_is_invalid(fmt: str):
    # Noise, so the pixel data is most of the file and cutting it loses pixels, not just a trailer.
    noisy = Image.frombytes("RGB", (64, 64), bytes((i * 7919) % 251 for i in range(64 * 64 * 3)))
    out = io.BytesIO()
    noisy.save(out, format=fmt)
    data = out.getvalue()

    error = refusal(data[: len(data) // 2])

    assert error.code is ErrorCode.VALIDATION_FAILED
    assert error.errors[0].code == "corrupt_image"


def test_a_file_with_the_right_magic_and_garbage_after_is_invalid():
    error = refusal(b"\x89PNG\r\n\x1a\n" + b"\x00garbage that is no chunk" * 4)

    assert error.code is ErrorCode.VALIDATION_FAILED
    assert error.errors[0].code == "corrupt_image"


def test_a_zero_pixel_header_is_invalid(no_decoding: None):
    error = refusal(png_claiming(0, 10))

    assert error.code is ErrorCode.VALIDATION_FAILED


def test_strip_metadata_removes_exif_and_icc_from_a_jpeg_and_applies_the_orientation():
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = make_image("JPEG", (64, 48), exif=exif_with(orientation=6), icc_profile=icc)
    before = Image.open(io.BytesIO(data))
    assert before.getexif()[MAKE] == "Spy Camera"
    assert "icc_profile" in before.info

    clean, content_type, width, height = strip_metadata(data, LIMITS)

    after = Image.open(io.BytesIO(clean))
    assert content_type is ImageType.JPEG
    assert after.format == "JPEG"
    assert dict(after.getexif()) == {}
    assert "icc_profile" not in after.info
    assert "exif" not in after.info
    assert b"Spy Camera" not in clean
    # Orientation 6 means "rotate to display": the pixels are turned, the tag is gone.
    assert (width, height) == (48, 64) == after.size


def test_strip_metadata_removes_text_chunks_and_exif_from_a_png_and_keeps_transparency():
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "taken at 12 Secret Street")
    info.add_itxt("XML:com.adobe.xmp", "<x:xmpmeta>GPS here</x:xmpmeta>")
    data = make_image("PNG", mode="RGBA", pnginfo=info, exif=exif_with(orientation=1))
    assert "Comment" in Image.open(io.BytesIO(data)).info

    clean, content_type, width, height = strip_metadata(data, LIMITS)

    after = Image.open(io.BytesIO(clean))
    assert content_type is ImageType.PNG
    assert (width, height) == (64, 48)
    assert after.mode == "RGBA"
    assert set(after.info) <= {"dpi", "gamma"}  # no text, no XMP, no EXIF
    assert dict(after.getexif()) == {}
    assert b"Secret Street" not in clean
    assert b"GPS" not in clean


def test_strip_metadata_removes_exif_and_xmp_from_a_webp():
    data = make_image("WEBP", exif=exif_with(orientation=1), xmp=b"<x:xmpmeta>GPS here</x:xmpmeta>")
    assert b"Spy Camera" in data

    clean, content_type, _, _ = strip_metadata(data, LIMITS)

    after = Image.open(io.BytesIO(clean))
    assert content_type is ImageType.WEBP
    assert dict(after.getexif()) == {}
    assert b"Spy Camera" not in clean
    assert b"GPS" not in clean


def test_strip_metadata_keeps_the_picture():
    data = make_image("PNG")

    clean, _, _, _ = strip_metadata(data, LIMITS)

    assert Image.open(io.BytesIO(clean)).convert("RGB").getpixel((10, 10)) == (200, 40, 90)


def test_decode_rgb_gives_upright_rgb_pixels():
    picture = decode_rgb(make_image("PNG", mode="RGBA"), LIMITS)

    assert picture.mode == "RGB"
    assert picture.size == (64, 48)
