"""replay, compare and layout with ``--kernel``: the same prepared replay, run inside a guest.

The trace is read, checked and compiled on the host exactly as for a native run
(``runs.prepare``; ``execute.run_prepared`` sends the items here); the guest runs those programs
and the host builds the same result document from the runs it brings back, with the guest's own
view of the machine as ``host`` (its kernel, its THP settings) and a ``vm`` section naming the
image, the accelerator and the real machine.
"""

from __future__ import annotations

from typing import Callable

from traces.errors import MmreplayError

from replay.results.result import build_result
from replay.vm.image import KernelImage
from replay.vm.runner import VmOptions, run_guest


def _peak(items) -> int:
    return max((item.program.peak_live_bytes for item in items), default=0)


def guest_results(items, output, repeat: int, argv, extra: dict | None = None) -> list[dict]:
    """One result per item that has runs, built from what the guest sent back."""
    results = []
    for item, sent in zip(items, output.document["items"]):
        if not sent["runs"]:
            continue
        config = item.config_info(repeat, (sent.get("copies") or {}).get("counts"))
        config["max_live_bytes"] = min(config["max_live_bytes"], output.vm["replay_budget_bytes"])
        copies = {"copies": sent["copies"]} if sent.get("copies") else {}
        result = build_result(item.identity, config, sent["runs"],
                              item.program_info(),
                              {"kernel_alignment": sent["kernel_alignment"],
                               "policy_emulation": sent["policy_emulation"], **(extra or {}),
                               **copies},
                              argv, host=output.document["host"])
        result["vm"] = output.vm
        results.append(result)
    return results


def run_items(kernel: KernelImage, items: list, repeat: int, warmup: int, options: VmOptions,
              perf_faults: bool = False,
              progress: Callable[..., None] | None = None,
              notify: Callable[[str], None] | None = None, copies: list[int] | None = None):
    """Run ``items`` (``runs.Prepared``) interleaved in one guest; returns (the guest's output,
    the interrupt reason or None). ``progress(item, round, events_done)``, with ``copies``
    (the copy counts of --copies, run in the guest) ``progress(item, round, events_done, n)``."""
    def on_marker(marker):
        if progress is not None and marker.get("event") == "progress":
            if copies:
                progress(marker["item"], marker["round"], marker["done"], marker["copies"])
            else:
                progress(marker["item"], marker["round"], marker["done"])

    job = {"kind": "runs", "repeat": repeat, "warmup": warmup, "perf_faults": perf_faults}
    if copies:
        job["copies"] = copies
    # The guest holds every copy's live memory at once.
    output = run_guest(kernel, items, job, options, _peak(items) * max(copies or [1]),
                       on_marker, notify)
    return output, output.document.get("interrupted")


def layout_in_vm(prepared, stop_op: int, kernel: KernelImage, options: VmOptions, notify=None):
    """``layout --kernel``: (the arrays ``layout.capture_live`` returns, the guest's host view,
    the vm section); ``layout.capture_layout``'s ``in_guest``."""
    output = run_guest(kernel, [prepared], {"kind": "layout", "stop_op": stop_op}, options,
                       prepared.program.peak_live_bytes, None, notify)
    layout = output.document.get("layout") or {}
    if output.layout_arrays is None:
        from replay.running.layout import nothing_captured
        if stop_op == 0:
            return nothing_captured(), output.document["host"], output.vm
        raise MmreplayError(f"the replay stopped in the guest before the layout was read "
                            f"({layout.get('stopped') or output.document.get('interrupted')})")
    return output.layout_arrays, output.document["host"], output.vm
