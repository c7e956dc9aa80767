"""Traces shipped with mmreplay (traces/data/)."""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
# The main job's default input, best first: the real BERT inference trace, else the synthetic one.
DEFAULT_ORDER = ("bert-torch.arrow", "buffers-4632k.arrow")


def bundled(name: str) -> Path:
    return DATA / name


def default_trace() -> Path:
    for name in DEFAULT_ORDER:
        if (DATA / name).exists():
            return DATA / name
    raise FileNotFoundError(f"no bundled trace in {DATA}")
