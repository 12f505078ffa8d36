"""Plain helpers for the ledger tests, and the processes they start.

No pytest here: child processes import this module, so it stays light. Keys are fixed, so
every process signs alike. ``python tests/ledger_helpers.py launcher`` is the process
launcher of the process tests (see :func:`launcher`).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount

from micropay.ledger import Ledger
from micropay.receipts import SignedReceipt, sign_receipt
from micropay.vouchers import ZERO_ADDRESS, ChannelConfig, Voucher, VoucherDomain, sign_voucher

DOMAIN = VoucherDomain(31337, "0x" + "c0ffee" * 6 + "c0ff")
"""The domain offline ledger tests use: no chain needed to sign and verify."""
AUTHORIZER: LocalAccount = Account.from_key(b"\x11" * 32)
PAYEE = "0x" + "22" * 20


def channel(
    index: int, domain_salt: int = 0, authorizer: LocalAccount = AUTHORIZER
) -> ChannelConfig:
    """The ``index``-th test channel (same index, same channel, in every process)."""
    return ChannelConfig(
        payer=authorizer.address,
        payee=PAYEE,
        token=ZERO_ADDRESS,
        authorizer=authorizer.address,
        withdraw_delay=3600,
        salt=(domain_salt * 1_000_003 + index).to_bytes(32, "big"),
    )


def voucher(config: ChannelConfig, amount: int, domain: VoucherDomain = DOMAIN) -> Voucher:
    return sign_voucher(domain, config.channel_id, amount, AUTHORIZER)


SITE: LocalAccount = Account.from_key(b"\x22" * 32)
"""The key that signs the test receipts (charges)."""


def charge(
    config: ChannelConfig,
    cumulative: int,
    amount: int = 1,
    resource: str = "GET /articles/1",
    issued_at: int = 1_767_225_600,
    domain: VoucherDomain = DOMAIN,
) -> SignedReceipt:
    """A site-signed receipt of a charge of ``amount`` taking the channel to ``cumulative``."""
    return sign_receipt(
        domain,
        SITE,
        receipt_id=os.urandom(32),
        channel_id=config.channel_id,
        payer=config.payer,
        asset=config.token,
        resource=resource,
        amount=amount,
        cumulative_amount=cumulative,
        issued_at=issued_at,
    )


def raw_execute(url: str, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run SQL on a ledger's database behind the ledger's back (to damage it on purpose).

    Write it with ``?`` placeholders; it is adapted for PostgreSQL.
    """
    if url.startswith("sqlite:"):
        import sqlite3

        connection = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            return connection.execute(sql, params).fetchall()
        finally:
            connection.close()
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        cursor = connection.execute(sql.replace("?", "%s"), params)
        return cursor.fetchall() if cursor.description else []


@contextlib.contextmanager
def writes_held(url: str) -> Iterator[None]:
    """Keep the ledger's table write-locked from another connection until the block ends
    (as another process's writer would): what the ledger's writer commits meanwhile waits,
    so a test knows what is queued rather than leaving it to timing."""
    if url.startswith("sqlite:"):
        import sqlite3

        connection = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            connection.execute("ROLLBACK")
            connection.close()
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as held:
        held.execute("BEGIN")
        held.execute("LOCK TABLE best_vouchers IN SHARE ROW EXCLUSIVE MODE")
        try:
            yield
        finally:
            held.execute("ROLLBACK")


# -- concurrency: many processes accepting interleaved vouchers ---------------------------------


@dataclass(frozen=True)
class AcceptJob:
    """One worker's share: (channel index, amount) pairs to accept, in order."""

    url: str
    salt: int
    items: tuple[tuple[int, int], ...]


def interleaved_jobs(
    url: str, salt: int, workers: int, channels: int, top: int, seed: int
) -> list[AcceptJob]:
    """Deal amounts 1..top of every channel round-robin to ``workers``, each list roughly
    ascending but locally shuffled, so workers race on the same rows with overlapping
    amounts (some of their vouchers win, some arrive stale)."""
    rng = random.Random(seed)
    shares: list[list[tuple[float, int, int]]] = [[] for _ in range(workers)]
    for amount in range(1, top + 1):
        for index in range(channels):
            worker = (amount + index) % workers
            shares[worker].append((amount + rng.uniform(-3 * workers, 3 * workers), index, amount))
    return [
        AcceptJob(url, salt, tuple((index, amount) for _, index, amount in sorted(share)))
        for share in shares
    ]


