"""The contract between a vending machine and the cloud: topics, messages, the QR token."""

PROTOCOL_VERSION = 1


class ProtocolError(ValueError):
    """A message or token that breaks the contract; the text says what was wrong."""
