"""The error of bad input data, raised throughout the data layer."""
from __future__ import annotations


class DataError(ValueError):
    """Bad input data: the message names the file or field."""
