"""Mailers: SMTP (the standard library's smtplib) and the console (the embedded default)."""
