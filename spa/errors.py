"""The one exception type users see: its message is a complete one-line explanation."""


class SpaError(Exception):
    """A user-facing failure: bad input, an impossible request, or a model SPA refuses."""
