"""The one error every decoder raises."""


class SchemaError(ValueError):
    """A message that does not satisfy the wire contract.

    ``reason`` is a short human-readable sentence; it is what lands in the
    dead-letter topic next to the original bytes.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
