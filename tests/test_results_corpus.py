"""mmreplay results: real result files into one Arrow table (one row per run) that report reads
as it reads the JSON files, and that pyarrow (or DuckDB) can query."""

from __future__ import annotations

import hashlib
import json
import platform
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.feather as feather
import pytest
from hypothesis import given
from hypothesis import strategies as st

from replay.results.flat import flatten, unflatten

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "results-corpus.md"


def corpus(run_cli, inputs, out: Path, *more):
    result = run_cli("results", *inputs, "-o", out, "--no-progress", *more)
    assert result.exit_code == 0, result.output + result.stderr
    return result


def results_of(folder: Path) -> list[tuple[str, dict]]:
    """(file, result) pairs of the JSON files, compare documents expanded, in sorted order."""
    pairs = []
    for path in sorted(folder.glob("*.json")):
        document = json.loads(path.read_text())
        if "mmreplay_compare" in document:
            pairs += [(f"{path}[{i}]", r) for i, r in enumerate(document["results"])]
        else:
            pairs.append((str(path), document))
    return pairs


def test_report_on_the_corpus_gives_the_table_report_gives_on_the_files(run_cli, suite_results,
                                                                        tmp_path):
    out = tmp_path / "results.arrow"
    summary = corpus(run_cli, [suite_results], out)
    assert re.match(r"results  4 results, 6 runs from 3 files -> ", summary.output)
    files = sorted(suite_results.glob("*.json"))
    for fmt in ("text", "markdown"):
        from_files = run_cli("report", *files, "--format", fmt)
        from_corpus = run_cli("report", out, "--format", fmt)
        assert from_files.exit_code == from_corpus.exit_code == 0, from_corpus.output
        assert from_corpus.output == from_files.output
    # Corpora from two machines combine: the merged corpus reports as all the files together.
    again = tmp_path / "again.arrow"
    corpus(run_cli, [files[0]], again)
    merged = tmp_path / "merged.arrow"
    corpus(run_cli, [out, again], merged)
    assert run_cli("report", merged).output == run_cli("report", *files, files[0]).output
    assert feather.read_table(merged).num_rows == 6 + 2


def test_one_row_per_run_with_the_machine_the_trace_and_every_figure(run_cli, suite_results,
                                                                    bundled_trace, tmp_path):
    out = tmp_path / "results.arrow"
    corpus(run_cli, [suite_results], out)
    table = feather.read_table(out)
    pairs = results_of(suite_results)
    runs = [(source, index, result, run) for index, (source, result) in enumerate(pairs)
            for run in result["runs"]]
    assert table.num_rows == len(runs) == 6
    assert table.column_names[:3] == ["file", "result_index", "run_index"]
    rows = table.to_pylist()
    sha256 = hashlib.sha256(bundled_trace.read_bytes()).hexdigest()
    for row, (source, index, result, run) in zip(rows, runs):
        assert row["file"] == source and row["result_index"] == index
        assert row["run_index"] == result["runs"].index(run)
        assert row["host.kernel"] == platform.release()
        assert row["host.thp.enabled"] == result["host"]["thp"]["enabled"]
        assert row["trace.sha256"] == sha256 and row["trace.name"] == bundled_trace.name
        assert row["command"] == result["command"]
        assert row["config.policy"] == result["config"]["policy"]
        assert row["run.interrupted"] is False
        for name, value in flatten(run, "run.", ("samples",)).items():
            assert row[name] == value, name
    assert pa.types.is_floating(table.schema.field("run.events_per_s").type)
    assert pa.types.is_integer(table.schema.field("run.pmd_aligned_large_mappings").type)
    assert pa.types.is_boolean(table.schema.field("run.interrupted").type)


