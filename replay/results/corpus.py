"""The results corpus: many result documents in one Arrow table, one row per run, for any
columnar tool (pyarrow, DuckDB, pandas, polars); and reading it back as result documents, so that
``mmreplay report`` gives the same table from the corpus as from the JSON files.

Columns (names follow replay/results/flat.py; docs/results-corpus.md is the reference):

- ``file``: the result file the row came from, as it was found; ``FILE[i]`` for the i-th result
  of a compare document. ``result_index``: the result's position in the corpus (the rows of one
  result are consecutive). ``run_index``: the run's position in its result.
- every scalar of the result document outside its runs and summary, by dotted path:
  ``command``, ``trace.name``, ``trace.sha256``, ``host.kernel``, ``host.thp.enabled``,
  ``config.policy``, ... (a section a later version adds, such as ``vm``, adds its columns).
- every scalar of the run under ``run.``: ``run.events_per_s``, ``run.ops.mmap.p50_ns``,
  ``run.interrupted``, ... (the run's snapshots, ``samples``, are left out, as in the summary).

A column has the type its values share (int64, double, bool, string); values of different kinds
in one column are stored as their JSON text. A value a result does not have is null. The summary
is not stored: it is the runs' median, min and max, computed again on reading.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc

from traces import MmreplayError, __version__
from traces.files import atomic_output, open_input

from replay.results.flat import SNAPSHOT_KEYS, flatten, unflatten
from replay.reporters.report import expand_results
from replay.results.result import _check_result, read_result_document, summarize_runs

CORPUS_VERSION = 1
METADATA_KEY = b"mmreplay_results"
IDENTITY = ("file", "result_index", "run_index")
RUN_PREFIX = "run."
# Parts of a result document that are not columns: the runs become rows, the summary is derived.
NOT_COLUMNS = ("runs", "summary")
ARROW_MAGIC = b"ARROW1"
# Reading a corpus back: refuse claims no real corpus makes before Arrow allocates them.
MAX_ROWS = 100_000_000
MAX_BYTES_PER_ROW = 1 << 16


@dataclass
class Gathered:
    table: pa.Table
    files: int = 0
    results: int = 0
    skipped: list = field(default_factory=list)  # one-line reasons, each naming its file


# ---------------------------------------------------------------------------------------------
# Gathering


def result_files(inputs, pattern: str = "*.json") -> list[Path]:
    """The files to read: each file named as given, and for each folder the files under it (at
    any depth) whose name matches ``pattern``, in sorted order."""
    files = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob(pattern) if p.is_file()))
        else:
            files.append(path)
    return files


def read_results(paths) -> list[tuple[str, dict]]:
    """(source, result) pairs from result files, compare documents and corpora, in order.
    A bad file raises MmreplayError naming it."""
    pairs = []
    for path in paths:
        pairs.extend(_results_in(path))
    return pairs


def _results_in(path) -> list[tuple[str, dict]]:
    try:
        # A .json file is read as JSON without a look at its first bytes (one open per file).
        if not str(path).endswith(".json") and is_corpus_file(path):
            return corpus_results(read_corpus(path), str(path))
        return expand_results([(str(path), read_result_document(path))])
    except RecursionError:
        raise MmreplayError(f"{path}: nested too deeply to be a result") from None


def gather(inputs, pattern: str = "*.json",
           progress: Callable[[int, int], None] | None = None) -> Gathered:
    """Read every result under ``inputs`` into one table. A file that cannot be read is skipped
    and its reason kept in ``skipped``; MmreplayError when no result was read at all."""
    files = result_files(inputs, pattern)
    columns = _Columns()
    gathered = Gathered(table=None)
    for number, path in enumerate(files, 1):
        try:
            rows = [_result_rows(source, gathered.results + index, result)
                    for index, (source, result) in enumerate(_results_in(path))]
        except MmreplayError as exc:
            gathered.skipped.append(str(exc))
        except RecursionError:
            gathered.skipped.append(f"{path}: nested too deeply to be a result")
        else:
            gathered.files += 1
            gathered.results += len(rows)
            for result_rows in rows:
                for names, values in result_rows:
                    columns.add_row(names, values)
        if progress is not None:
            progress(number, len(files))
    if not gathered.results:
        if not files:
            raise MmreplayError("no result files found in " + ", ".join(map(str, inputs))
                                + f" (folders are searched for {pattern})")
        raise MmreplayError(f"no result could be read: {len(gathered.skipped)} file"
                            f"{'s' if len(gathered.skipped) != 1 else ''} skipped")
    gathered.table = columns.table()
    return gathered


def _result_rows(source: str, index: int, result: dict) -> list[tuple[tuple, tuple]]:
    """One row per run, as (column names, values): the identity columns, the document's
    columns, the run's columns."""
    document = flatten({key: value for key, value in result.items()
                        if key not in NOT_COLUMNS and key not in IDENTITY})
    head_names = IDENTITY + tuple(document)
    head_values = tuple(document.values())
    # A top-level "run" section would name columns like the runs': then later values win.
    clash = "run" in result
    rows = []
    for run_index, run in enumerate(result["runs"]):
        values = flatten(run, RUN_PREFIX, SNAPSHOT_KEYS) if isinstance(run, dict) else {}
        if clash:
            row = dict(zip(head_names, (source, index, run_index) + head_values))
            row.update(values)
            rows.append((tuple(row), tuple(row.values())))
        else:
            rows.append((head_names + tuple(values),
                         (source, index, run_index) + head_values + tuple(values.values())))
    return rows


