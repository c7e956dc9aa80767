"""mmreplay share, and every trace-reading command reading the trace back out of mail (issue 13).

The mails are built with Python's email and mailbox modules the way clients save them: a
message with the block inline, one with the trace attached, an mbox of a post and a reply
quoting it (as `b4 mbox` saves a thread), and a reply quoted twice in a plain text.
"""

from __future__ import annotations

import base64
import hashlib
import json
import lzma
import mailbox
import re
from email.message import EmailMessage
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from traces import read_trace, trace_metadata
from traces.format import events_sha256
from traces.share import MAIL_LIMIT_CHARS, WIDTH
from traces.summary import summarize
from traces.units import fmt_bytes

DATA = Path(__file__).resolve().parent.parent / "traces" / "data"
ORT = DATA / "bert-onnxruntime.arrow"
TORCH = DATA / "bert-torch.arrow"


def share(run_cli, trace, *args) -> tuple[str, str]:
    result = run_cli("share", trace, *args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout, result.stderr


def header_value(block: str, name: str) -> str:
    return re.search(rf"^{name}: (.*)$", block, re.M).group(1)


def mail(subject: str, body: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Reporter <reporter@example.org>"
    message["To"] = "linux-mm@kvack.org"
    message["Subject"] = subject
    message.set_content(body)
    return message


def quoted(text: str, marker: str = "> ") -> str:
    return "".join(f"{marker}{line}\n" for line in text.splitlines())


def info_json(run_cli, path, *args) -> dict:
    result = run_cli("info", path, "--json", *args)
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def ort_block() -> str:
    """The bundled ONNX Runtime trace as a block, nothing anonymised (so its events are the
    original's, thread ids included)."""
    from click.testing import CliRunner

    from replay.cli import cli

    result = CliRunner().invoke(cli, ["share", str(ORT), "--keep", "hostname,paths,tids"])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_share_then_mail_then_replay_gives_the_original_events(tmp_path, run_cli, ort_block):
    """Acceptance: share -> a saved message, an mbox of two messages, a quoted reply -> info and
    replay read the same events (content hash) as the original trace."""
    original = events_sha256(read_trace(ORT))
    sha256 = header_value(ort_block, "Sha256")
    eml = tmp_path / "repro.eml"
    eml.write_bytes(mail("[REPORT] BERT through ONNX Runtime", "Hello linux-mm,\n\n" + ort_block
                         + "\nThanks\n").as_bytes())
    box = mailbox.mbox(tmp_path / "thread.mbox")
    box.add(mail("[REPORT] BERT through ONNX Runtime", "Hello,\n\n" + ort_block))
    box.add(mail("Re: [REPORT] BERT through ONNX Runtime",
                 "On Monday, Reporter wrote:\n" + quoted(ort_block) + "\nCannot reproduce.\n"))
    box.close()
    reply = tmp_path / "reply.txt"
    reply.write_text("Someone wrote:\n> Another one wrote:\n" + quoted(quoted(ort_block), ">"))

    for path in (eml, tmp_path / "thread.mbox", reply):
        document = info_json(run_cli, path)
        assert document["events_sha256"] == original, path
        assert document["events"] == 5799
        assert document["metadata"]["shared"]["from_sha256"] == hashlib.sha256(
            ORT.read_bytes()).hexdigest()

    found_in = {eml: 'the message ("[REPORT] BERT through ONNX Runtime"), block at line 3',
                tmp_path / "thread.mbox": 'message 1 ("[REPORT] BERT through ONNX',
                reply: "block at line"}
    for path, where in found_in.items():
        out = tmp_path / f"{path.name}.json"
        replayed = run_cli("replay", path, "--touch", "none", "-o", out,
                           "--no-progress")
        assert replayed.exit_code == 0, (replayed.output, replayed.exception)
        result = json.loads(out.read_text())
        assert result["trace"]["events_sha256"] == original
        assert result["trace"]["sha256"] == sha256  # the shared file's hash, as the block says
        assert result["trace"]["found_in"].startswith(where), result["trace"]["found_in"]
        assert result["runs"][-1]["events"] == 5799


def test_a_trace_attached_to_a_mail_reads(tmp_path, run_cli):
    message = mail("trace attached", "See the attachment.\n")
    message.add_attachment(ORT.read_bytes(), maintype="application",
                           subtype="vnd.apache.arrow.file", filename="ort.arrow")
    (tmp_path / "attached.eml").write_bytes(message.as_bytes())
    document = info_json(run_cli, tmp_path / "attached.eml")
    assert document["events_sha256"] == events_sha256(read_trace(ORT))


def test_the_block_is_plain_72_column_text_saying_what_it_holds(run_cli, ort_block):
    block, stderr = share(run_cli, ORT)
    lines = block.splitlines()
    assert lines[0] == "-----BEGIN MMREPLAY TRACE-----" and lines[-1] == "-----END MMREPLAY TRACE-----"
    assert max(len(line) for line in lines) <= WIDTH
    assert all(line.isascii() and line.isprintable() for line in lines)
    assert header_value(block, "Events").startswith(
        "5799 (mmap 2642, munmap 2230, madvise 12, mprotect 102, brk 813)")
    assert header_value(block, "Threads") == "13"
    summary = summarize(read_trace(ORT))
    assert header_value(block, "Peak-Live") == (f"{fmt_bytes(summary['peak_live_bytes'])} "
                                                f"anonymous, first at event "
                                                f"{summary['peak_live_event']}")
    assert header_value(block, "Kernel").startswith("Linux 6.18")
    assert header_value(block, "THP").startswith("enabled=madvise defrag=madvise")
    assert "mmreplay replay repro.eml" in block
    assert re.fullmatch(r"[0-9a-f]{64}", header_value(block, "Sha256"))
    assert re.fullmatch(r"crc32 [0-9a-f]{8} of \d+ base64 characters",
                        header_value(block, "Checksum"))
    assert stderr.startswith(f"share block: {len(block):,} characters")


def test_the_payload_decodes_without_mmreplay(run_cli, ort_block, tmp_path):
    """base64 -d | xz -d gives the trace file back, the one whose sha256 the header gives."""
    lines = ort_block.splitlines()
    payload = "".join(lines[lines.index("") + 1:-2])
    trace_file = lzma.decompress(base64.b64decode(payload))
    assert hashlib.sha256(trace_file).hexdigest() == header_value(ort_block, "Sha256")
    reader = pa.ipc.open_file(pa.py_buffer(trace_file))
    assert reader.read_all().num_rows == 5799
    assert json.loads(reader.metadata[b"mmreplay"])["format_version"] == 2


@pytest.mark.parametrize("trace", [TORCH, ORT], ids=lambda p: p.name)
def test_each_bundled_trace_fits_a_vger_mail_without_host_paths_or_pids(run_cli, tmp_path, trace):
    """Acceptance: `mmreplay share traces/data/bert-torch.arrow | wc -c` <= 100,000 (and the
    ONNX Runtime trace's too), with the size said on stderr; the shared metadata has no host
    name, no user path and no recorded pid or tid."""
    block, stderr = share(run_cli, trace)
    assert len(block.encode()) <= MAIL_LIMIT_CHARS
    assert stderr.startswith(f"share block: {len(block):,} characters") and "warning" not in stderr
    original = read_trace(trace)
    meta = trace_metadata(original)
    (tmp_path / "block.txt").write_text(block)
    shared = read_trace(tmp_path / "block.txt")
    text = json.dumps(trace_metadata(shared))
    assert meta["host"]["hostname"] and f'"{meta["host"]["hostname"]}"' not in text
    paths = set(re.findall(r"(/(?:work|tmp|root|home)/[^\s\"',]*)", json.dumps(meta)))
    assert paths and not any(path in text for path in paths)
    recorded_ids = {int(t) for t in set(original.column("tid").to_pylist())}
    assert meta["import"]["first_process"]["pid"] in recorded_ids
    assert sorted(set(shared.column("tid").to_pylist())) == list(range(1, len(recorded_ids) + 1))
    assert not re.search(rf"\b({'|'.join(str(t) for t in recorded_ids if t > 200)})\b", text)


def test_a_block_over_the_limit_is_said_to_be(run_cli, monkeypatch):
    import traces.share

    monkeypatch.setattr(traces.share, "MAIL_LIMIT_CHARS", 1000)
    block, stderr = share(run_cli, DATA / "buffers-4632k.arrow")
    assert len(block) > 1000
    assert "warning: the block is over the 1,000 characters" in stderr
    assert "mmreplay slice" in stderr


def test_anonymised_by_default_and_kept_on_request(run_cli, tmp_path):
    original = read_trace(ORT)
    meta = trace_metadata(original)
    block, _ = share(run_cli, ORT)
    (tmp_path / "a.txt").write_text(block)
    shared = read_trace(tmp_path / "a.txt")
    shared_meta = trace_metadata(shared)
    text = json.dumps(shared_meta)
    assert shared_meta["host"]["hostname"] == "(hostname removed)"
    assert shared_meta["shared"]["anonymised"] == ["hostname", "paths", "tids"]
    assert "/work/" not in text and "/tmp/" not in text
    assert shared_meta["command"][0] == ".../python" and shared_meta["command"][1:] == \
        meta["command"][1:]
    # Thread ids renumbered 1, 2, ... by first appearance, the same way in the metadata.
    tids = original.column("tid").to_numpy()
    order = list(dict.fromkeys(tids.tolist()))
    mapping = {old: new for new, old in enumerate(order, start=1)}
    assert shared.column("tid").to_pylist() == [mapping[t] for t in tids.tolist()]
    assert shared_meta["import"]["first_process"]["pid"] == \
        mapping[meta["import"]["first_process"]["pid"]] == 1
    renamed = original.set_column(original.schema.get_field_index("tid"), "tid",
                                  pa.array(np.array([mapping[t] for t in tids.tolist()], np.int32)))
    assert events_sha256(shared) == events_sha256(renamed)

    kept, _ = share(run_cli, ORT, "--keep", "hostname,paths,tids")
    (tmp_path / "k.txt").write_text(kept)
    kept_meta = trace_metadata(read_trace(tmp_path / "k.txt"))
    assert kept_meta.pop("shared") == {"anonymised": [],
                                       "from_sha256": hashlib.sha256(ORT.read_bytes()).hexdigest()}
    assert kept_meta == meta
    refused = run_cli("share", ORT, "--keep", "hostname,secrets")
    assert refused.exit_code == 2 and refused.stderr.startswith("Error: --keep secrets: unknown")


def test_a_block_survives_what_mail_clients_do_to_it(tmp_path, run_cli, ort_block):
    """Quoted three deep in mixed styles, CRLF line ends, a payload line hard-wrapped, the
    Sha256 value pushed onto the next line, trailing spaces: the same trace comes out."""
    lines = ort_block.splitlines()
    first_payload = lines.index("") + 1
    line = lines[first_payload + 3]
    lines[first_payload + 3:first_payload + 4] = [line[:30], line[30:]]
    sha_at = next(i for i, text in enumerate(lines) if text.startswith("Sha256:"))
    lines[sha_at:sha_at + 1] = ["Sha256:", lines[sha_at].split(" ", 1)[1]]
    text = "\r\n".join(f">> > {text}  " for text in lines) + "\r\n"
    (tmp_path / "mangled.txt").write_text(text)
    assert info_json(run_cli, tmp_path / "mangled.txt")["events_sha256"] == \
        events_sha256(read_trace(ORT))


def test_several_traces_are_listed_and_picked(tmp_path, run_cli, ort_block):
    other, _ = share(run_cli, DATA / "buffers-4632k.arrow")
    (tmp_path / "two.txt").write_text("first:\n" + ort_block + "\nsecond:\n" + other
                                      + "\nthe first again, quoted:\n" + quoted(ort_block))
    listed = run_cli("info", tmp_path / "two.txt")
    assert listed.exit_code == 2 and len(listed.stderr.splitlines()) == 1
    assert "holding 2 different traces; choose one with --pick N" in listed.stderr
    assert "[1] block at line 2: bert-onnxruntime.arrow, 5799 events" in listed.stderr
    assert "[2] block at line" in listed.stderr and "buffers-4632k.arrow, 128 events" in listed.stderr
    assert info_json(run_cli, tmp_path / "two.txt", "--pick", "2")["events"] == 128
    assert info_json(run_cli, tmp_path / "two.txt", "--pick", "1")["events"] == 5799
    beyond = run_cli("info", tmp_path / "two.txt", "--pick", "3")
    assert beyond.exit_code == 2 and "--pick 3, but a text file holds 2 trace(s)" in beyond.stderr


def test_the_readme_example_block_is_what_share_prints(run_cli, tmp_path):
    """docs/examples/bert-torch-share.txt (the README's example, in full) is today's output:
    the same header and the same events (the payload bytes depend on the xz library)."""
    example = (Path(__file__).resolve().parent.parent / "docs" / "examples"
               / "bert-torch-share.txt")
    fresh, _ = share(run_cli, TORCH)

    def header(block: str) -> list[str]:
        lines = block.splitlines()
        return [line for line in lines[:lines.index("")] if not line.startswith("Size:")]

    assert header(example.read_text()) == header(fresh)
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert all(f"\n    {line}\n" in readme for line in header(fresh))
    (tmp_path / "fresh.txt").write_text(fresh)
    assert info_json(run_cli, example)["events_sha256"] == \
        info_json(run_cli, tmp_path / "fresh.txt")["events_sha256"]
