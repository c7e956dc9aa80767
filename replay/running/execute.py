"""Run prepared replays and build their result documents: the one place where replay and compare
(host columns and VM guests alike) run what ``runs.prepare`` set up.

Natively the items run in this process (or as ``--copies`` processes) under the signal catcher,
so that Ctrl-C and SIGTERM stop them at a chunk boundary and what was measured is kept; with a
kernel image they run inside one VM guest (``vm/run.py``), which is stopped the same way. Either
way every item that has runs gets a result document (``result.build_result``).

This module sits above ``runs``, ``layout`` and ``vm``: the guest imports the replay modules, so
nothing below may import it back.
"""

from __future__ import annotations

from typing import Callable

from traces import MmreplayError

from replay.running.config import ReplayConfig
from replay.running.copies import measure
from replay.results.result import build_result
from replay.running.runs import prepare
from replay.running.session import Interrupt, catch_signals


def run_prepared(items: list, repeat: int, warmup: int, argv: list[str] | None, extra: dict,
                 kernel=None, vm_options=None, perf_faults: bool = False,
                 copies: list[int] | None = None,
                 on_progress: Callable[..., None] | None = None,
                 on_run: Callable[..., None] | None = None,
                 notify: Callable[[str], None] | None = None) -> tuple[list[dict], str | None]:
    """Run ``items`` (``runs.Prepared``) ``warmup`` rounds uncounted, then ``repeat`` rounds,
    interleaved (A B C A B C ...); returns (one result per item that has runs, the interrupt
    reason or None). ``extra`` goes into every result (after the kernel alignment sections).

    ``kernel``: a ``vm.image.KernelImage`` runs them in one guest with ``vm_options`` (its
    errors, ``vm.runner.VmError``, are raised); None: natively, here.
    ``on_progress(item, round, events_done, copies)`` between chunks and
    ``on_run(item, round, copies)`` after each run (in a guest: after each run that finished);
    ``copies`` is None without --copies. ``notify(text)`` hears of a copy that ended early or
    of the guest's start-up steps."""
    if kernel is not None:
        from replay.vm.run import guest_results, run_items

        def on_marker(index, round_index, done, n=None):
            if on_progress is not None:
                on_progress(index, round_index, done, n)
            if on_run is not None and done == items[index].program.events:
                on_run(index, round_index, n)

        output, interrupted = run_items(kernel, items, repeat, warmup, vm_options, perf_faults,
                                        on_marker, notify, copies)
        return guest_results(items, output, repeat, argv, extra), interrupted
    interrupt = Interrupt()
    with catch_signals(interrupt):
        measured = measure(items, repeat, warmup, interrupt, perf_faults, copies, on_progress,
                           on_run, notify)
    results = [build_result(item.identity, item.config_info(repeat, copies), item_runs,
                            item.program_info(), {**item.extra_info(), **extra, **added}, argv)
               for item, (item_runs, added) in zip(items, measured) if item_runs]
    return results, interrupt.reason


def replay_trace(trace_path: str | None, config: ReplayConfig, repeat: int = 1,
                 max_live_bytes: int | None = None,
                 progress: Callable[..., None] | None = None,
                 argv: list[str] | None = None, perf_faults: bool = False,
                 pick: int | None = None, copies: list[int] | None = None,
                 notify: Callable[[str], None] | None = None, warmup: int = 0,
                 given: frozenset | None = None, kernel=None, vm_options=None) -> dict:
    """Replay a trace ``warmup`` times uncounted (the first run pays the JIT start-up and the
    first touches of fresh memory), then ``repeat`` times; returns the result document (partial
    if interrupted). ``given``: see ``runs.Prepared``; ``kernel``, ``vm_options``: see
    ``run_prepared`` (``replay --kernel``).

    ``progress(run_index, events_done, events_total)`` is called between chunks (warm-up runs
    have negative indices, -warmup .. -1); ``pick`` chooses among several traces in one mail
    input. ``copies`` (copy counts, see copies.py) runs that many replays at once as separate
    processes; progress then gets ``copies=N``, and ``notify(text)`` hears of a copy that ended
    early.
    """
    if repeat < 1 or warmup < 0:
        raise MmreplayError("--repeat must be at least 1 and --warmup at least 0")
    [prepared] = prepare(trace_path, [config], max_live_bytes, pick, given=given, copies=copies)
    events = prepared.program.events
    on_progress = None
    if progress is not None:
        def on_progress(_item, round_index, done, n):
            if n is None:
                progress(round_index - warmup, done, events)
            else:
                progress(round_index - warmup, done, events, copies=n)
    results, interrupted = run_prepared([prepared], repeat, warmup, argv, {"warmup": warmup},
                                        kernel, vm_options, perf_faults, copies, on_progress,
                                        notify=notify)
    if not results:
        raise MmreplayError(f"the {'guest' if kernel is not None else 'replay'} was interrupted "
                            f"({interrupted}) before a run finished")
    return results[0]
