"""The ledger under real processes: eight concurrent writers, and a payee killed 150 times.

Both tests run separate OS processes, not threads or simulations: a launcher
(``python tests/ledger_helpers.py launcher``) imports micropay once and forks each worker or
payee, which then opens the ledger on its own. The concurrency test runs on SQLite and on
the session's PostgreSQL; the crash test SIGKILLs a payee that writes to a SQLite ledger and
checks, after every kill, that each voucher the payee acknowledged is in the ledger when it
is opened again.
"""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from ledger_helpers import DOMAIN, channel, interleaved_jobs, write_job

from micropay.ledger import Ledger

pytestmark = pytest.mark.offchain
pytest_plugins = ["ledger_fixtures"]

HELPERS = Path(__file__).resolve().parent / "ledger_helpers.py"


class _Launcher:
    """``python tests/ledger_helpers.py launcher``, and a running log of what its processes
    printed (they share its stdout, one whole line per write)."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(HELPERS), "launcher"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            if line.endswith("\n"):  # a line cut short by a kill was never acknowledged
                self.lines.put(line.strip())

    def send(self, line: str) -> None:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def next_line(self, timeout: float = 60) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            stderr = self.process.stderr.read() if self.process.poll() is not None else ""
            raise AssertionError(f"the launcher went quiet: {stderr}") from None

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)
        self._reader.join(timeout=30)
        self.process.stderr.close()


@pytest.fixture
def launcher():
    started = _Launcher()
    yield started
    started.close()


# -- concurrency ------------------------------------------------------------------------------


def test_eight_processes_never_lose_the_highest_voucher_or_count_twice(
    ledger_url, tmp_path, launcher
):
    workers, channels, top = 8, 4, 150
    salt = random.randrange(2**32)
    Ledger.open(ledger_url, DOMAIN).close()  # create the tables before the race
    jobs = interleaved_jobs(ledger_url, salt, workers, channels, top, seed=salt)
    files = [str(write_job(job, tmp_path / f"job{i}.json")) for i, job in enumerate(jobs)]
    launcher.send("race " + " ".join(files))
    ready = [launcher.next_line() for _ in range(workers)]
    assert sorted(ready) == sorted(f"READY {n}" for n in range(workers)), ready
    launcher.send("go")  # every worker has opened the ledger and signed: release them at once
    credited = dict.fromkeys(range(channels), 0)
    taken = dict.fromkeys(range(channels), 0)
    while not (line := launcher.next_line()).startswith("RACED"):
        tag, _, result = line.split(" ", 2)
        assert tag == "DONE", line
        for index, (amount, count) in json.loads(result).items():
            credited[int(index)] += amount
            taken[int(index)] += count
    assert line == "RACED " + " ".join(["0"] * workers), line

    with Ledger.open(ledger_url, DOMAIN) as ledger:
        best = {
            i: ledger.best(channel(i, salt).channel_id).cumulative_amount for i in range(channels)
        }
        charged = dict.fromkeys(range(channels), 0)
        index_of = {channel(i, salt).channel_id: i for i in range(channels)}
        for receipt in ledger.charges():
            charged[index_of[receipt.channel_id]] += 1
    # one charge row per voucher taken, none for a voucher refused: no row counted twice
    assert charged == taken
    print(
        f"\n{workers} processes raced {channels * top} vouchers for {channels} channels "
        f"(1..{top} each): best {best}, sum of increments credited {credited}"
    )
    assert best == dict.fromkeys(range(channels), top)
    assert credited == best


# -- crash safety -------------------------------------------------------------------------------


def _run_and_kill(launcher: _Launcher, url: str, channels: int, rng: random.Random):
    """Start a payee, SIGKILL it at a random moment; its lines, and whether it was ready."""
    launcher.send(f"payee {url} {channels}")
    lines: list[str] = []
    # fork() returns in both processes at once: the payee may say READY (or more) before the
    # launcher has printed its pid. Those lines are the payee's: keep them.
    while not (line := launcher.next_line()).startswith("PID "):
        lines.append(line)
    pid = line.split()[1]
    if rng.random() < 0.1:  # sometimes while it opens (and recovers) the ledger
        time.sleep(rng.uniform(0.0, 0.01))
    else:
        while "READY" not in lines:
            lines.append(launcher.next_line())
        time.sleep(rng.uniform(0.0, 0.05))
    os.kill(int(pid), signal.SIGKILL)
    while f"DEAD {pid} " not in (line := launcher.next_line()):
        lines.append(line)
    assert line.startswith("DEAD"), f"a payee line was cut short: {line!r}"
    status = int(line.split()[2])
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, line
    return lines, "READY" in lines


def test_acknowledged_vouchers_survive_sigkill_of_the_payee(tmp_path, launcher):
    kills, channels = 150, 3
    url = f"sqlite:///{tmp_path / 'payee.db'}"
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    acked = [0] * channels
    acks = killed_unready = committed_unacked = 0
    started = time.monotonic()
    for kill in range(1, kills + 1):
        lines, was_ready = _run_and_kill(launcher, url, channels, rng)
        killed_unready += not was_ready
        for line in lines:
            if line.startswith("ACK "):
                _, index, amount = line.split()
                acked[int(index)] = int(amount)
                acks += 1
        # The restart: open the ledger as the next payee process will, and look.
        with Ledger.open(url, DOMAIN) as ledger:
            held = [ledger.best(channel(i).channel_id) for i in range(channels)]
        stored = [0 if voucher is None else voucher.cumulative_amount for voucher in held]
        lost = [(i, acked[i], stored[i]) for i in range(channels) if stored[i] < acked[i]]
        assert not lost, f"kill {kill} (seed {seed}) lost acknowledged vouchers: {lost}"
        # Only the voucher in flight may have been committed without its ACK.
        extra = sum(stored) - sum(acked)
        assert extra in (0, 1), (kill, seed, stored, acked)
        committed_unacked += extra
        acked = stored
    print(
        f"\ncrash test (seed {seed}): {kills} SIGKILLs of a payee process "
        f"({killed_unready} while it opened the ledger), {acks} acknowledged vouchers, every "
        f"one present after every restart; in {committed_unacked} kills the voucher in flight "
        f"had reached the ledger but not its ACK; {time.monotonic() - started:.1f} s"
    )
