"""The one exception the data package raises for bad input."""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset is missing, malformed or unreadable.

    The message always names the offending path or value and says how to fix it.
    """
