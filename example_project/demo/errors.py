"""The demo's one error: something did not go as the demo expects."""


class DemoError(Exception):
    """Raised with a message that says what went wrong; the demo then exits 1."""
