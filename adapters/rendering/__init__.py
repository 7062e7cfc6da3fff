"""Image renderers (the ImageRenderer port): the built-in procedural renderer."""