def test_a_group_by_over_the_corpus_gives_the_medians_of_the_files(run_cli, suite_results,
                                                                  tmp_path):
    """The docs' question, median events/s per configuration for one trace, with pyarrow."""
    out = tmp_path / "results.arrow"
    corpus(run_cli, [suite_results], out)
    table = feather.read_table(out)
    table = table.filter(pc.equal(table["trace.name"], "buffers-4632k.arrow"))
    grouped = table.group_by("config.policy").aggregate([("run.events_per_s", "approximate_median"),
                                                         ("run.events_per_s", "list")])
    expected: dict[str, list] = {}
    for _, result in results_of(suite_results):
        expected.setdefault(result["config"]["policy"], []).extend(
            run["events_per_s"] for run in result["runs"])
    got = dict(zip(grouped["config.policy"].to_pylist(), grouped["run.events_per_s_list"].to_pylist()))
    assert {k: sorted(v) for k, v in got.items()} == {k: sorted(v) for k, v in expected.items()}
    assert {k: statistics.median(v) for k, v in got.items()} == {
        k: statistics.median(v) for k, v in expected.items()}


def test_the_documented_duckdb_query_runs(run_cli, suite_results, tmp_path, monkeypatch, capsys):
    pytest.importorskip("duckdb")
    corpus(run_cli, [suite_results], tmp_path / "results.arrow")
    code = re.search(r"```python\n(.*?)```", DOCS.read_text(), re.S)[1]
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(code.replace("bert-torch.arrow", "buffers-4632k.arrow"), scope)  # our own docs
    expected: dict = {}
    for _, result in results_of(suite_results):
        key = (result["host"]["kernel"], result["config"]["policy"])
        expected.setdefault(key, []).extend(run["events_per_s"] for run in result["runs"])
    got = {(kernel, policy): (median, runs) for kernel, policy, median, runs in scope["rows"]}
    assert set(got) == set(expected)
    for key, values in expected.items():
        assert got[key] == (pytest.approx(statistics.median(values)), len(values)), key
    assert len(capsys.readouterr().out.splitlines()) == len(expected) == 2


def test_chunks_of_rows_make_the_same_table(suite_results, tmp_path, monkeypatch):
    """Rows become Arrow chunks every CHUNK_ROWS; a column whose values differ in kind between
    chunks (an integer here, a float or a string there) or that a chunk lacks comes out as
    one column with one type either way."""
    from replay.results import corpus

    folder = tmp_path / "kinds"
    folder.mkdir()
    for name in ("a.json", "b.json", "c.json"):
        (folder / name).write_text((suite_results / name).read_text())
    odd = json.loads((suite_results / "a.json").read_text())
    odd["runs"][1]["minflt"] = 1.5               # int elsewhere: the column becomes float64
    odd["config"]["policy"] = 7                   # string elsewhere: the column becomes text
    odd["runs"][0]["only_here"] = {"figure": 3}  # null in every other row
    (folder / "d.json").write_text(json.dumps(odd))
    whole = corpus.gather([folder]).table
    monkeypatch.setattr(corpus._Columns, "CHUNK_ROWS", 2)
    chunked = corpus.gather([folder]).table
    assert chunked.column("file").num_chunks > 1
    assert chunked.combine_chunks().equals(whole.combine_chunks())
    assert whole.schema.field("run.minflt").type == pa.float64()
    assert whole.schema.field("config.policy").type == pa.string()
    assert whole.column("config.policy").to_pylist()[-2:] == ["7", "7"]
    assert whole.column("run.only_here.figure").to_pylist() == [None] * 6 + [3, None]


