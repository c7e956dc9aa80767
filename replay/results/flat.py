"""Flat names for the values of a result: one naming scheme for the result's summary, the columns
of a results corpus (``mmreplay results``) and the stats of the lkp-tests program.

A value's name is the path of keys that leads to it in the result JSON, joined by '.':
``runs[i]["ops"]["mmap"]["p50_ns"]`` is ``ops.mmap.p50_ns`` within a run, and
``host["thp"]["enabled"]`` is ``host.thp.enabled`` within the document. Keys are kept exactly as
they are (the size bucket ``512K-1.5M`` keeps its dot), so a name changes only when the result's
keys do, and a figure a later version adds to results becomes a new name with no code change.
"""

from __future__ import annotations

import json
import math
import statistics

# Keys of a run whose value is the snapshots the figures were taken from, not figures of their own.
SNAPSHOT_KEYS = ("samples",)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def flatten(value: dict, prefix: str = "", skip: tuple = (), out: dict | None = None) -> dict:
    """Every scalar under ``value`` by dotted path: numbers, booleans and strings. A list becomes
    its JSON text; None, NaN and infinities are left out (JSON null means "not measured");
    keys in ``skip`` are left out with everything under them."""
    # Exact types first: this runs for every value of every result a corpus gathers.
    if out is None:
        out = {}
    for key, item in value.items():
        if key in skip:
            continue
        if item is None:
            continue
        kind = type(item)
        if kind is dict:
            flatten(item, f"{prefix}{key}.", skip, out)
        elif kind is int or kind is str or kind is bool:
            out[f"{prefix}{key}"] = item
        elif kind is float or isinstance(item, float):
            if math.isfinite(item):
                out[f"{prefix}{key}"] = item
        elif isinstance(item, dict):
            flatten(item, f"{prefix}{key}.", skip, out)
        elif isinstance(item, (int, str)):
            out[f"{prefix}{key}"] = item
        elif isinstance(item, list):
            out[f"{prefix}{key}"] = json.dumps(item, default=str)
    return out


def run_numbers(run: dict, prefix: str = "") -> dict:
    """{'ops.mmap.p50_ns': 812, 'minflt': 1234, ...}: every number of a run, by dotted path."""
    return {path: item for path, item in flatten(run, prefix, SNAPSHOT_KEYS).items()
            if is_number(item)}


def unflatten(flat: dict) -> dict:
    """The nested form of ``flatten``'s output. A key that held a dot comes back split at it
    (``512K-1.5M`` as ``512K-1`` then ``5M``), which flattens to the same name again. A name
    whose folder is also the name of a value (``a`` and ``a.b``) stays whole."""
    names = set(flat)
    out: dict = {}
    for path, item in flat.items():
        parts = path.split(".")
        if any(".".join(parts[:end]) in names for end in range(1, len(parts))):
            out[path] = item
            continue
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = item
    return out


def summarize_runs(runs: list[dict]) -> dict:
    """median, min, max, stdev of every number over the runs. (Here, not in result.py: a guest
    summarizes its --copies runs, and result.py's imports would load pyarrow there.)"""
    values: dict[str, list] = {}
    for run in runs:
        for path, value in run_numbers(run).items():
            values.setdefault(path, []).append(value)
    return {path: {"median": statistics.median(v), "min": min(v), "max": max(v),
                   "stdev": statistics.stdev(v) if len(v) > 1 else 0.0, "n": len(v)}
            for path, v in values.items()}
