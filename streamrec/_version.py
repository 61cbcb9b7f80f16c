"""The package version, apart from streamrec/__init__.py so that the core can read it without the root."""

__version__ = "0.1.0"