class _Columns:
    """Rows into columns. Rows with the same column names (nearly all of them: results of one
    mmreplay version) form a group whose columns come out of one transposition, so a row costs
    no Python work per value; groups are laid into full columns, null where a group has no such
    column. Every CHUNK_ROWS rows become an Arrow chunk, so Python holds few values at a time."""

    CHUNK_ROWS = 4096

    def __init__(self):
        self.groups: dict[tuple, tuple[list, list]] = {}  # names -> (row numbers, value tuples)
        self.rows = 0
        self.chunks: list[dict[str, pa.Array]] = []

    def add_row(self, names: tuple, values: tuple) -> None:
        group = self.groups.get(names)
        if group is None:
            group = self.groups[names] = ([], [])
        group[0].append(self.rows)
        group[1].append(values)
        self.rows += 1
        if self.rows >= self.CHUNK_ROWS:
            self._flush()

    def _flush(self) -> None:
        import numpy as np

        columns: dict[str, object] = {}
        for names, (rows, values) in self.groups.items():
            transposed = zip(*values)
            if len(self.groups) == 1:
                columns = dict(zip(names, transposed))
                break
            index = np.asarray(rows)
            for name, column in zip(names, transposed):
                full = columns.get(name)
                if full is None:
                    full = columns[name] = np.full(self.rows, None, dtype=object)
                part = np.empty(len(column), dtype=object)
                part[:] = column
                full[index] = part
        if columns:
            self.chunks.append({name: _array(values) for name, values in columns.items()})
        self.groups = {}
        self.rows = 0

    def table(self) -> pa.Table:
        self._flush()
        rest = sorted({name for chunk in self.chunks for name in chunk} - set(IDENTITY))
        names = (list(IDENTITY) + [n for n in rest if not n.startswith(RUN_PREFIX)]
                 + [n for n in rest if n.startswith(RUN_PREFIX)])
        lengths = [len(chunk["file"]) for chunk in self.chunks]
        columns = []
        for name in names:
            parts = [chunk.get(name) for chunk in self.chunks]
            kind = _common_type([part.type for part in parts if part is not None])
            columns.append(pa.chunked_array(
                [pa.nulls(length, kind) if part is None else _cast(part, kind)
                 for part, length in zip(parts, lengths)], kind))
        return pa.Table.from_arrays(columns, names=names)


