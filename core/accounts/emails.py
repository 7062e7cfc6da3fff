"""The emails Pictor sends about accounts, each as plain text and HTML.

Pure: values in, a `core.email.EmailMessage` out. Every value interpolated into the HTML is
escaped, so a display name like `<script>` arrives as text.
"""

from __future__ import annotations

from html import escape
from string import Template

from core.email import EmailMessage

PRODUCT_NAME = "Pictor"
VERIFY_EMAIL_KIND = "verify_email"
RESET_PASSWORD_KIND = "reset_password"

# `$`-placeholders take values that are already escaped (see `_html`).
_HTML_PAGE = Template(
    """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>$title</title></head>
<body style="font-family: sans-serif; line-height: 1.5; color: #222;">
<p>$greeting</p>
<p>$intro</p>
<p><a href="$link" style="display: inline-block; padding: 10px 18px; background: #3b5bdb; color: #fff; \
text-decoration: none; border-radius: 4px;">$action</a></p>
<p>Or paste this link into your browser:<br><a href="$link">$link</a></p>
<p style="color: #666;">$footer</p>
</body>
</html>
"""
)


def _greeting(display_name: str | None) -> str:
    return f"Hello {display_name}," if display_name else "Hello,"


def _html(*, title: str, greeting: str, intro: str, link: str, action: str, footer: str) -> str:
    values = {
        "title": title,
        "greeting": greeting,
        "intro": intro,
        "link": link,
        "action": action,
        "footer": footer,
    }
    return _HTML_PAGE.substitute({key: escape(value) for key, value in values.items()})


def _text(*, greeting: str, intro: str, link: str, footer: str) -> str:
    # The link stands alone on its line so that terminals and mail clients make it clickable.
    return f"{greeting}\n\n{intro}\n\n{link}\n\n{footer}\n"


def _minutes(minutes: int) -> str:
    if minutes >= 60 and minutes % 60 == 0:
        hours = minutes // 60
        return "1 hour" if hours == 1 else f"{hours} hours"
    return "1 minute" if minutes == 1 else f"{minutes} minutes"


def verification_email(
    to: str, display_name: str | None, link: str, *, product_name: str = PRODUCT_NAME
) -> EmailMessage:
    """Asks the owner of `to` to confirm the address by opening `link`."""
    greeting = _greeting(display_name)
    intro = f"Please confirm that this is your email address for your {product_name} account."
    footer = f"If you did not create a {product_name} account, you can ignore this email."
    return EmailMessage(
        to=to,
        subject=f"Confirm your email address for {product_name}",
        text=_text(greeting=greeting, intro=f"{intro} Open this link:", link=link, footer=footer),
        html=_html(
            title=f"Confirm your email address for {product_name}",
            greeting=greeting,
            intro=intro,
            link=link,
            action="Confirm my email address",
            footer=footer,
        ),
        kind=VERIFY_EMAIL_KIND,
    )


def password_reset_email(
    to: str,
    display_name: str | None,
    link: str,
    expires_in_minutes: int,
    *,
    product_name: str = PRODUCT_NAME,
) -> EmailMessage:
    """Lets the owner of `to` choose a new password through a single-use, expiring `link`."""
    greeting = _greeting(display_name)
    intro = f"Someone asked to reset the password of your {product_name} account."
    expiry = f"The link works once and expires in {_minutes(expires_in_minutes)}."
    footer = f"{expiry} If you did not ask for this, ignore this email: your password stays as it is."
    return EmailMessage(
        to=to,
        subject=f"Reset your {product_name} password",
        text=_text(greeting=greeting, intro=f"{intro} Choose a new one here:", link=link, footer=footer),
        html=_html(
            title=f"Reset your {product_name} password",
            greeting=greeting,
            intro=intro,
            link=link,
            action="Choose a new password",
            footer=footer,
        ),
        kind=RESET_PASSWORD_KIND,
    )


QUOTA_NOTICE_KIND = "quota_notice"


def quota_notice_email(
    to: str,
    display_name: str | None,
    *,
    percent: int,
    images_used: int,
    images_limit: int,
    period_end: str,
    link: str,
    product_name: str = PRODUCT_NAME,
) -> EmailMessage:
    """Tells the owner of `to` how much of this period's image quota is used (80 % or 100 %)."""
    greeting = _greeting(display_name)
    if percent >= 100:
        subject = f"You have used all of this month's {product_name} images"
        intro = (
            f"Your account has used all {images_limit} images of its plan this period. New generations "
            f"are refused until the period ends on {period_end}, unless you upgrade."
        )
    else:
        subject = f"You have used {percent}% of this month's {product_name} images"
        intro = (
            f"Your account has used {images_used} of the {images_limit} images of its plan this period "
            f"(which ends on {period_end})."
        )
    footer = "You get this email once per threshold and period."
    return EmailMessage(
        to=to,
        subject=subject,
        text=_text(greeting=greeting, intro=f"{intro} Your plan and usage:", link=link, footer=footer),
        html=_html(
            title=subject,
            greeting=greeting,
            intro=intro,
            link=link,
            action="See my plan and usage",
            footer=footer,
        ),
        kind=QUOTA_NOTICE_KIND,
    )
