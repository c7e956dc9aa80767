"""The result's shape in code: dataclasses naming every field of a run and of the documents.

A run (``RunMeasurements``) is built by ``session.run_program``, the result document
(``ResultDocument``) by ``result.build_result``, the compare document (``CompareDocument``) by
``replay/running/compare.py``. Each turns into exactly the JSON object documented in
docs/result-format.md with ``as_dict()`` (same keys, same order, same values), and back with
``from_dict()``, which refuses a key it does not know: a field added to the JSON without its
type, or the other way round, fails tests/test_result_format.py. Reporters read the plain dicts
(a result read from a file, from an older version or from a mail, is a dict).

A field whose value is ``OMITTED`` is left out of the JSON: that is how the keys present only
sometimes (``heap`` without a brk heap, ``threads`` without ``--threads``, ...) stay absent,
apart from the keys whose value is null ("not measured here").
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


class _Omitted:
    """The value of a key that is absent from the JSON (not null: absent)."""

    def __repr__(self) -> str:
        return "OMITTED"

    def __bool__(self) -> bool:
        return False


OMITTED: Any = _Omitted()


def _nested(kind: type) -> dict:
    return {"nested": kind}


# A field holding the object's further keys, in their order, at its place (result documents:
# the sections that depend on how the runs were made).
SPLICED = {"spliced": True}


class JsonObject:
    """as_dict/from_dict for the dataclasses below."""

    def as_dict(self) -> dict:
        out: dict = {}
        for spec in fields(self):
            value = getattr(self, spec.name)
            if value is OMITTED:
                continue
            if spec.metadata.get("spliced"):
                out.update(value)
            else:
                out[spec.name] = value.as_dict() if isinstance(value, JsonObject) else value
        return out

    @classmethod
    def from_dict(cls, data: dict):
        specs = fields(cls)
        known = {spec.name for spec in specs if not spec.metadata.get("spliced")}
        spliced = [spec.name for spec in specs if spec.metadata.get("spliced")]
        unknown = [key for key in data if key not in known]
        if unknown and not spliced:
            raise ValueError(f"{cls.__name__}: keys it does not name: {', '.join(unknown)}")
        values: dict = {}
        for spec in specs:
            if spec.name in known and spec.name in data:
                value = data[spec.name]
                kind = spec.metadata.get("nested")
                values[spec.name] = kind.from_dict(value) if kind and value is not None else value
        if spliced:
            values[spliced[0]] = {key: data[key] for key in unknown}
        return cls(**values)


# ---------------------------------------------------------------------------------------------
# One run (``runs[]``)


@dataclass(kw_only=True)
class AccessFigures(JsonObject):
    """``access``: the reads of ``--access`` (speeds null when nothing was read)."""
    pattern: str
    gbps: float | None
    ns_per_read: float | None
    bytes: int
    reads: int


@dataclass(kw_only=True)
class CgroupFigures(JsonObject):
    """``cgroup``: the counts of the run's own memory cgroup (cgroup.py)."""
    version: int
    thp_fault_alloc: int | None
    thp_collapse_alloc: int | None
    pgfault: int | None
    peak_anon_thp_bytes: int | None
    end_anon_thp_bytes: int | None
    collapsed_anon_thp_bytes: int | None = OMITTED  # with --collapse


@dataclass(kw_only=True)
class HeapFigures(JsonObject):
    """``heap``: the replay's brk heap (only when the trace moves the break)."""
    peak_bytes: int
    grown_bytes: int
    minflt: int
    touch_bytes: int
    peak_rss_bytes: int | None
    peak_anon_huge_bytes: int | None
    end_rss_bytes: int | None
    end_anon_huge_bytes: int | None
    vmas_at_peak: int | None
    collapsed_anon_huge_bytes: int | None = OMITTED  # with --collapse


