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
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from micropay.errors import LedgerError

if TYPE_CHECKING:
    from micropay.ledger._store import Execute, Store

COMMIT_WINDOW = 0.0002
"""Seconds the writer waits for company once an accept arrives (a commit in progress is a
longer window of its own: what arrives meanwhile joins the next batch)."""
MAX_BATCH = 64
"""The most accepts one transaction carries (a bound on the latency of the last of them)."""


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
    future: Future[Any]


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

    def submit(self, work: Callable[[Execute], Any], then: Callable[[Any], Any]) -> Future[Any]:
        """Queue ``work``; the future holds ``then(work's result)`` once it is committed."""
        future: Future[Any] = Future()
        with self._ready:
            if self._stopping:
                raise LedgerError(f"the ledger at {self._store.location} is closed")
            self._jobs.append(_Job(work, then, future))
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
                jobs = [job for job in batch if job.future.set_running_or_notify_cancel()]
                if not jobs:
                    continue
                connection = self._commit(connection, jobs)
        finally:
            with self._ready:
                self._stopping = True
                left = list(self._jobs)
                self._jobs.clear()
            for job in left:  # only if the loop itself failed: say so rather than hang
                if job.future.set_running_or_notify_cancel():
                    job.future.set_exception(
                        LedgerError(f"the writer of {self._store.location} stopped")
                    )
            if connection is not None:
                self._store._close_connection(connection)

    def _commit(self, connection: Any, jobs: list[_Job]) -> Any:
        """Run ``jobs`` in one transaction (or, if it fails, each in its own); return the
        connection to use next (a new one if this one broke)."""
        try:
            if connection is None:
                connection = self._store._connect()
            results = self._store._transact(
                connection, lambda execute: [job.work(execute) for job in jobs]
            )
        except Exception as err:
            connection = self._recycled(connection)
            if len(jobs) == 1:
                jobs[0].future.set_exception(err)
                return connection
            for job in jobs:  # find the one at fault: the others still commit
                try:
                    if connection is None:
                        connection = self._store._connect()
                    result = self._store._transact(connection, job.work)
                except Exception as alone:
                    job.future.set_exception(alone)
                    connection = self._recycled(connection)
                else:
                    self.stats.commits += 1
                    self.stats.accepts += 1
                    _finish(job, result)
            return connection
        self.stats.commits += 1
        self.stats.accepts += len(jobs)
        for job, result in zip(jobs, results, strict=True):
            _finish(job, result)
        return connection

    def _recycled(self, connection: Any) -> Any:
        """The connection if it still works, else None (closed; the next use reconnects)."""
        if connection is None or self._store._usable(connection):
            return connection
        self._store._close_connection(connection)
        return None


def _finish(job: _Job, result: Any) -> None:
    try:
        value = job.then(result)
    except Exception as err:
        job.future.set_exception(err)
    else:
        job.future.set_result(value)
