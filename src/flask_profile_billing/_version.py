"""The package's version, in a module of its own so that packaging and code read one value."""

__version__ = "0.1.0"
