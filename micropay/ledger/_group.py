"""Group commit: one writer thread per ledger, and one durable commit for every accept queued.

A durable commit costs a sync of the log (SQLite's ``synchronous=FULL``, PostgreSQL's
``synchronous_commit``): on most disks far more than the statements it makes durable. Accepts
that arrive while the writer is committing wait in its queue; the writer then runs them all,
in order, in one transaction and commits once, so under load the sync is shared instead of
paid per voucher. Each accept is told its result only after that commit has returned: no
receipt leaves before its voucher and charge are durable.

Statements in one transaction see each other, so two accepts on one channel in a batch
still compare and swap in turn. A failure (a statement error, a broken connection) rolls
the whole batch back; its accepts are then run again one per transaction, so only the one
at fault fails and none is lost or applied twice (a rolled-back transaction wrote nothing).

The writer keeps its own connection (beside the store's pool), so an accept never waits
for a pooled connection and never hops to a new thread per call.

An accept submitted from an asyncio loop (``loop=``) gets a future of that loop, and the
writer settles all of a commit's futures of one loop with one wake-up of it: a
:class:`concurrent.futures.Future` per accept, wrapped for the loop, would cost the loop
two futures and a wake-up each, and the writer the Python to run their callbacks, which it
can only do holding the interpreter lock the loop is serving requests with.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, Union

from micropay.errors import LedgerError

if TYPE_CHECKING:
    from micropay.ledger._store import Execute, Store

COMMIT_WINDOW = 0.0002
"""Seconds the writer waits for company once an accept arrives (a commit in progress is a
longer window of its own: what arrives meanwhile joins the next batch)."""
MAX_BATCH = 64
"""The most accepts one transaction carries (a bound on the latency of the last of them)."""

_T = TypeVar("_T")
Pending = Union[Future[_T], "asyncio.Future[_T]"]
"""What an accept's submitter waits on: a thread's future, or one of its event loop's."""


def pending(loop: asyncio.AbstractEventLoop | None) -> Pending[Any]:
    """A new future for a submitter: of ``loop`` (the running loop, so call from it), or
    without one a :class:`concurrent.futures.Future`, for threads."""
    return Future() if loop is None else loop.create_future()


@dataclass
class CommitStats:
    """Counts of a writer's work: how much group commit saved is ``accepts / commits``."""

    accepts: int = 0
    """Accepts run in a transaction that committed (stored or refused as stale)."""
    commits: int = 0
    """Transactions committed."""


@dataclass(frozen=True)
class _Job:
    work: Callable[[Execute], Any]
    """The statements, run inside the batch's transaction."""
    then: Callable[[Any], Any]
    """Turns what ``work`` returned into the future's result, once the commit is durable."""
    future: Pending[Any]
    loop: asyncio.AbstractEventLoop | None
    """The loop ``future`` belongs to (None: a thread's future, settled from the writer)."""

    def wanted(self) -> bool:
        """Whether anyone still waits for the job: a cancelled one is not written (its
        request went away before its turn). A loop's future is read from the writer's thread
        here; a cancel that races the read is one that could have come after the commit."""
        if self.loop is None:
            return self.future.set_running_or_notify_cancel()  # type: ignore[union-attr]
        return not self.future.cancelled()


_Outcome = tuple[_Job, Any, BaseException | None]
"""A job's result or its error, to be delivered to its future."""


