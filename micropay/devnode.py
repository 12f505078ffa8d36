"""Throw-away local nodes (anvil, hardhat) for benchmarks, standalone tests and ``micropay node``.

The node binary comes from the project's ``node_modules/.bin`` (npm ``@foundry-rs/anvil``)
or, failing that, from PATH. It listens on a free loopback port, runs the hardfork the
contracts are compiled for, and is stopped when the context exits.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from web3 import HTTPProvider, Web3

_LOCAL_BIN = Path(__file__).resolve().parent.parent / "node_modules" / ".bin"


def find_binary(name: str) -> str:
    """The project's own copy of a node tool if there is one, else the one on PATH."""
    local = _LOCAL_BIN / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(
            f"{name} not found in {_LOCAL_BIN} or on PATH; run `make setup` (npm installs it)"
        )
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on ``host:port`` now (nothing else listens there)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no owner
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


class _Stopped(Exception):
    """SIGTERM or SIGHUP arrived while a foreground node ran."""


def _stop(signum: int, frame: object) -> None:
    raise _Stopped(signal.Signals(signum).name)


def run_until_stopped(command: list[str]) -> int | None:
    """Run a node in the foreground until it exits or this process is told to stop.

    Returns the node's exit status if it ended by itself (it could not start, or crashed),
    None if Ctrl-C, SIGTERM or SIGHUP stopped it. Whatever ends the wait, the node is
    stopped before this returns: a terminal closing or a ``kill`` must not leave it running.
    """
    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    process: subprocess.Popen[bytes] | None = None
    try:
        process = subprocess.Popen(command)
        return process.wait()
    except (KeyboardInterrupt, _Stopped):
        return None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def node_command(kind: str, port: int, folder: Path, hardfork: str = "cancun") -> list[str]:
    """The command line that runs ``kind`` (anvil or hardhat) on 127.0.0.1:``port``.

    hardhat needs a config file to pick the hardfork; it is written into ``folder``.
    """
    if kind == "anvil":
        return [
            find_binary("anvil"),
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--hardfork",
            hardfork,
            "--silent",
        ]
    if kind == "hardhat":
        config = folder / "hardhat.config.js"
        config.write_text(_HARDHAT_CONFIG.format(hardfork=hardfork), encoding="utf8")
        return [
            find_binary("hardhat"),
            "--config",
            str(config),
            "node",
            "--hostname",
            "127.0.0.1",
            "--port",
            str(port),
        ]
    raise ValueError(f"unknown node kind {kind!r}: anvil or hardhat")


_HARDHAT_CONFIG = """// Written by micropay.devnode for a throw-away `hardhat node`.
module.exports = {{ networks: {{ hardhat: {{ hardfork: "{hardfork}", chainId: 31337 }} }} }};
"""


@contextmanager
def anvil(hardfork: str = "cancun", *extra_args: str) -> Iterator[Web3]:
    """Yield a Web3 connected to a fresh anvil; its 10 accounts are funded and unlocked."""
    port = free_port()
    command = [*node_command("anvil", port, Path("."), hardfork), *extra_args]
    with _serving(command, port, "anvil") as w3:
        yield w3


@contextmanager
def hardhat(hardfork: str = "cancun") -> Iterator[Web3]:
    """Yield a Web3 connected to a fresh ``hardhat node`` (20 funded, unlocked accounts)."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="micropay-hardhat-") as folder:
        command = node_command("hardhat", port, Path(folder), hardfork)
        with _serving(command, port, "hardhat", cwd=_LOCAL_BIN.parent.parent) as w3:
            yield w3


@contextmanager
def _serving(command: list[str], port: int, name: str, cwd: Path | None = None) -> Iterator[Web3]:
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=cwd if cwd is not None and cwd.is_dir() else None,
    )
    try:
        w3 = Web3(HTTPProvider(f"http://127.0.0.1:{port}", request_kwargs={"timeout": 30}))
        deadline = time.monotonic() + 60
        while not w3.is_connected():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start on port {port}")
            time.sleep(0.05)
        yield w3
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
