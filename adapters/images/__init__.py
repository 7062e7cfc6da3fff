"""Images users send: format, size and pixel checks and metadata stripping, with Pillow."""
