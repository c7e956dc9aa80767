"""The job a guest runs and what it sends back: files in a private directory shared with the guest.

The host writes ``job.json`` and, per configuration, ``item-N.npz``: the compiled ``OpProgram``
(and the ``ThreadPlan`` when threads are replayed) exactly as prepared for a native run. The guest
writes ``result.json`` (and ``layout.npz`` for ``layout``), each by rename, so a half-written file
is never read. The host asks a running guest to stop by creating ``stop``.

This module is imported inside the guest, where every import costs seconds under TCG: numpy and
the standard library only.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

JOB_VERSION = 1
JOB_FILE = "job.json"
RESULT_FILE = "result.json"
LAYOUT_FILE = "layout.npz"
STOP_FILE = "stop"


def _to_json(value):
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value


def pack_dataclass(obj, prefix: str, arrays: dict) -> dict:
    """Split a dataclass into arrays (into ``arrays``, keyed ``prefix.field[.i]``) and the JSON
    rest, field by field, so that fields added later travel without changes here."""
    rest = {}
    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name)
        if isinstance(value, np.ndarray):
            arrays[f"{prefix}.{field.name}"] = value
        elif isinstance(value, list) and value and all(isinstance(v, np.ndarray) for v in value):
            for index, item in enumerate(value):
                arrays[f"{prefix}.{field.name}.{index}"] = item
            rest[field.name] = {"arrays": len(value)}
        else:
            rest[field.name] = {"value": _to_json(value)}
    return rest


def unpack_dataclass(cls, prefix: str, rest: dict, arrays) -> object:
    values = {}
    for field in dataclasses.fields(cls):
        key = f"{prefix}.{field.name}"
        if key in arrays:
            values[field.name] = arrays[key]
        elif "arrays" in rest.get(field.name, {}):
            values[field.name] = [arrays[f"{key}.{i}"] for i in range(rest[field.name]["arrays"])]
        elif field.name in rest:
            values[field.name] = rest[field.name]["value"]
    return cls(**values)


def write_json(path: Path, document: dict) -> None:
    """Write by rename: the reader on the other side of the VM never sees half a file."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(_to_json(document)))
    os.replace(temporary, path)


def write_job(directory: Path, items: list, job: dict, budget_bytes: int | None = None) -> None:
    """``items``: objects with ``program``, ``plan``, ``config``, ``max_live_bytes`` and
    ``recorded_duration_ns`` (``runs.Prepared``); ``job``: the rest (rounds, sysfs, ...);
    ``budget_bytes``: the most the guest can hold (lowers each item's budget)."""
    described = []
    for index, item in enumerate(items):
        arrays: dict = {}
        budget = item.max_live_bytes if budget_bytes is None else min(item.max_live_bytes,
                                                                      budget_bytes)
        entry = {"config": item.config.as_dict(), "max_live_bytes": budget,
                 "recorded_duration_ns": item.recorded_duration_ns,
                 "program": pack_dataclass(item.program, "program", arrays),
                 "plan": pack_dataclass(item.plan, "plan", arrays) if item.plan is not None else None,
                 "arrays": f"item-{index}.npz"}
        np.savez(directory / entry["arrays"], **arrays)
        described.append(entry)
    write_json(directory / JOB_FILE, {"version": JOB_VERSION, **job, "items": described})


class GuestItem:
    """One configuration as the guest runs it: the fields ``session.run_rounds`` reads."""

    def __init__(self, directory: Path, entry: dict):
        from replay.running.config import ReplayConfig
        from replay.engine.program import OpProgram

        self.config = ReplayConfig.from_dict(entry["config"])
        self.max_live_bytes = entry["max_live_bytes"]
        self.recorded_duration_ns = entry["recorded_duration_ns"]
        with np.load(directory / entry["arrays"]) as arrays:
            arrays = dict(arrays)
        self.program = unpack_dataclass(OpProgram, "program", entry["program"], arrays)
        self.plan = None
        if entry["plan"] is not None:
            from replay.engine.threads import ThreadPlan
            self.plan = unpack_dataclass(ThreadPlan, "plan", entry["plan"], arrays)
        self.alignment = None  # probed on the guest's kernel


def read_job(directory: Path) -> tuple[dict, list[GuestItem]]:
    job = json.loads((directory / JOB_FILE).read_text())
    if job.get("version") != JOB_VERSION:
        raise ValueError(f"job version {job.get('version')} (this guest reads {JOB_VERSION})")
    return job, [GuestItem(directory, entry) for entry in job["items"]]
