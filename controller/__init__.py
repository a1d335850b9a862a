"""The daemon that runs on every vending machine."""

__version__ = "0.1.0"