class GroupCommit:
    """The writer of one store: :meth:`submit` queues work, a thread commits it in batches."""

    def __init__(self, store: Store, window: float = COMMIT_WINDOW, max_batch: int = MAX_BATCH):
        self._store = store
        self._window = window
        self._max_batch = max_batch
        self._jobs: deque[_Job] = deque()
        self._ready = threading.Condition()
        self._stopping = False
        self.stats = CommitStats()
        """What the writer committed so far (read by tests and operators, never reset)."""
        self.pid = os.getpid()
        """The process whose thread this is (a forked child needs its own writer)."""
        self._thread = threading.Thread(
            target=self._run, name=f"micropay ledger writer ({store.location})", daemon=True
        )
        self._thread.start()

    def submit(
        self,
        work: Callable[[Execute], Any],
        then: Callable[[Any], Any],
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> Pending[Any]:
        """Queue ``work``; the future holds ``then(work's result)`` once it is committed.
        With ``loop`` (the running loop: call from it), the future is one of that loop."""
        future = pending(loop)
        with self._ready:
            if self._stopping:
                raise LedgerError(f"the ledger at {self._store.location} is closed")
            self._jobs.append(_Job(work, then, future, loop))
            self._ready.notify()
        return future

    def close(self) -> None:
        """Commit what is queued, then stop the thread (and close its connection)."""
        with self._ready:
            self._stopping = True
            self._ready.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join()

    # -- the writer thread ---------------------------------------------------------------------

    def _take(self) -> list[_Job] | None:
        """The next batch (None: stopped and nothing is left)."""
        with self._ready:
            while not self._jobs:
                if self._stopping:
                    return None
                self._ready.wait()
            wait = self._window and len(self._jobs) < self._max_batch and not self._stopping
        if wait:
            time.sleep(self._window)
        with self._ready:
            return [self._jobs.popleft() for _ in range(min(len(self._jobs), self._max_batch))]

    def _run(self) -> None:
        connection: Any = None
        try:
            while (batch := self._take()) is not None:
                jobs = [job for job in batch if job.wanted()]
                if not jobs:
                    continue
                connection, outcomes = self._commit(connection, jobs)
                _deliver(outcomes)
        finally:
            with self._ready:
                self._stopping = True
                left = list(self._jobs)
                self._jobs.clear()
            # Only if the loop itself failed: say so rather than hang.
            stopped = LedgerError(f"the writer of {self._store.location} stopped")
            _deliver([(job, None, stopped) for job in left if job.wanted()])
            if connection is not None:
                self._store._close_connection(connection)

    def _commit(self, connection: Any, jobs: list[_Job]) -> tuple[Any, list[_Outcome]]:
        """Run ``jobs`` in one transaction (or, if it fails, each in its own); return the
        connection to use next (a new one if this one broke) and what each job came to."""
        try:
            if connection is None:
                connection = self._store._connect()
            results = self._store._transact(
                connection, lambda execute: [job.work(execute) for job in jobs]
            )
        except Exception as err:
            connection = self._recycled(connection)
            if len(jobs) == 1:
                return connection, [(jobs[0], None, err)]
            outcomes: list[_Outcome] = []
            for job in jobs:  # find the one at fault: the others still commit
                try:
                    if connection is None:
                        connection = self._store._connect()
                    result = self._store._transact(connection, job.work)
                except Exception as alone:
                    outcomes.append((job, None, alone))
                    connection = self._recycled(connection)
                else:
                    self.stats.commits += 1
                    self.stats.accepts += 1
                    outcomes.append(_finished(job, result))
            return connection, outcomes
        self.stats.commits += 1
        self.stats.accepts += len(jobs)
        return connection, [
            _finished(job, result) for job, result in zip(jobs, results, strict=True)
        ]

    def _recycled(self, connection: Any) -> Any:
        """The connection if it still works, else None (closed; the next use reconnects)."""
        if connection is None or self._store._usable(connection):
            return connection
        self._store._close_connection(connection)
        return None


def _finished(job: _Job, result: Any) -> _Outcome:
    """The job's outcome once its commit is durable: ``then`` of its work's result."""
    try:
        return job, job.then(result), None
    except Exception as err:
        return job, None, err


def _deliver(outcomes: list[_Outcome]) -> None:
    """Settle the jobs' futures: a thread's at once, a loop's in one call on that loop for
    all of its jobs here (a loop that has closed meanwhile has nobody waiting)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
    for outcome in outcomes:
        loop = outcome[0].loop
        if loop is None:
            _settle([outcome])
        else:
            by_loop.setdefault(loop, []).append(outcome)
    for loop, settled in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop is closed
            loop.call_soon_threadsafe(_settle, settled)


def _settle(outcomes: list[_Outcome]) -> None:
    """Set each future's result or error (on a loop: run by it, so a future is not cancelled
    meanwhile; one that was is left alone)."""
    for job, value, error in outcomes:
        if job.future.cancelled():
            continue
        if error is None:
            job.future.set_result(value)
        else:
            job.future.set_exception(error)
