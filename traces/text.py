"""Printing text that came from outside: a trace's metadata, a log's lines, a result file.

Traces travel by email. A string in one (the ``source`` field, a host's kernel name, a bad
``format_version``) may hold carriage returns, newlines or terminal escape sequences that would
rewrite what the reader's terminal shows. Everything printed from such input goes through
``escape`` first: control characters (C0, DEL, C1) and the bidirectional overrides become visible
escapes, and the result is cut to a length a line can hold.
"""

from __future__ import annotations

import re

# C0 controls, DEL, C1 controls; bidi embeddings, overrides and isolates (they reorder a line).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]")
MAX_PRINTED_CHARS = 200


def _visible(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(value, limit: int | None = MAX_PRINTED_CHARS) -> str:
    """``str(value)`` safe to print on one terminal line: unsafe characters as visible escapes
    (``\\x1b``), cut to ``limit`` characters. Escaping twice changes nothing, so a formatter can
    escape its fields and its whole output."""
    text = str(value)
    if limit is not None and len(text) > limit:
        text = text[:limit] + "..."
    return _UNSAFE.sub(_visible, text)


def escape_lines(text: str) -> str:
    """Every line of a report escaped (the newlines between them kept)."""
    return "\n".join(escape(line, None) for line in text.split("\n"))
