"""The account emails (core.accounts.emails): plain text and HTML, every value escaped."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.accounts.emails import (
    RESET_PASSWORD_KIND,
    VERIFY_EMAIL_KIND,
    password_reset_email,
    verification_email,
)
from core.email import EmailMessage

LINK = "https://pictor.example/verify?token=abc123&next=/home"
ALLOWED_TAGS = {"html", "head", "meta", "title", "body", "p", "a", "br"}


class _Page(HTMLParser):
    """What a mail client would see: tags, link targets and text."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.hrefs: list[str] = []
        self.text_parts: list[str] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.hrefs.extend(value or "" for name, value in attrs if name == "href")

    def handle_data(self, data: str) -> None:
        self.text_parts.append(data)

    @property
    def text(self) -> str:
        return "".join(self.text_parts)


def both_emails(display_name: str | None, link: str) -> list[EmailMessage]:
    return [
        verification_email("ada@example.com", display_name, link),
        password_reset_email("ada@example.com", display_name, link, 30),
    ]


def test_verification_email():
    message = verification_email("ada@example.com", "Ada", LINK)
    assert message.to == "ada@example.com"
    assert message.kind == VERIFY_EMAIL_KIND
    assert message.subject == "Confirm your email address for Pictor"
    assert message.text.startswith("Hello Ada,\n")
    assert f"\n{LINK}\n" in message.text  # on a line of its own, so terminals make it clickable
    page = _Page(message.html)
    assert page.hrefs == [LINK, LINK]
    assert "Hello Ada," in page.text
    assert "Confirm my email address" in page.text


def test_password_reset_email():
    message = password_reset_email("ada@example.com", "Ada", LINK, 30)
    assert message.to == "ada@example.com"
    assert message.kind == RESET_PASSWORD_KIND
    assert message.subject == "Reset your Pictor password"
    assert f"\n{LINK}\n" in message.text
    assert "expires in 30 minutes" in message.text
    assert "works once" in message.text
    page = _Page(message.html)
    assert page.hrefs == [LINK, LINK]
    assert "expires in 30 minutes" in page.text


@pytest.mark.parametrize(
    ("minutes", "said"),
    [(1, "1 minute"), (45, "45 minutes"), (60, "1 hour"), (90, "90 minutes"), (120, "2 hours")],
)
def test_reset_expiry_is_said_in_words(minutes: int, said: str):
    message = password_reset_email("ada@example.com", None, LINK, minutes)
    assert f"expires in {said}." in message.text
    assert f"expires in {said}." in _Page(message.html).text


@pytest.mark.parametrize("message", both_emails(None, LINK), ids=["verify", "reset"])
def test_without_a_display_name_the_greeting_is_plain(message: EmailMessage):
    assert message.text.startswith("Hello,\n")
    assert "Hello," in _Page(message.html).text
    assert "None" not in message.text


def test_the_product_name_can_be_changed():
    message = verification_email("ada@example.com", "Ada", LINK, product_name="Acme Images")
    assert message.subject == "Confirm your email address for Acme Images"
    assert "Pictor" not in message.text
    assert "Pictor" not in message.html


@pytest.mark.parametrize("message", both_emails('<script>alert("x")</script>', LINK), ids=["verify", "reset"])
def test_a_display_name_cannot_inject_html(message: EmailMessage):
    assert "<script>" not in message.html
    assert "&lt;script&gt;" in message.html
    page = _Page(message.html)
    assert set(page.tags) <= ALLOWED_TAGS
    assert '<script>alert("x")</script>' in page.text  # shown as text, exactly
    assert '<script>alert("x")</script>' in message.text  # the plain text is not HTML: left as is


def test_a_link_cannot_break_out_of_its_attribute():
    hostile = 'https://pictor.example/r?t=1"><img src=x onerror=alert(1)>'
    for message in both_emails("Ada", hostile):
        page = _Page(message.html)
        assert set(page.tags) <= ALLOWED_TAGS
        assert page.hrefs == [hostile, hostile]


def test_the_templates_are_pure():
    assert both_emails("Ada", LINK) == both_emails("Ada", LINK)


@given(display_name=st.text(max_size=100), token=st.text(max_size=40))
def test_any_name_and_link_arrive_intact_and_inject_nothing(display_name: str, token: str):
    link = f"https://pictor.example/reset?token={token}"
    for message in both_emails(display_name or None, link):
        page = _Page(message.html)
        assert set(page.tags) <= ALLOWED_TAGS
        assert page.hrefs == [link, link]
        if display_name:
            assert f"Hello {display_name}," in page.text
            assert message.text.startswith(f"Hello {display_name},\n")
