"""mmreplay run by another user than the one who installed it, with no writable home: numba
cannot cache next to the package or in ~/.cache. Real processes under setpriv as nobody."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from processes import PATIENCE_S

NOBODY = 65534
BUNDLED = Path(__file__).resolve().parent.parent / "traces" / "data" / "buffers-4632k.arrow"
pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                                reason="needs root and setpriv to run a command as nobody")


@pytest.fixture
def shared_folder():
    """A folder nobody can write in (pytest's tmp_path is private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="mmreplay-nobody-"))
    folder.chmod(0o777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def as_nobody(folder: Path, *args) -> subprocess.CompletedProcess:
    mmreplay = Path(sys.executable).with_name("mmreplay")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent",
           "TMPDIR": str(folder)}
    if "PYTHONPATH" in os.environ:  # the code under test, when it is not the installed one
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                           str(mmreplay), *map(str, args)], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=PATIENCE_S)


def test_replay_and_synth_cache_in_a_private_temporary_folder(shared_folder):
    done = as_nobody(shared_folder, "replay", BUNDLED, "--touch", "none")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    cache = shared_folder / f"mmreplay-numba-cache-{NOBODY}"
    assert done.stderr.splitlines() == [
        "note: numba cannot cache compiled code next to mmreplay or in ~/.cache; caching it "
        f"in {cache}"]
    assert "events/s" in done.stdout
    info = cache.lstat()
    assert info.st_uid == NOBODY and info.st_mode & 0o777 == 0o700
    assert list(cache.rglob("*.nbi")), "nothing was cached"
    done = as_nobody(shared_folder, "synth", "--count", "10", "-o", shared_folder / "s.arrow")
    assert done.returncode == 0 and len(done.stderr.splitlines()) == 1, done.stderr
    assert (shared_folder / "s.arrow").exists()


def test_a_cache_folder_someone_else_made_is_not_used(shared_folder):
    """numba loads its cache as code: a folder planted under the expected name (here by root,
    writable by all) is refused, and the replay runs without a cache."""
    planted = shared_folder / f"mmreplay-numba-cache-{NOBODY}"
    planted.mkdir(mode=0o777)
    planted.chmod(0o777)
    done = as_nobody(shared_folder, "replay", BUNDLED, "--touch", "none")
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        "note: numba cannot cache compiled code anywhere here (no writable cache folder); "
        "compiling it afresh in every run"]
    assert list(planted.iterdir()) == []