@dataclass(kw_only=True)
class RunMeasurements(JsonObject):
    """One run of a replay: every figure ``session.run_program`` measured (units in the names;
    docs/result-format.md says what each is)."""
    wall_s: float
    engine_s: float
    events: int
    events_per_s: float | None
    ops: dict                      # {op: {count, failed, p50_ns, p99_ns}}
    minflt: int
    majflt: int
    vmstat_system_wide: dict       # /proc/vmstat deltas: every process on the machine counts
    perf: dict                     # {counter: count or null}
    perf_unavailable: dict         # {counter: why}
    peak_vmas: int
    peak_live_bytes: int
    peak_rss_bytes: int | None
    peak_anon_huge_bytes: int | None
    end_anon_huge_bytes: int | None
    large_mappings: int
    pmd_aligned_large_mappings: int
    pmd_aligned_by_size: dict      # {size bucket: {mappings, pmd_aligned}}
    holes: int | None
    hole_bytes: int | None
    thp_eligible_bytes: int | None
    touch_gbps: float | None
    touch_bytes: int
    access: AccessFigures = field(metadata=_nested(AccessFigures))
    samples: dict                  # {"peak", "end", "peak_collapsed": probes.layout_metrics + ...}
    address_space: dict            # region.FreshAddressSpace.as_dict() + release_failures
    policy_extra_calls: int
    policy_extra_s: float
    thp_advice_failed: int
    release_failures: int
    live_bytes_at_stop: int
    skipped: dict                  # {reason: rows}
    replayed_differently: dict     # {reason: rows}
    interrupted: bool
    interrupt_reason: str | None
    process_peak_anon_huge_bytes: int | None
    # Present only sometimes:
    cgroup: CgroupFigures = field(default=OMITTED, metadata=_nested(CgroupFigures))
    cgroup_unavailable: str = OMITTED           # why there is no cgroup section
    collapse: dict = OMITTED                    # --collapse: collapse.collapse()'s account
    collapsed_anon_huge_bytes: int | None = OMITTED
    heap: HeapFigures = field(default=OMITTED, metadata=_nested(HeapFigures))
    trace_wall_s: float = OMITTED               # with the recorded duration known
    speed_vs_recorded: float = OMITTED
    threads: list = OMITTED                     # --threads: per recorded thread
    os_threads: int = OMITTED
    cross_thread_dependencies: int = OMITTED
    wait_s: float = OMITTED
    thread_loop_s: float = OMITTED
    warmup: bool = OMITTED                      # a warm-up run kept because the command stopped


# ---------------------------------------------------------------------------------------------
# The documents


@dataclass(kw_only=True)
class ResultDocument(JsonObject):
    """``replay -o``: one configuration's runs and everything needed to compare them later.
    ``sections`` are the keys between ``program`` and ``runs`` that depend on how the runs were
    made (``kernel_alignment``, ``policy_emulation``, ``vm``, ``copies``, ``interleaved``,
    ``warmup``; ``allocator``, ``mm_trace`` for an allocation replay), in their order."""
    mmreplay_result: int
    tool_version: str
    created: str                   # ISO 8601 UTC, seconds
    trace: dict                    # result.trace_identity()
    host: dict                     # traces.host.host_metadata() of where the runs ran
    command: str                   # the command line, shell-quoted
    config: dict                   # ReplayConfig + repeat, max_live_bytes, ...
    program: dict                  # what the trace compiled to
    sections: dict = field(default_factory=dict, metadata=SPLICED)
    runs: list                     # RunMeasurements.as_dict() each (or --copies aggregates)
    summary_of: str                # "finished runs" or "partial runs"
    summary: dict                  # {dotted path: {median, min, max, stdev, n}}


@dataclass(kw_only=True)
class CompareDocument(JsonObject):
    """``compare -o``: one result document per column."""
    mmreplay_compare: int
    axis: str
    values: list
    labels: list
    repeat: int
    warmup: int
    interleaved: bool
    interrupted: str | None
    results: list                  # ResultDocument.as_dict() each
    failed: list                   # [{value, reason}]
    copies: list = OMITTED         # with --copies: the copy counts
