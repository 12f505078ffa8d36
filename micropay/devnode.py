"""A throw-away anvil node for benchmark scripts: gas is measured from real receipts.

Benchmarks are plain scripts (``make bench``), not tests, so they start their own node
from ``node_modules/.bin/anvil`` on a free loopback port, with the same hardfork the
contracts are compiled for, and stop it on exit.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from web3 import HTTPProvider, Web3

ROOT = Path(__file__).resolve().parent.parent
ANVIL = ROOT / "node_modules" / ".bin" / "anvil"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def anvil(hardfork: str = "cancun") -> Iterator[Web3]:
    """Yield a Web3 connected to a fresh anvil; its 10 accounts are funded and unlocked."""
    port = _free_port()
    process = subprocess.Popen(
        [
            str(ANVIL),
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--hardfork",
            hardfork,
            "--silent",
            "--base-fee",
            "0",
            "--gas-price",
            "0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        w3 = Web3(HTTPProvider(f"http://127.0.0.1:{port}", request_kwargs={"timeout": 30}))
        deadline = time.monotonic() + 30
        while not w3.is_connected():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"anvil did not start on port {port}")
            time.sleep(0.05)
        yield w3
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
