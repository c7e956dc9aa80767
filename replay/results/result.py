"""The result document (JSON): the runs of one configuration plus everything needed to compare it
with a result from another machine later (host, kernel, THP settings, trace hash, command)."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import shlex
import sys
from pathlib import Path

import orjson

from traces import MmreplayError, __version__, trace_metadata
from traces.format import events_sha256
from traces.files import open_input, write_text
from traces.inputs import open_trace
from traces.host import host_metadata

from replay.results.flat import run_numbers, summarize_runs
from replay.results.result_types import ResultDocument

RESULT_VERSION = 1


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def trace_identity(path: str | Path, table, pick: int | None = None) -> dict:
    """What a result says about its trace. The sha256 is the trace file's: for a trace read out
    of a mail, the file the block or attachment holds (what `mmreplay share` printed)."""
    meta = trace_metadata(table)
    source = open_trace(path, pick)
    identity = {"path": str(path), "name": Path(path).name, "sha256": source.sha256(),
                "events_sha256": events_sha256(table), "events": table.num_rows, "source": meta.get("source", "unknown"),
            "recorded_on": (meta.get("host") or {}).get("kernel")}
    if source.where:
        identity["found_in"] = source.where
    return identity


def command_line(argv: list[str] | None = None) -> str:
    """The exact mmreplay command being run, shell-quoted: 'mmreplay replay t.arrow ...'."""
    argv = list(sys.argv if argv is None else argv)
    if argv:
        argv[0] = Path(argv[0]).name
    return " ".join(shlex.quote(str(a)) for a in argv)


def flatten_numbers(run: dict, prefix: str = "") -> dict:
    """{'ops.mmap.p50_ns': 812, 'minflt': 1234, ...}: every number of a run, by dotted path
    (the naming scheme is described in replay/results/flat.py)."""
    return run_numbers(run, prefix)


def finished(run: dict) -> bool:
    """A measured run that went to the end: not stopped by a signal or the memory budget, and not
    an uncounted warm-up run (kept when a compare stops during warm-up)."""
    return not run.get("interrupted") and not run.get("warmup")


def finished_runs(result: dict) -> list[dict]:
    return [run for run in result["runs"] if finished(run)]


def build_result(trace: dict, config: dict, runs: list[dict], program: dict, extra: dict,
                 argv: list[str] | None = None, host: dict | None = None) -> dict:
    """The result document. Its ``summary`` covers the finished runs only; when no run finished
    it covers the partial ones and says so (``summary_of``). ``host``: the machine the runs ran
    on as it saw itself (default: this one; a VM guest's own view for runs inside a guest, whose
    ``vm`` section then names the real machine)."""
    done = [run for run in runs if finished(run)]
    return ResultDocument(
        mmreplay_result=RESULT_VERSION,
        tool_version=__version__,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        trace=trace,
        host=host if host is not None else host_metadata(),
        command=command_line(argv),
        config=config,
        program=program,
        sections=extra,
        runs=runs,
        summary_of="finished runs" if done else "partial runs",
        summary=summarize_runs(done or runs),
    ).as_dict()


def result_json(document: dict) -> str:
    """A result or compare document as JSON text (what -o writes and --json prints)."""
    return json.dumps(document, indent=1, sort_keys=False, default=_json_default) + "\n"


def write_result(result: dict, path: str | Path) -> None:
    """Write a result document to ``path`` ('-': stdout)."""
    write_text(path, result_json(result))


def _json_default(value):
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


# A result of a million-event replay is well under a megabyte; a compare of many configurations
# a few. Anything far larger is not one.
MAX_RESULT_BYTES = 64 << 20


def read_result_document(path: str | Path) -> dict:
    """A result or a compare document (``replay -o`` / ``compare -o``), checked."""
    what = "a result (the JSON that replay -o or compare -o writes)"
    with open_input(path, what) as handle:
        try:
            data = handle.read(MAX_RESULT_BYTES + 1)
        except OSError as exc:
            raise MmreplayError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_RESULT_BYTES:
        raise MmreplayError(f"{path}: larger than {MAX_RESULT_BYTES >> 20} MiB, not {what}")
    if data.startswith(b"ARROW1"):
        raise MmreplayError(f"{path}: an mmreplay trace, not {what}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise MmreplayError(f"{path}: binary data, not {what}") from None
    try:
        document = _parse_json(text)
    except ValueError as exc:
        raise MmreplayError(f"{path}: not {what}: no valid JSON ({exc})") from None
    except RecursionError:
        raise MmreplayError(f"{path}: not {what}: JSON nested too deeply") from None
    if isinstance(document, dict) and "mmreplay_compare" in document:
        results = document.get("results")
        if not isinstance(results, list) or not results:
            raise MmreplayError(f"{path}: compare document without results")
        for index, result in enumerate(results):
            _check_result(result, f"{path}[{index}]")
        return document
    _check_result(document, str(path))
    return document


def _parse_json(text: str):
    """json.loads, through orjson when it accepts the text: a results corpus parses 10,000
    files, and orjson does it in a third of the time. json.loads has the last word, so that
    what orjson refuses (NaN, Infinity, deep nesting) behaves, and fails, as it always did."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def _check_result(result, where: str) -> None:
    if not isinstance(result, dict) or result.get("mmreplay_result") != RESULT_VERSION:
        raise MmreplayError(f"{where}: not an mmreplay result (no mmreplay_result: {RESULT_VERSION})")
    for key in ("trace", "config", "runs"):
        if key not in result:
            raise MmreplayError(f"{where}: result has no {key!r}")
    if not isinstance(result["runs"], list) or not result["runs"]:
        raise MmreplayError(f"{where}: result has no runs")
    # Results travel by mail too: the shapes every reporter reads, checked once here.
    for key, kind in (("trace", dict), ("config", dict), ("host", dict), ("summary", dict)):
        if key in result and not isinstance(result[key], kind):
            raise MmreplayError(f"{where}: result field {key!r} is not a {kind.__name__}")
    if not all(isinstance(run, dict) for run in result["runs"]):
        raise MmreplayError(f"{where}: result has a run that is not an object")


def read_result(path: str | Path) -> dict:
    document = read_result_document(path)
    if "mmreplay_compare" in document:
        raise MmreplayError(f"{path}: a compare document, not a single result")
    return document

