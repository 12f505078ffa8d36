"""The reader's receipts: every receipt a site gave it, kept beside its wallet.

One line of JSON per paid request, appended (never rewritten) to
``<wallet stem>.receipts.jsonl`` beside the wallet file (``<home>/wallet.receipts.jsonl``
for the CLI), readable by its owner only, flushed to disk before the paid response is
returned. Each line::

    {"site": "https://news.example:443", "resource": "GET /articles/42",
     "recordedAt": 1767000000, "problem": null, "receipt": {PAYMENT-RESPONSE JSON}}

``problem`` is null for a receipt whose signature is the channel payee's and whose fields
are the charge the client made; otherwise it says what is wrong (unsigned, signed by
another key, for another resource). The client keeps such receipts too, flagged: the
content was paid and served, and the flagged receipt is the evidence of that (a receipt
that contradicts the voucher itself is a protocol error and is not kept). Statements and
access receipts only use unflagged ones as proof.

A crash while appending can leave a torn last line; it is skipped when read. Any other
malformed line raises :class:`~micropay.errors.PayerStoreError`.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from micropay._x402 import Receipt
from micropay.errors import PayerStoreError, PaymentHeaderError

__all__ = ["KeptReceipt", "ReceiptLog", "receipts_path"]


def receipts_path(wallet_path: Path) -> Path:
    """Where the receipts of the wallet at ``wallet_path`` are kept."""
    return wallet_path.with_name(wallet_path.stem + ".receipts.jsonl")


@dataclass(frozen=True)
class KeptReceipt:
    """One receipt as the reader kept it: which site and resource, when, and any problem."""

    site: str
    resource: str
    recorded_at: int
    problem: str | None
    receipt: Receipt

    def to_json(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "resource": self.resource,
            "recordedAt": self.recorded_at,
            "problem": self.problem,
            "receipt": self.receipt.to_json(),
        }

    @classmethod
    def from_json(cls, data: Any) -> KeptReceipt:
        if not isinstance(data, dict):
            raise ValueError("a kept receipt is a JSON object")
        site, resource, recorded = data["site"], data["resource"], data["recordedAt"]
        problem = data["problem"]
        if not (isinstance(site, str) and isinstance(resource, str)):
            raise ValueError("site and resource are text")
        if type(recorded) is not int or not (problem is None or isinstance(problem, str)):
            raise ValueError("recordedAt is an integer and problem text or null")
        return cls(site, resource, recorded, problem, Receipt.from_json(data["receipt"]))


class ReceiptLog:
    """An append-only file of :class:`KeptReceipt` (``path=None``: in memory); thread-safe."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._kept: list[KeptReceipt] = self._load() if path is not None else []

    def _load(self) -> list[KeptReceipt]:
        assert self.path is not None
        try:
            text = self.path.read_text(encoding="utf8")
        except FileNotFoundError:
            return []
        except OSError as err:
            raise PayerStoreError(f"the receipts {self.path} are unreadable: {err}") from None
        lines = text.split("\n")
        kept = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                kept.append(KeptReceipt.from_json(json.loads(line)))
            except (ValueError, KeyError, TypeError, PaymentHeaderError) as err:
                if number == len(lines):  # no newline after it: a torn last append
                    break
                raise PayerStoreError(f"{self.path}, line {number}, is malformed: {err}") from None
        return kept

    def append(self, kept: KeptReceipt) -> None:
        """Add one receipt, durably (flushed and synced before returning)."""
        line = (json.dumps(kept.to_json(), separators=(",", ":"), sort_keys=True) + "\n").encode()
        with self._lock:
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
                try:
                    os.fchmod(descriptor, 0o600)
                    os.write(descriptor, line)
                    os.fsync(descriptor)
                finally:
                    os.close(descriptor)
            self._kept.append(kept)

    def all(self) -> list[KeptReceipt]:
        """Every kept receipt, in the order received."""
        with self._lock:
            return list(self._kept)

    def latest(self, site: str, resource: str, since: int) -> KeptReceipt | None:
        """The newest unflagged, signed receipt of ``resource`` at ``site`` issued at or
        after ``since``: what an access request may present."""
        with self._lock:
            for kept in reversed(self._kept):
                signed = kept.receipt.signed
                if (
                    kept.problem is None
                    and signed is not None
                    and kept.site == site
                    and kept.resource == resource
                    and signed.issued_at >= since
                ):
                    return kept
        return None
