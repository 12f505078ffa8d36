"""What tests that run `micropay` (or an app) as a subprocess share: an environment that runs
this checkout's code, and stopping a process group for sure."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def checkout_env(home: Path, columns: int = 200) -> dict[str, str]:
    """The caller's environment with this checkout first on the import path (the console
    script imports from PYTHONPATH first), a fresh ``--home``, and no key or network of the
    caller's, so a test never signs with a key it did not set."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "MICROPAY_HOME": str(home),
        "NO_COLOR": "1",
        "COLUMNS": str(columns),
    }
    env.pop("MICROPAY_PRIVATE_KEY", None)
    env.pop("MICROPAY_NETWORK", None)
    return env


def stop_group(process: subprocess.Popen[str]) -> tuple[str, str]:
    """SIGTERM the process group of ``process`` (started with ``start_new_session=True``),
    SIGKILL it if it lingers; return what it printed."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
    try:
        return process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        return process.communicate()
