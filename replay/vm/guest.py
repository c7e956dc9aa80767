"""The entry point inside the guest: ``python -S -m replay.vm.guest JOB_DIR``.

It runs the programs the host compiled (``jobs.py``) with the same ``session.run_rounds`` as a
native replay, on the guest's kernel: the placement probe, the THP settings and /proc are the
guest's. It writes ``result.json`` (and ``layout.npz``) to the shared job directory and prints
progress lines (``@mmreplay {...}``) on stdout, which the host reads as they come.

Under TCG every import costs seconds, so this module imports only what a replay needs: no click,
no pyarrow (the trace was read and compiled on the host), no reporters, and no numba when the
host built the engine as a shared library (``native.py``, ``MMREPLAY_NATIVE_ENGINE``).
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

from replay.vm.native_env import NATIVE_BUILD_ENV, NATIVE_ENV, NATIVE_FAILED

SYSFS_MM = "/sys/kernel/mm"
MARKER = "@mmreplay "  # prefix of the progress lines on the guest's stdout


def emit(event: str, **fields) -> None:
    sys.stdout.write(MARKER + json.dumps({"event": event, "guest_s": time.monotonic(), **fields})
                     + "\n")
    sys.stdout.flush()


def guest_sysfs_path(relative: str) -> str:
    """/sys/kernel/mm/<relative>, refusing anything that would leave /sys/kernel/mm."""
    path = os.path.normpath(os.path.join(SYSFS_MM, relative))
    if not path.startswith(SYSFS_MM + "/"):
        raise ValueError(f"{relative}: not under {SYSFS_MM}")
    return path


def apply_sysfs(settings: list) -> dict:
    """Write each (path relative to /sys/kernel/mm, value); return what each reads back."""
    applied = {}
    for relative, value in settings:
        path = guest_sysfs_path(relative)
        try:
            with open(path, "w") as handle:
                handle.write(str(value))
            with open(path) as handle:
                now = handle.read().strip()
        except OSError as exc:
            raise RuntimeError(f"--guest-sysfs {relative}={value}: {exc.strerror or exc}") from None
        applied[relative] = {"written": value, "reads": now}
    return applied


def run_job(job_dir: Path, warm: bool = False) -> int:
    """Run the job and write its result. ``warm``: on the host, with the guest's numba settings,
    run only each item's first op and write nothing: the same imports and the same compiled
    functions with the same types as the guest, so the guest finds them all in the cache (and the
    Python copy of pyroot.py holds every module the guest loads)."""
    from replay.vm.jobs import LAYOUT_FILE, RESULT_FILE, STOP_FILE, read_job, write_json

    job, items = read_job(job_dir)
    emit("imported", what="numpy")
    sysfs = {} if warm else apply_sysfs(job.get("sysfs") or [])

    from replay.running import session
    from replay.running.layout import capture_live, nothing_captured
    from replay.measure.probes import probe_kernel_alignment
    from traces.host import host_metadata, kernel_cmdline

    emit("imported", what="engine")
    alignment = probe_kernel_alignment()
    for item in items:
        item.alignment = alignment
    stop_file = job_dir / STOP_FILE
    interrupt = session.Interrupt()
    totals = [item.program.events for item in items]

    def on_progress(index, round_index, done, copies=None):
        emit("progress", item=index, round=round_index, done=done, total=totals[index],
             copies=copies)
        if stop_file.exists():
            interrupt.request("SIGINT")

    def on_run(index, round_index, copies=None):
        emit("run", item=index, round=round_index, copies=copies)

    emit("ready")
    layout = None
    added: list = []
    with session.catch_signals(interrupt):
        if warm:
            # The modules --copies needs go into every guest's Python copy (a few small stdlib
            # modules), so that one copy serves jobs with and without copies.
            import multiprocessing.connection  # noqa: F401
            import multiprocessing.popen_fork  # noqa: F401

            import replay.running.copies  # noqa: F401
            import replay.results.flat  # noqa: F401  (the copies' summary, after their runs)
            for item in items:
                first = min(1, item.program.cleanup_start)
                if job["kind"] == "layout":
                    capture_live(item.program, item.config, alignment, first, item.max_live_bytes,
                                 interrupt)
                else:
                    session.run_program(item.program, item.config, alignment, interrupt,
                                        item.max_live_bytes, stop_op=first, plan=item.plan)
            runs = [[] for _ in items]
        elif job["kind"] == "layout":
            stop_op = job["stop_op"]
            captured, reason = (capture_live(items[0].program, items[0].config, alignment,
                                             stop_op, items[0].max_live_bytes, interrupt)
                                if stop_op > 0 else (nothing_captured(), None))
            if captured is None:
                layout = {"stopped": reason or "unknown reason"}
            else:
                _save_arrays(job_dir / LAYOUT_FILE, captured)
                layout = {"file": LAYOUT_FILE}
            runs = [[]]
        else:
            from replay.running.copies import measure

            measured = measure(items, job["repeat"], job.get("warmup", 0), interrupt,
                               job.get("perf_faults", False), job.get("copies"), on_progress,
                               on_run)
            runs = [item_runs for item_runs, _ in measured]
            added = [extra for _, extra in measured]
    document = {
        "items": [{"runs": item_runs,
                   "kernel_alignment": alignment.as_dict(),
                   "policy_emulation": alignment.emulation(item.config.policy),
                   **(added[index] if added else {})}
                  for index, (item, item_runs) in enumerate(zip(items, runs))],
        "host": host_metadata(),
        "guest_sysfs": sysfs,
        "cmdline": kernel_cmdline(),
        "interrupted": interrupt.reason,
        "layout": layout,
    }
    if warm:
        if os.environ.get(NATIVE_BUILD_ENV):
            _build_native(Path(os.environ[NATIVE_BUILD_ENV]))
        if os.environ.get("MMREPLAY_MANIFEST"):
            from replay.vm.pyroot import write_manifest
            write_manifest(os.environ["MMREPLAY_MANIFEST"])
        return 0
    write_json(job_dir / RESULT_FILE, document)
    emit("done")
    return 0


def _build_native(out_dir: Path) -> None:
    """After a warm-up run: the engine library for the guest, or why there is none (then the
    guest loads numba, slower but the same code)."""
    from replay.vm.native import build

    try:
        build(out_dir)
    except Exception as exc:  # noqa: BLE001 - any failure means: keep numba in the guest
        (out_dir / NATIVE_FAILED).write_text(" ".join(f"{type(exc).__name__}: {exc}".split()))


def _save_arrays(path: Path, arrays: dict) -> None:
    import numpy as np

    temporary = path.with_name(path.name + ".tmp.npz")
    np.savez(temporary, **arrays)
    os.replace(temporary, path)


class _OriginalFinder:
    """Finds a module missing from the guest's Python copy (pyroot.py) where the copy came from.

    The copy holds the modules a warm-up run loaded; another code path (an error path, say) may
    import one it lacks. A package imported from the copy looks for its submodules only in the
    copy, so this finder, last on sys.meta_path, retries in the original directories (on the
    guest's 9p root: slower, but found)."""

    def __init__(self, root: str):
        self.root = root.rstrip("/")

    def find_spec(self, name, path, target=None):
        if not path:
            return None
        originals = [p[len(self.root):] for p in path if p.startswith(self.root + "/")]
        if not originals:
            return None
        from importlib.machinery import PathFinder
        return PathFinder.find_spec(name, originals, target)


def main(argv: list[str]) -> int:
    if os.environ.get("MMREPLAY_PYROOT"):
        sys.meta_path.append(_OriginalFinder(os.environ["MMREPLAY_PYROOT"]))
    if os.environ.get(NATIVE_ENV):  # the engine as a shared library, no numba (native.py)
        from replay.vm.native import install
        install(os.environ[NATIVE_ENV])
    if argv[1:2] == ["--warm"]:
        return run_job(Path(argv[2]), warm=True)
    emit("python")
    job_dir = Path(argv[1])
    try:
        return run_job(job_dir)
    except Exception as exc:  # reported to the host in one line; the traceback goes to stderr
        traceback.print_exc()
        from replay.vm.jobs import RESULT_FILE, write_json

        message = " ".join(str(exc).split()) or type(exc).__name__
        write_json(job_dir / RESULT_FILE, {"error": message})
        emit("failed", error=message)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
