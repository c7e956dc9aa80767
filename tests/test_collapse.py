"""`--collapse` (issue 19, item 4): what MADV_COLLAPSE makes of a layout, reported apart from the
huge pages the replay got at fault time.

The cactusBSSN pattern: same-sized 4632 KiB arrays alive together. Placed one after another
(no-align, as Linux <= 6.6 did) they merge into a few VMAs; at fault time a 2 MiB block that
straddles two arrays was faulted in 4 KiB pages, from the first array's touch, before the second
existed. Collapse afterwards makes every whole block of the merged VMAs huge. Aligned starts
(6.7's rule) leave holes, and cap the same arrays at 2 blocks each. Both figures come from the
kernel's own smaps.
"""

from __future__ import annotations

from replays import first_run
from tracegen import buffers_trace
from traces import write_trace

KIB, MIB = 1 << 10, 1 << 20


def replay(run_cli, path, tmp_path, *options) -> dict:
    return first_run(run_cli, path, tmp_path / "r.json", "--thp", "always", *options)


def test_collapse_reaches_the_layouts_ceiling_and_is_reported_apart(run_cli, tmp_path):
    path = write_trace(buffers_trace(24, 4632 * KIB), tmp_path / "arrays.arrow")
    plain = replay(run_cli, path, tmp_path, "--policy", "no-align", "--collapse", "madvise")
    # Fault time: blocks straddling two arrays were faulted in 4 KiB pages before the second
    # array existed; MADV_COLLAPSE then makes every whole block of the merged VMA huge.
    assert plain["peak_anon_huge_bytes"] < plain["collapsed_anon_huge_bytes"]
    assert plain["collapsed_anon_huge_bytes"] == plain["thp_eligible_bytes"]
    assert plain["collapse"]["how"] == "madvise" and plain["collapse"]["failed"] == 0
    aligned = replay(run_cli, path, tmp_path, "--policy", "align-ge-pmd", "--collapse", "madvise")
    # Aligned starts: every array holds exactly 2 whole blocks, huge from the first fault; the
    # padding holes keep collapse from doing more.
    assert aligned["peak_anon_huge_bytes"] == aligned["collapsed_anon_huge_bytes"] == 24 * 4 * MIB
    assert aligned["collapsed_anon_huge_bytes"] < plain["collapsed_anon_huge_bytes"]
    assert plain["peak_vmas"] < aligned["peak_vmas"] == 24
    # Without --collapse there is no collapsed figure, and the table has no row for it.
    none = replay(run_cli, path, tmp_path, "--policy", "no-align")
    assert "collapsed_anon_huge_bytes" not in none and "collapse" not in none


def test_bad_collapse_values_are_one_line_errors(run_cli, tmp_path):
    path = write_trace(buffers_trace(2, MIB), tmp_path / "t.arrow")
    for value in ("sometimes", "khugepaged", "khugepaged:0", "khugepaged:-1"):
        done = run_cli("replay", path, "--collapse", value)
        assert done.exit_code == 2 and done.stderr.startswith("Error: bad --collapse"), done.output
