"""Replay a trace up to one moment and capture the replay's address space (``mmreplay layout``).

``capture_layout`` touches the kernel: it runs the replay to ``--at``, reads /proc/self/smaps and
asks PAGEMAP_SCAN which ranges are mapped by huge pages (``probes.huge_ranges``), then releases
everything. What was read becomes a ``Layout`` (``replay/reporters/layout_geometry.py``), which
``replay/reporters/layout_text.py`` draws as ASCII and ``replay/reporters/pictures.py`` as PNG.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from traces.errors import MmreplayError
from traces.host import host_metadata

from replay.measure.collapse import collapse
from replay.running.config import ReplayConfig
from replay.reporters.layout_geometry import Layout, layout_from, ranges_array
from replay.engine.model import coalesce_pieces
from replay.measure.probes import Vmas, huge_ranges, layout_metrics, read_smaps
from replay.engine.program import ID_MAPPED


def parse_at(text) -> str | int:
    """--at: 'peak', 'end' or an event number (0-based row, as ``info`` counts them)."""
    value = str(text).strip().lower()
    if value in ("peak", "end"):
        return value
    if value.isdigit():
        return int(value)
    raise MmreplayError(f"bad --at {text!r} (expected peak, end or an event number >= 0)")


def capture_layout(trace_path: str | None, config: ReplayConfig, at: str | int = "peak",
                   max_live_bytes: int | None = None,
                   progress: Callable[[int, int], None] | None = None,
                   pick: int | None = None,
                   in_guest: Callable | None = None) -> Layout:
    """Replay the trace up to ``at``, read the layout of the replay's own mappings, release them.

    ``at`` is 'peak' (the first moment of most live bytes), 'end' (after the last event, before
    the cleanup) or an event number N (just after event N). ``progress(events_done,
    events_to_replay)`` is called between chunks. ``in_guest(prepared, stop_op)`` runs the capture
    inside a VM guest instead and returns (captured arrays, the guest's host metadata, its vm
    section): ``layout --kernel``.
    """
    from replay.running.runs import prepare
    from replay.running.session import Interrupt, catch_signals

    where = parse_at(at)

    def check_at(path, table) -> None:
        if isinstance(where, int) and where >= table.num_rows:
            raise MmreplayError(f"--at {where}: {path.name} has {table.num_rows} events"
                                + (f", numbered 0 to {table.num_rows - 1}" if table.num_rows else ""))

    [prepared] = prepare(trace_path, [config], max_live_bytes, pick,
                         stop_event=where + 1 if isinstance(where, int) else None, check=check_at)
    path, table = prepared.path, prepared.table
    program = prepared.program
    stop_op = program.peak_op if where == "peak" else program.cleanup_start
    if isinstance(where, int):
        events_replayed = where + 1
    elif where == "end":
        events_replayed = program.events
    else:
        events_replayed = int(program.trace_row[stop_op - 1]) + 1 if stop_op else 0

    host, vm = host_metadata(), None
    if in_guest is not None:  # layout --kernel: the same capture, inside a VM guest
        captured, host, vm = in_guest(prepared, stop_op)
        reason = None
    elif stop_op > 0:
        interrupt = Interrupt()
        with catch_signals(interrupt):
            captured, reason = capture_live(
                program, config, prepared.alignment, stop_op, prepared.max_live_bytes, interrupt,
                None if progress is None else (lambda done: progress(done, events_replayed)))
    else:  # nothing is mapped yet at that point: nothing to run
        captured, reason = nothing_captured(), None
    if captured is None:
        raise MmreplayError(f"the replay stopped before --at {at} was reached "
                            f"({reason or 'unknown reason'})")
    layout = layout_from_capture(captured, trace_name=Path(path).name,
                                 trace_events=table.num_rows, config=config.as_dict(),
                                 at=where if isinstance(where, str) else "event",
                                 events_replayed=events_replayed, host=host)
    layout.vm = vm
    return layout


def capture_live(program, config: ReplayConfig, alignment, stop_op: int,
                 max_live_bytes: int | None, interrupt,
                 on_progress: Callable[[int], None] | None = None) -> tuple[dict | None, str | None]:
    """Run ops [0, stop_op) and read the replay's layout while its mappings are live;
    ``on_progress(events_done)`` between chunks.

    Returns (the arrays ``layout_from_capture`` takes, or None if the run stopped first; the
    interrupt reason). Runs on the host, or inside a VM guest (replay/vm/guest.py)."""
    from replay.running.session import run_program

    captured: dict = {}

    def on_stop(state, pieces) -> None:
        # Read everything while the mappings are live: run_program releases them afterwards.
        pieces = coalesce_pieces(pieces)  # a mapping's neighbouring pieces drawn as one
        replay = state.ranges(pieces)
        if config.collapse != "none":
            # Arrays only (see below): what collapse did, as JSON text.
            captured["collapse_json"] = np.array(json.dumps(collapse(config.collapse, replay)))
        # Huge pages first: khugepaged may collapse more in between, never fewer, so the scan
        # stays within the AnonHugePages read after it.
        huge = huge_ranges(replay)
        vmas = read_smaps()
        captured.update(vmas_start=vmas.start, vmas_end=vmas.end, vmas_rss=vmas.rss,
                        vmas_anon_huge=vmas.anon_huge, vmas_thp_eligible=vmas.thp_eligible)
        if huge is not None:
            captured["huge"] = huge
        captured["replay"] = replay
        ids = np.unique(pieces[:, 0].astype(np.int64)) if len(pieces) else np.zeros(0, np.int64)
        ids = ids[(state.id_state[ids] & ID_MAPPED) != 0]
        heap = program.heap_id
        if heap >= 0 and heap in ids:
            ids = ids[ids != heap]  # not an mmap: the mapping figures leave it out, as replay's
            # Arrays only: a capture travels back from a VM guest as an .npz file.
            captured["heap_ranges"] = state.ranges(pieces[pieces[:, 0] == heap])
            captured["heap_start_reserved"] = np.array(
                [state.base[heap], program.id_length[heap]], np.int64)
        captured["mapping_start"] = state.base[ids].copy()
        captured["mapping_length"] = program.id_length[ids].copy()
        captured["mapping_anon"] = program.id_anon[ids].copy()

    run = run_program(program, config, alignment, interrupt, max_live_bytes, stop_op=stop_op,
                      on_stop=on_stop, on_progress=on_progress)
    return (captured or None), run["interrupt_reason"]


def nothing_captured() -> dict:
    empty = np.zeros(0, np.int64)
    return {"vmas_start": empty, "vmas_end": empty, "vmas_rss": empty, "vmas_anon_huge": empty,
            "vmas_thp_eligible": np.zeros(0, np.int8), "huge": ranges_array(empty),
            "replay": ranges_array(empty), "mapping_start": empty, "mapping_length": empty,
            "mapping_anon": np.zeros(0, bool)}


def layout_from_capture(captured: dict, **fields) -> Layout:
    """A ``Layout`` from ``capture_live``'s arrays (a plain dict of arrays: it travels back from
    a VM guest as an .npz file); ``fields`` are ``layout_from``'s keyword arguments."""
    vmas = Vmas(captured["vmas_start"], captured["vmas_end"], captured["vmas_rss"],
                captured["vmas_anon_huge"], captured["vmas_thp_eligible"])
    heap = None
    if "heap_ranges" in captured:
        ranges = np.asarray(captured["heap_ranges"], np.int64).reshape(-1, 2)
        start, reserved = (int(v) for v in captured["heap_start_reserved"])
        heap = {"start": start, "bytes": int((ranges[:, 1] - ranges[:, 0]).sum()),
                "reserved_bytes": reserved, **layout_metrics(vmas, ranges)}
    done = json.loads(str(captured["collapse_json"])) if "collapse_json" in captured else None
    return layout_from(vmas, captured["replay"], captured.get("huge"), captured["mapping_start"],
                       captured["mapping_length"], mapping_anon=captured["mapping_anon"],
                       heap=heap, collapse=done, **fields)
