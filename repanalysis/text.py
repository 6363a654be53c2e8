"""Display text: names that go into tables, legends and JSON.

A name made from a file name or a command-line argument can hold bytes that are not UTF-8 (Python keeps
them as lone surrogates, PEP 383). Paths keep those bytes so the files still open; names shown to people
get U+FFFD in their place, which every writer and font can handle (matplotlib refuses lone surrogates).
"""
from __future__ import annotations


def display_text(value) -> str:
    """``str(value)`` with each undecodable byte (a lone surrogate) replaced by U+FFFD."""
    text = str(value)
    if text.isascii():
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
