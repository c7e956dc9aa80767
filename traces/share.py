"""The share block: a trace as plain text that survives a mail, and reading it back out.

A block is lines of at most 72 columns:

    -----BEGIN MMREPLAY TRACE-----
    Format: mmreplay share 1 (xz, base64)
    Trace: bert-torch.arrow, strace of python .../hf_inference.py ...
    Events: 16560 (mmap 8076, munmap 7272, ...)
    ...                                   (what the trace is: human-readable)
    Size: 1379874 bytes
    Sha256: <sha256 of the trace file, 64 hex digits>
    Replay: save this mail as repro.eml, then run
      mmreplay replay repro.eml
                                          (blank line)
    <base64 of the xz-compressed trace file, 72 characters a line>
    Checksum: crc32 1a2b3c4d of 49708 base64 characters
    -----END MMREPLAY TRACE-----

The payload is the trace file (format v2, written without Arrow's own compression) compressed
as a whole with xz, which compresses it better than zstd does column by column
(benchmarks/README.md, "trace_size.py"). ``base64 -d | xz -d`` gives the file back without
mmreplay. Base64 rather than git's base85: a few percent longer, but its alphabet has neither
``>`` nor spaces, so quote markers and line breaks a mail client adds can be taken out
unambiguously, and every system can decode it.

Reading (``find_blocks``) strips ``> `` quoting at any depth, joins payload lines however a
client re-wrapped them, and checks, in order: the END line is there (else the block was cut),
the number of base64 characters and their CRC-32 (else the text changed in transit), the size
the block claims (before decompressing anything), xz's own integrity check, the decompressed
size and the trace's sha256. Every failure is one sentence; nothing is guessed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import lzma
import re
import zlib
from dataclasses import dataclass, field

BEGIN = "-----BEGIN MMREPLAY TRACE-----"
END = "-----END MMREPLAY TRACE-----"
FORMAT = "mmreplay share 1 (xz, base64)"
WIDTH = 72
XZ_PRESET = 9 | lzma.PRESET_EXTREME
# The largest trace file a block may claim to decompress to; the Arrow reader's own limits
# (rows, inflated sizes, available memory) apply after this.
MAX_TRACE_BYTES = 1 << 30
MAIL_LIMIT_CHARS = 100_000  # the message size commonly cited for vger.kernel.org lists

# Quote markers a mail client puts in front of a reply's lines: ">", "> ", ">>", "> > ", ...
QUOTE = re.compile(r"^(?:[ \t]*>)+[ \t]?")
BASE64_CHARS = re.compile(r"[A-Za-z0-9+/=]*")
HEADER_LINE = re.compile(r"^([A-Za-z][A-Za-z0-9-]*):[ \t]*(.*)$")
CHECKSUM = re.compile(r"^crc32 ([0-9a-f]{8}) of (\d+) base64 characters$")


class BlockError(ValueError):
    """A block that is there but cannot be used (cut, damaged, lying about itself)."""


@dataclass
class Block:
    """One block found in a text: its header fields and its decoded trace file (or the reason
    it could not be decoded)."""
    line: int                     # 1-based line of the BEGIN marker in the text
    header: dict = field(default_factory=dict)
    data: bytes | None = None
    problem: str | None = None

    def describe(self) -> str:
        """One line for a list of traces: name, events, sha256 prefix."""
        trace = self.header.get("trace", "?").split(":")[0]
        events = self.header.get("events", "?").split(" ")[0]
        sha = self.header.get("sha256", "?")[:12]
        return f"{trace}, {events} events, sha256 {sha}"


def unquote(line: str) -> str:
    return QUOTE.sub("", line, count=1).rstrip()


# ---------------------------------------------------------------------------------------------
# Writing

def wrap_field(name: str, value: str, width: int = WIDTH) -> list[str]:
    """``Name: value`` wrapped at spaces to ``width`` columns, continuation lines indented; a
    newline in ``value`` starts a continuation line of its own."""
    lines = []
    for number, segment in enumerate(value.split("\n")):
        current = f"{name}:" if number == 0 else " "
        for word in segment.split(" "):
            candidate = f"{current} {word}"
            if len(candidate) > width and current.strip() not in (f"{name}:", ""):
                lines.append(current)
                current = f"  {word}"
            else:
                current = candidate
        lines.append(current)
    # A word longer than the width (a path) is cut: the header is for people, not parsed.
    out = []
    for line in lines:
        while len(line) > width:
            out.append(line[:width])
            line = "  " + line[width:]
        out.append(line)
    return out


def encode_block(trace_file: bytes, fields: list[tuple[str, str]]) -> str:
    """The block for ``trace_file`` (the bytes of a trace file) with the descriptive ``fields``
    (name, value) in the header; Format, Size, Sha256 are added here."""
    payload = lzma.compress(trace_file, preset=XZ_PRESET)
    text = base64.b64encode(payload).decode("ascii")
    lines = [BEGIN]
    lines += wrap_field("Format", FORMAT)
    for name, value in fields:
        lines += wrap_field(name, value)
    lines += wrap_field("Size", f"{len(trace_file)} bytes ({len(payload)} as xz)")
    lines.append(f"Sha256: {hashlib.sha256(trace_file).hexdigest()}")
    lines.append("")
    lines += [text[i:i + WIDTH] for i in range(0, len(text), WIDTH)]
    lines.append(f"Checksum: crc32 {zlib.crc32(text.encode('ascii')):08x} of {len(text)} base64 "
                 "characters")
    lines.append(END)
    assert all(len(line) <= WIDTH for line in lines)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Reading

def find_blocks(text: str, max_trace_bytes: int = MAX_TRACE_BYTES) -> list[Block]:
    """Every block in ``text`` (quoted or not), decoded, in order of appearance. A block that
    cannot be used is returned with its ``problem`` set."""
    lines = text.splitlines()
    blocks = []
    index = 0
    while index < len(lines):
        if unquote(lines[index]).strip() == BEGIN:
            block, index = _read_block(lines, index, max_trace_bytes)
            blocks.append(block)
        else:
            index += 1
    return blocks


def _read_block(lines: list[str], start: int, max_trace_bytes: int) -> tuple[Block, int]:
    block = Block(line=start + 1)
    index = start + 1
    header: dict[str, str] = {}
    last = None
    # Header: "Name: value" lines up to the first blank one. A client that re-wrapped a long
    # line may have moved a value onto the next line: an empty value takes the next line.
    while index < len(lines):
        line = unquote(lines[index])
        index += 1
        if not line.strip():
            break
        if line.strip() in (END, BEGIN):
            block.problem = "the block has no trace in it (it ends before its payload)"
            return block, index
        match = HEADER_LINE.match(line)
        if match and not (last and not header[last]):
            last = match.group(1).lower()
            header[last] = match.group(2).strip()
        elif last is not None:
            header[last] = f"{header[last]} {line.strip()}".strip()
    block.header = header
    payload: list[str] = []
    checksum = None
    ended = False
    while index < len(lines):
        line = unquote(lines[index]).strip()
        index += 1
        if line == END:
            ended = True
            break
        if line == BEGIN:  # a second block starts: this one was cut
            index -= 1
            break
        if line.lower().startswith("checksum:"):
            checksum = line.split(":", 1)[1].strip()
            continue
        if not line:
            continue
        if not BASE64_CHARS.fullmatch(line):
            bad = next(c for c in line if not BASE64_CHARS.fullmatch(c))
            block.problem = (f"the block is damaged: line {index} has {bad!r}, which base64 does "
                             "not use (a mail client changed the text?)")
            return block, _skip_to_end(lines, index)
        payload.append(line)
    try:
        block.data = _decode(header, "".join(payload), checksum, ended, max_trace_bytes)
    except BlockError as exc:
        block.problem = str(exc)
    return block, index


def _skip_to_end(lines: list[str], index: int) -> int:
    while index < len(lines):
        line = unquote(lines[index]).strip()
        if line == BEGIN:
            return index
        index += 1
        if line == END:
            return index
    return index


def _decode(header: dict, text: str, checksum: str | None, ended: bool,
            max_trace_bytes: int) -> bytes:
    if not header.get("format", "").startswith("mmreplay share 1"):
        raise BlockError(f"the block's format is {header.get('format', 'not given')!r}, not "
                         f"{FORMAT!r} (a newer mmreplay wrote it?)")
    if checksum is None or not ended:
        raise BlockError(f"the block is cut short: no {'checksum' if checksum is None else 'END'} "
                         f"line after {len(text)} base64 characters (the mail was truncated?)")
    match = CHECKSUM.match(checksum)
    if not match:
        raise BlockError(f"the block's checksum line is damaged: {checksum[:60]!r}")
    crc, count = int(match.group(1), 16), int(match.group(2))
    if len(text) != count:
        raise BlockError(f"the block is damaged: {len(text)} base64 characters where its checksum "
                         f"line counts {count} (lines lost or added in transit)")
    if zlib.crc32(text.encode("ascii")) != crc:
        raise BlockError("the block is damaged: its checksum does not match (the text changed in "
                         "transit)")
    size_text = header.get("size", "")
    size_match = re.match(r"(\d{1,20}) bytes\b", size_text)
    if not size_match:
        raise BlockError(f"the block's Size line is missing or damaged: {size_text[:40]!r}")
    size = int(size_match.group(1))
    if size > max_trace_bytes:
        raise BlockError(f"the block claims a trace of {size} bytes, more than the "
                         f"{max_trace_bytes} this mmreplay accepts from a mail; refusing to "
                         "decompress it")
    sha256 = header.get("sha256", "")
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise BlockError(f"the block's Sha256 line is missing or damaged: {sha256[:70]!r}")
    try:
        payload = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BlockError(f"the block is damaged: not valid base64 ({exc})") from None
    decompressor = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    try:
        data = decompressor.decompress(payload, max_length=size + 1)
    except lzma.LZMAError as exc:
        raise BlockError(f"the block is damaged: its xz data does not decompress ({exc})") from None
    if len(data) > size:
        raise BlockError(f"the block is damaged: it decompresses to more than the {size} bytes "
                         "its Size line says")
    if not decompressor.eof:
        raise BlockError("the block is damaged: its xz data ends before the end of the stream")
    if len(data) < size:
        raise BlockError(f"the block is damaged: it decompresses to {len(data)} bytes where its "
                         f"Size line says {size}")
    if hashlib.sha256(data).hexdigest() != sha256:
        raise BlockError("the block's trace does not match its Sha256 line (damaged, or edited "
                         "by hand)")
    return data
