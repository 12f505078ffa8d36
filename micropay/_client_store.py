"""What the paying HTTP client remembers between runs: its channels and what it spent.

One small JSON file, rewritten atomically (temporary file, fsync, rename) after every
paid request. It holds no secret: session keys are derived again from the payer's key
(see :func:`micropay.http_client.derive_session_key`), so the file is a cache of channel
positions and a spending log. Losing it costs nothing but a resynchronisation with each
site; a stale copy is corrected by the site's 402 (the client checks every total the site
claims against its own signature).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from micropay._files import write_json_atomically
from micropay.errors import PaymentProtocolError, VoucherError
from micropay.vouchers import ChannelConfig

_FORMAT = 1


@dataclass(frozen=True)
class ChannelRecord:
    """The client's position in one channel.

    ``cumulative`` is the last total the site acknowledged (a receipt, or a view the client
    verified) and ``signature`` the client's voucher for it (None for zero, or for a total
    read from the chain's claims); the next request pays ``cumulative + price``.
    ``highest_signed`` is the largest total the client has signed on the channel, saved
    before that voucher is sent: a site that shows it later holds a voucher from an earlier
    request (answered or not), which the client may build on without paying twice.
    """

    key: str
    index: int
    config: ChannelConfig
    cumulative: int
    signature: bytes | None
    deposited: int
    highest_signed: int

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "config": self.config.to_json(),
            "cumulative": str(self.cumulative),
            "signature": None if self.signature is None else "0x" + self.signature.hex(),
            "deposited": str(self.deposited),
            "highestSigned": str(self.highest_signed),
        }

    @classmethod
    def from_json(cls, key: str, data: dict[str, Any]) -> ChannelRecord:
        signature = data["signature"]
        return cls(
            key=key,
            index=int(data["index"]),
            config=ChannelConfig.from_json(data["config"]),
            cumulative=int(data["cumulative"]),
            signature=None if signature is None else bytes.fromhex(signature[2:]),
            deposited=int(data["deposited"]),
            # Stores written before the field existed: the acknowledged total is the most
            # the client is known to have signed.
            highest_signed=int(data.get("highestSigned", data["cumulative"])),
        )


class ClientStore:
    """Channel records by offer key, spending by site and over time; thread-safe.

    ``path=None`` keeps everything in memory (tests, one-off scripts).
    """

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._channels: dict[str, ChannelRecord] = {}
        self._retired: list[dict[str, Any]] = []
        self._site_spend: dict[str, int] = {}
        self._recent: list[tuple[float, int]] = []
        if self.path is not None and self.path.exists():
            self._load(self.path)

    def _load(self, path: Path) -> None:
        try:
            data = json.loads(path.read_text(encoding="utf8"))
            if data.get("format") != _FORMAT:
                raise ValueError(f"unknown format {data.get('format')!r}")
            self._channels = {
                key: ChannelRecord.from_json(key, record)
                for key, record in data["channels"].items()
            }
            self._retired = list(data.get("retired", []))
            self._site_spend = {site: int(v) for site, v in data["siteSpend"].items()}
            self._recent = [(float(t), int(a)) for t, a in data["recent"]]
        except (OSError, ValueError, KeyError, TypeError, VoucherError) as err:
            raise PaymentProtocolError(f"the client store {path} is unreadable: {err}") from None

    def _save(self) -> None:
        if self.path is None:
            return
        data = {
            "format": _FORMAT,
            "channels": {key: record.to_json() for key, record in self._channels.items()},
            "retired": self._retired,
            "siteSpend": {site: str(amount) for site, amount in self._site_spend.items()},
            "recent": [[t, str(a)] for t, a in self._recent],
        }
        write_json_atomically(self.path, data)

    # -- channels ------------------------------------------------------------------------------

    def channel(self, key: str) -> ChannelRecord | None:
        return self._channels.get(key)

    def put_channel(self, record: ChannelRecord) -> None:
        with self._lock:
            self._channels[record.key] = record
            self._save()

    def retire_channel(self, key: str, why: str) -> None:
        """Stop using a channel (closing, finished); keep its config for a later withdraw."""
        with self._lock:
            record = self._channels.pop(key, None)
            if record is not None:
                self._retired.append({"key": key, "why": why, **record.to_json()})
                self._save()

    # -- spending ------------------------------------------------------------------------------

    def site_spend(self, site: str) -> int:
        return self._site_spend.get(site, 0)

    def spend_since(self, since: float) -> int:
        return sum(amount for when, amount in self._recent if when >= since)

    def record(
        self, record: ChannelRecord, site: str, amount: int, now: float, forget_before: float
    ) -> None:
        """Save a channel's new position and what it cost, in one write."""
        with self._lock:
            self._channels[record.key] = record
            if amount:
                self._site_spend[site] = self._site_spend.get(site, 0) + amount
                self._recent = [(t, a) for t, a in self._recent if t >= forget_before]
                self._recent.append((now, amount))
            self._save()
