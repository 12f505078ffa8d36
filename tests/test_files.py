"""Whole-file JSON writes (micropay._files): what the payer's channel files, the paying
client's store and the deployment registry rely on to survive a crash."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from micropay._files import write_json_atomically

pytestmark = pytest.mark.offchain


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_file_holds_exactly_the_data_and_a_private_one_only_its_owner_reads(tmp_path):
    path = tmp_path / "deep" / "folder" / "key.json"
    write_json_atomically(path, {"b": [1, 2], "a": "0x01"}, private=True, indent=1)
    assert json.loads(path.read_text()) == {"b": [1, 2], "a": "0x01"}
    assert mode(path) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["key.json"]  # no temporary left


def test_a_private_file_is_private_even_over_a_wider_leftover_temporary(tmp_path):
    path = tmp_path / "key.json"
    leftover = tmp_path / "key.json.tmp"
    leftover.write_text("half a file")
    leftover.chmod(0o666)
    write_json_atomically(path, {"key": "secret"}, private=True)
    assert mode(path) == 0o600


def test_a_shared_file_follows_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_json_atomically(tmp_path / "registry.json", {"1": "x"}, indent=2)
    finally:
        os.umask(old)
    assert mode(tmp_path / "registry.json") == 0o644


def test_data_that_cannot_be_encoded_leaves_the_old_file_untouched(tmp_path):
    path = tmp_path / "store.json"
    write_json_atomically(path, {"version": 1})
    with pytest.raises(TypeError):
        write_json_atomically(path, {"version": object()})
    assert json.loads(path.read_text()) == {"version": 1}
    assert not (tmp_path / "store.json.tmp").exists()


_WRITER = """
import sys
from pathlib import Path
from micropay._files import write_json_atomically
path, run, n = Path(sys.argv[1]), int(sys.argv[2]), 0
while True:
    n += 1
    write_json_atomically(path, {"run": run, "n": n, "padding": "x" * 200_000}, private=True)
    if n == 1:
        print("writing", flush=True)
"""


def test_a_writer_killed_at_any_moment_leaves_a_whole_file(tmp_path):
    """SIGKILL a process that rewrites a 200 KB file in a loop, at 15 different moments:
    the file is always one whole version, from the run just killed, never behind it."""
    path = tmp_path / "channel.json"
    last = 0
    for run in range(1, 16):
        writer = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path), str(run)], stdout=subprocess.PIPE
        )
        assert writer.stdout is not None and writer.stdout.readline() == b"writing\n"
        time.sleep(0.002 * run)  # kill at a different point of the write loop each time
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        data = json.loads(path.read_text())
        assert (data["run"], data["padding"]) == (run, "x" * 200_000)
        assert data["n"] >= 1
        assert mode(path) == 0o600
        last = max(last, data["n"])
    assert last > 1, "no kill landed after a rewrite: the test proved nothing"
