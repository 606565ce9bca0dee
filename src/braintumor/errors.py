"""The one error type users see: a one-line message naming the file and the reason."""


class ScanError(ValueError):
    """A scan or dataset entry that cannot be used; ``str(err)`` is ``"<file>: <reason>"``."""

    def __init__(self, name: str, reason: str):
        self.name = str(name)
        self.reason = reason
        super().__init__(f"{self.name}: {reason}")