def test_bad_files_are_skipped_one_line_each_and_counted(run_cli, suite_results, bundled_trace,
                                                        tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "good.json").write_text((suite_results / "a.json").read_text())
    (folder / "junk.json").write_bytes(b"\xff\xfe not json")
    (folder / "other.json").write_text(json.dumps({"hello": 1}))
    (folder / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    out = tmp_path / "c.arrow"
    result = corpus(run_cli, [folder, bundled_trace], out)
    skipped = [line for line in result.stderr.splitlines() if line.startswith("skipped ")]
    assert len(skipped) == 4 and result.stderr.count("\n") == 4, result.stderr
    for name in ("junk.json", "other.json", "deep.json", bundled_trace.name):
        assert sum(name in line for line in skipped) == 1, (name, skipped)
    assert "results  1 results, 2 runs from 1 files" in result.output
    assert "skipped  4 files" in result.output
    assert feather.read_table(out).num_rows == 2

    nothing = run_cli("results", folder / "junk.json", folder / "other.json", "-o", out)
    assert nothing.exit_code == 2
    assert nothing.stderr.splitlines()[-1] == "Error: no result could be read: 2 files skipped"
    assert feather.read_table(out).num_rows == 2  # the previous corpus is untouched
    empty = tmp_path / "empty"
    empty.mkdir()
    none = run_cli("results", empty, "-o", tmp_path / "none.arrow")
    assert none.exit_code == 2 and "no result files found" in none.stderr
    assert not (tmp_path / "none.arrow").exists()


def test_report_refuses_a_trace_and_a_damaged_corpus_with_one_line(run_cli, suite_results,
                                                                  bundled_trace, tmp_path):
    out = tmp_path / "c.arrow"
    corpus(run_cli, [suite_results], out)
    cut = tmp_path / "cut.arrow"
    cut.write_bytes(out.read_bytes()[: out.stat().st_size // 2])
    for path, message in ((bundled_trace, "an mmreplay trace, not a results corpus"),
                          (cut, "damaged or truncated Arrow file")):
        result = run_cli("report", path, suite_results / "a.json")
        assert result.exit_code == 2
        assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1
        assert message in result.stderr, result.stderr


def test_the_corpus_goes_to_stdout_with_dash(run_cli, suite_results):
    result = run_cli("results", suite_results / "a.json", "-o", "-", "--json")
    assert result.exit_code == 0, result.stderr
    table = pa.ipc.open_file(pa.py_buffer(result.stdout_bytes)).read_all()
    assert table.num_rows == 2
    assert json.loads(result.stderr)["runs"] == 2


def test_the_speed_benchmark_runs():
    """benchmarks/results_speed.py on a few files (the figures themselves live in the benchmark)."""
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "results_speed.py"),
                           "--count", "20"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "results       20 files" in done.stdout
    assert re.search(r"corpus +40 rows x \d+ columns", done.stdout)
    assert re.search(r"gather .* [\d.]+x the baseline", done.stdout)


scalars = st.one_of(st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=False, allow_infinity=False),
                    st.booleans(), st.text(max_size=5))
keys = st.text(alphabet="ab.-5", min_size=1, max_size=4)
trees = st.recursive(st.dictionaries(keys, scalars, max_size=4),
                     lambda inner: st.dictionaries(keys, st.one_of(scalars, inner), max_size=4),
                     max_leaves=20)


@given(trees)
def test_names_survive_the_trip_through_nesting(tree):
    """What the corpus stores (flat names) and what report reads back (nested documents) name
    the same values, keys with dots included."""
    flat = flatten(tree)
    assert flatten(unflatten(flat)) == flat


def test_a_result_with_nan_figures_still_reads(run_cli, suite_results, tmp_path):
    """Python's json writes NaN for a figure that could not be computed; orjson (the fast
    parser) refuses it, so such a file must still be read, by json, as before."""
    source = sorted(suite_results.glob("*.json"))[0]
    document = json.loads(source.read_text())
    document["runs"][0]["events_per_s"] = float("nan")
    nan_file = tmp_path / "nan.json"
    nan_file.write_text(json.dumps(document))
    assert "NaN" in nan_file.read_text()
    out = tmp_path / "results.arrow"
    corpus(run_cli, [nan_file], out)
    table = feather.read_table(out)
    assert table.num_rows == len(document["runs"])
    assert table.column("run.events_per_s").null_count == 1  # not measured: null, as documented
