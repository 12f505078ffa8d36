"""tools/run_tests.py fails a run that leaves a node it started alive, orphans included, and
counts no one else's."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from micropay.devnode import find_binary, free_port

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import run_tests  # noqa: E402

pytestmark = pytest.mark.offchain


def _orphaned_anvil(env: dict[str, str]) -> int:
    """Start anvil through a shell that exits at once: its parent is then init, as when a
    test's process dies without stopping its node."""
    anvil = find_binary("anvil")
    shell = subprocess.run(
        ["sh", "-c", f"'{anvil}' --port {free_port()} --silent >/dev/null 2>&1 & echo $!"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return int(shell.stdout)


def _stop(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)


def test_an_orphaned_node_of_this_run_is_found_and_others_are_not():
    marker = f"test-{os.getpid()}"
    ours = _orphaned_anvil({**os.environ, run_tests.RUN_MARKER: marker})
    theirs = _orphaned_anvil({**os.environ, run_tests.RUN_MARKER: "another-run"})
    try:
        left = {p.pid for p in run_tests.leftover_nodes(set(), marker, grace=0)}
        assert ours in left and theirs not in left
        assert ours not in {p.pid for p in run_tests.leftover_nodes({ours}, marker, grace=0)}
    finally:
        _stop(ours)
        _stop(theirs)
    assert run_tests.leftover_nodes(set(), marker, grace=10) == []


def test_a_run_that_leaves_a_node_running_fails(tmp_path):
    pid_file = tmp_path / "leaked.pid"
    leaky = tmp_path / "test_leaky.py"
    leaky.write_text(
        textwrap.dedent(
            f"""
            import os, subprocess

            def test_leaves_a_node_behind():
                shell = subprocess.run(
                    ["sh", "-c", "'{find_binary("anvil")}' --port {free_port()} --silent"
                     " >/dev/null 2>&1 & echo $!"],
                    capture_output=True, text=True, check=True,
                )
                open({str(pid_file)!r}, "w").write(shell.stdout)
            """
        )
    )
    try:
        result = subprocess.run(
            [sys.executable, "tools/run_tests.py", "--networks", "in-process", str(leaky)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        leaked = int(pid_file.read_text()) if pid_file.exists() else None
        if leaked is not None:
            _stop(leaked)
    assert leaked is not None, result.stdout + result.stderr
    assert result.returncode == 1
    assert "node(s) started by this run are still running:" in result.stdout
    assert f"pid {leaked}: " in result.stdout and "anvil" in result.stdout
