"""CSV cells that a spreadsheet shows rather than runs: the formula-injection guard of every CSV download."""

from __future__ import annotations

from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""What a spreadsheet takes as the start of a formula (or, for tab and CR, a cell it may re-parse as one)."""


def safe_cell(value: Any) -> Any:
    """A CSV cell that no spreadsheet evaluates: text starting with a formula character gets a leading single
    quote; None is empty; numbers and anything else are left as they are."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value