def run_accept_job(job: AcceptJob, start: Callable[[], object]) -> dict[int, list[int]]:
    """Accept a job's vouchers, each with its charge (once ``start`` returns, so all
    workers collide); return per channel the increments this worker was credited with,
    summed, and how many of its vouchers were taken."""
    from micropay.errors import StaleVoucherError

    configs = {index: channel(index, job.salt) for index, _ in job.items}
    signed = [
        (configs[index], voucher(configs[index], amount), charge(configs[index], amount))
        for index, amount in job.items
    ]
    credited: dict[int, list[int]] = {index: [0, 0] for index in configs}
    with Ledger.open(job.url, DOMAIN) as ledger:
        start()
        for (index, _), (config, signed_voucher, receipt) in zip(job.items, signed, strict=True):
            with contextlib.suppress(StaleVoucherError):
                credited[index][0] += ledger.accept_if_higher(
                    config, signed_voucher, charge=receipt
                )
                credited[index][1] += 1
    return credited


def write_job(job: AcceptJob, path: Path) -> Path:
    path.write_text(json.dumps({"url": job.url, "salt": job.salt, "items": job.items}))
    return path


# -- crash safety: the payee process that gets killed ---------------------------------------------


def crash_payee(url: str, channels: int) -> None:
    """Accept vouchers forever, acknowledging each one only once the ledger committed it."""
    configs = [channel(index) for index in range(channels)]
    with Ledger.open(url, DOMAIN) as ledger:
        amounts = []
        for config in configs:
            best = ledger.best(config.channel_id)
            amounts.append(best.cumulative_amount if best else 0)
        _say("READY")
        turn = 0
        while True:
            index = turn % channels
            amounts[index] += 1
            ledger.accept_if_higher(configs[index], voucher(configs[index], amounts[index]))
            _say(f"ACK {index} {amounts[index]}")
            turn += 1


def launcher() -> None:
    """Start test processes on request, as a pre-forking server does.

    Importing micropay costs most of a second; forking this already-initialised,
    single-threaded process costs milliseconds, so the crash test can kill a hundred payees
    in seconds. Every process started is its own OS process that opens the ledger anew.
    Commands, one per line on stdin:

    ``payee URL CHANNELS``
        start a :func:`crash_payee`; print ``PID <pid>``, and ``DEAD <pid> <status>`` once it
        is gone (after every line it printed).
    ``race JOB.json ...``
        start one worker per job; each opens the ledger, signs its vouchers and prints
        ``READY <n>``; the next stdin line releases them all at once; each prints
        ``DONE <n> <credited increments as JSON>``; then ``RACED <exit statuses>``.
    """
    for line in sys.stdin:
        command, *args = line.split()
        if command == "payee":
            pid = _fork(crash_payee, args[0], int(args[1]))
            _say(f"PID {pid}")
            _, status = os.waitpid(pid, 0)
            _say(f"DEAD {pid} {status}")
        elif command == "race":
            gate, release = os.pipe()
            pids = [_fork(_race_worker, n, Path(path), gate) for n, path in enumerate(args)]
            sys.stdin.readline()
            os.write(release, b"x" * len(pids))
            statuses = [os.waitpid(pid, 0)[1] for pid in pids]
            os.close(gate)
            os.close(release)
            _say("RACED " + " ".join(map(str, statuses)))


def _fork(child: Callable[..., object], *args: Any) -> int:
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            child(*args)
            status = 0
        finally:
            os._exit(status)
    return pid


def _race_worker(number: int, job_file: Path, gate: int) -> None:
    data = json.loads(job_file.read_text())
    job = AcceptJob(data["url"], data["salt"], tuple(tuple(item) for item in data["items"]))

    def start() -> None:
        _say(f"READY {number}")
        os.read(gate, 1)

    credited = run_accept_job(job, start)
    _say(f"DONE {number} " + json.dumps({str(index): amount for index, amount in credited.items()}))


def _say(line: str) -> None:
    """One whole line in one write(2) (atomic on a pipe): print() may split off the newline,
    and a kill between the two writes would leave half a line."""
    os.write(1, f"{line}\n".encode())


def main(argv: Sequence[str]) -> int:
    if list(argv) == ["launcher"]:
        launcher()
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
