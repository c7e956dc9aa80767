"""Traces inside mail: a saved message (.eml), an mbox (as `b4 mbox` saves a lore thread) or any
text, holding share blocks inline (quoted or not) or trace files as attachments.

``traces_in`` returns every trace found, in order, each with where it was found; blocks that
cannot be used are returned too, with the reason, so that the caller can say why when nothing
usable is left. Parsing uses Python's ``email`` and ``mailbox`` modules.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import mailbox
import re
import tempfile
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from .share import BEGIN, MAX_TRACE_BYTES, Block, find_blocks

ARROW_MAGIC = b"ARROW1"
# A message starts with header lines ("Name: value"); an mbox with a "From " separator line.
HEADER_START = re.compile(rb"^[A-Za-z][A-Za-z0-9-]*:[ \t]")
MBOX_START = b"From "


@dataclass
class Found:
    """One trace (or one unusable block) in a mail input."""
    where: str                    # "message 2 (Subject), block at line 40" / "attachment x.arrow"
    data: bytes | None            # the trace file
    problem: str | None = None
    description: str = ""         # name, events, sha256 prefix, for a list of traces


def kind_of_text(data: bytes) -> str:
    """'mbox', 'message' or 'text'."""
    if data.startswith(MBOX_START):
        return "mbox"
    first = data.lstrip(b"\r\n").split(b"\n", 1)[0]
    if HEADER_START.match(first) and (b"\n\n" in data or b"\r\n\r\n" in data):
        return "message"
    return "text"


def traces_in(path: Path, data: bytes, max_trace_bytes: int = MAX_TRACE_BYTES) -> tuple[str, list[Found]]:
    """(what the input is, every trace or unusable block found in it, in order)."""
    kind = kind_of_text(data)
    if kind == "mbox":
        found = []
        count = 0
        with _as_regular_file(path, data) as regular:
            box = mailbox.mbox(str(regular), factory=None, create=False)
            try:
                for number, raw in enumerate(box, start=1):
                    count = number
                    message = email.message_from_bytes(raw.as_bytes(),
                                                       policy=email.policy.default)
                    found += _in_message(message, f"message {number}{_subject(message)}",
                                         max_trace_bytes)
            finally:
                box.close()
        return f"an mbox of {count} message{'s' if count != 1 else ''}", found
    if kind == "message":
        message = email.message_from_bytes(data, policy=email.policy.default)
        return "a mail", _in_message(message, f"the message{_subject(message)}", max_trace_bytes)
    return "a text file", _in_text(_text(data), "", max_trace_bytes)


@contextlib.contextmanager
def _as_regular_file(path: Path, data: bytes):
    """``mailbox`` reads a path: a pipe or a device already read is copied to a temporary file."""
    if path.is_file():
        yield path
        return
    with tempfile.NamedTemporaryFile(prefix="mmreplay-mbox-", suffix=".mbox") as handle:
        handle.write(data)
        handle.flush()
        yield Path(handle.name)


def _subject(message) -> str:
    subject = str(message.get("subject", "") or "").strip()
    subject = "".join(c if c.isprintable() else " " for c in subject)
    return f' ("{subject[:50]}")' if subject else ""


def _text(payload: bytes, charset: str | None = None) -> str:
    for encoding in (charset, "utf-8"):
        if encoding:
            try:
                return payload.decode(encoding)
            except (LookupError, UnicodeDecodeError):
                continue
    return payload.decode("latin-1")


def _in_text(text: str, where: str, max_trace_bytes: int) -> list[Found]:
    prefix = f"{where}, " if where else ""
    return [Found(f"{prefix}block at line {block.line}", block.data, block.problem,
                  block.describe()) for block in find_blocks(text, max_trace_bytes)]


def _in_message(message: EmailMessage, where: str, max_trace_bytes: int) -> list[Found]:
    found: list[Found] = []
    for part in message.walk():
        if part.is_multipart():
            continue
        try:
            payload = part.get_payload(decode=True) or b""
        except (ValueError, LookupError):  # a damaged transfer encoding
            payload = part.get_payload(decode=False).encode("utf-8", "replace") \
                if isinstance(part.get_payload(decode=False), str) else b""
        name = part.get_filename()
        if payload.startswith(ARROW_MAGIC):
            label = f"{where}, attachment {name or '(unnamed)'}"
            found.append(Found(label, payload, None, f"{name or 'attachment'}, {len(payload)} "
                               "bytes"))
        elif part.get_content_maintype() == "text" or BEGIN.encode() in payload:
            text = _text(payload, part.get_content_charset())
            found += _in_text(text, where, max_trace_bytes)
    if not found:
        # A message whose MIME structure hides the block (a client that broke it): the raw text.
        try:
            raw = message.as_bytes()
        except (ValueError, LookupError, TypeError):
            raw = b""
        if BEGIN.encode() in raw:
            found = _in_text(_text(raw), where, max_trace_bytes)
    return found