def _array(values) -> pa.Array:
    try:
        return pa.array(values, from_pandas=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return pa.array([v if v is None or isinstance(v, str) else json.dumps(v) for v in values],
                        pa.string())


def _common_type(types: list) -> pa.DataType:
    """The type of a column whose chunks have ``types``: theirs when they agree, float64 for
    integers and floats, else string."""
    kinds = set(types) - {pa.null()}
    if len(kinds) <= 1:
        return kinds.pop() if kinds else pa.null()
    if all(pa.types.is_integer(k) or pa.types.is_floating(k) for k in kinds):
        return pa.float64()
    return pa.string()


def _cast(array: pa.Array, kind: pa.DataType) -> pa.Array:
    if array.type == kind:
        return array
    if kind == pa.string() and pa.types.is_boolean(array.type):  # as JSON text, like _array
        return pc.if_else(array, "true", "false")
    return array.cast(kind)


def write_corpus(gathered: Gathered, path, command: str | None = None) -> None:
    """Write the table atomically as a zstd-compressed Arrow IPC file (Feather V2)."""
    meta = {"format_version": CORPUS_VERSION, "tool_version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": command, "results": gathered.results, "runs": gathered.table.num_rows,
            "files_read": gathered.files, "files_skipped": gathered.skipped}
    table = gathered.table.replace_schema_metadata({METADATA_KEY: json.dumps(meta).encode()})
    options = pa.ipc.IpcWriteOptions(compression="zstd")
    with atomic_output(path) as handle:
        with pa.ipc.new_file(handle, table.schema, options=options) as writer:
            writer.write_table(table)


# ---------------------------------------------------------------------------------------------
# Reading back


def is_corpus_file(path) -> bool:
    """True for a regular file that is an Arrow IPC file (a corpus, or a trace given by mistake:
    read_corpus says so). Pipes are never opened here: they are read once, as JSON."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
    except OSError:
        return False  # reading it as JSON gives the one-line error
    with open_input(path, "a result or results corpus") as handle:
        return handle.read(len(ARROW_MAGIC)) == ARROW_MAGIC


def read_corpus(path) -> pa.Table:
    """Read and check a corpus written by ``write_corpus``; one-line MmreplayError otherwise."""
    from traces.ipc_guard import check_ipc_sizes

    try:
        data = pa.memory_map(os.fspath(path), "r").read_buffer()
        check_ipc_sizes(data, MAX_ROWS, MAX_BYTES_PER_ROW)
        table = pa.ipc.open_file(data).read_all()
        table.validate(full=True)
    except MmreplayError as exc:
        raise MmreplayError(f"{path}: {exc}") from None
    except (pa.ArrowException, OSError, ValueError) as exc:
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise MmreplayError(f"{path}: damaged or truncated Arrow file ({detail})") from None
    meta = table.schema.metadata or {}
    if METADATA_KEY not in meta:
        kind = "an mmreplay trace" if b"mmreplay" in meta else "an Arrow file"
        raise MmreplayError(f"{path}: {kind}, not a results corpus (`mmreplay results` writes one)")
    try:
        version = json.loads(meta[METADATA_KEY]).get("format_version")
    except (ValueError, AttributeError, RecursionError):
        version = None
    if version != CORPUS_VERSION:
        raise MmreplayError(f"{path}: results corpus version {version!r} is not supported (this "
                            f"mmreplay reads version {CORPUS_VERSION})")
    for name, kind in (("file", pa.types.is_string), ("result_index", pa.types.is_integer),
                       ("run_index", pa.types.is_integer)):
        if name not in table.column_names or not kind(table.schema.field(name).type):
            raise MmreplayError(f"{path}: results corpus without a valid {name!r} column")
    return table


def corpus_results(table: pa.Table, where: str) -> list[tuple[str, dict]]:
    """The (file, result) pairs a corpus was gathered from, in order: the rows of each result
    become its runs again, the document columns its other fields."""
    names = table.column_names
    columns = {name: table.column(name).to_pylist() for name in names}
    document_names = [n for n in names if n not in IDENTITY and not n.startswith(RUN_PREFIX)]
    run_names = [n for n in names if n.startswith(RUN_PREFIX)]
    pairs = []
    start = 0
    indices = columns["result_index"]
    while start < table.num_rows:
        end = start
        while end < table.num_rows and indices[end] == indices[start]:
            end += 1
        document = unflatten({n: columns[n][start] for n in document_names
                              if columns[n][start] is not None})
        runs = [unflatten({n[len(RUN_PREFIX):]: columns[n][row] for n in run_names
                           if columns[n][row] is not None}) for row in range(start, end)]
        result = {**document, "runs": runs, "summary": summarize_runs(runs)}
        _check_result(result, f"{where} (rows {start}-{end - 1})")
        pairs.append((columns["file"][start] or f"{where}[{indices[start]}]", result))
        start = end
    return pairs
