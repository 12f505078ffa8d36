"""The payer's wallet: every channel of one payer key, for the CLI and the HTTP client alike.

One JSON file (``<home>/wallet.json`` for the CLI; any path for :class:`HttpPayer`),
rewritten atomically on every change and readable by its owner only. A reader who paid
over HTTP sees, tops up and withdraws the same channels from ``micropay channel``.

One key story: a channel's session key is derived from the payer's key and the channel's
coordinates (:func:`derive_session_key`), so the wallet holds no secret of its own and a
lost wallet is found again on chain. The payer's own key is never written (a channel it
authorizes itself says so). The one exception is a channel opened by a micropay from before
derivation, with a random session key: migrating its file (``<home>/channels/*.json``)
keeps that key, since nothing else can sign for the channel.

Per channel the wallet keeps what :class:`~micropay.payer.Payer` knows: the acknowledged
total and its signature, the highest total signed (saved before each voucher leaves), the
deposit; and the sites that were paid through it. It also keeps what was spent per site and
over time, for the HTTP client's caps, and beside it (:mod:`micropay.receipt_log`) every
receipt the sites gave. A file of the HTTP client's first format is upgraded
in place when opened.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from web3 import Web3

from micropay._files import write_json_atomically
from micropay.channels import ChannelClient, ChannelState
from micropay.errors import PayerStoreError, VoucherError
from micropay.payer import Payer
from micropay.receipt_log import ReceiptLog, receipts_path
from micropay.vouchers import SECP256K1_N, ChannelConfig, Voucher

__all__ = ["ChannelStatus", "Wallet", "WalletChannel", "channel_salt", "derive_session_key"]

_FORMAT = 2
_HTTP_STORE_FORMAT = 1  # the HTTP client's store before the wallet: upgraded when opened
_DERIVATION_TAG = b"micropay/http-channel/v1"  # unchanged: keys derived before still match


def derive_session_key(
    account: LocalAccount, chain_id: int, contract: str, payee: str, token: str, index: int
) -> LocalAccount:
    """The session key of the payer's ``index``-th channel to ``payee`` in ``token``.

    An HMAC of the payer's key over the channel's coordinates: reproducible from the
    payer's key alone (a lost wallet loses nothing), useless for recovering the payer's key
    if it leaks (it can spend at most that channel's deposit).
    """
    message = b"".join(
        [
            _DERIVATION_TAG,
            chain_id.to_bytes(32, "big"),
            bytes.fromhex(to_checksum_address(contract)[2:]),
            bytes.fromhex(to_checksum_address(payee)[2:]),
            bytes.fromhex(to_checksum_address(token)[2:]),
            index.to_bytes(32, "big"),
        ]
    )
    secret = hmac.new(bytes(account.key), message, hashlib.sha256).digest()
    while not 0 < int.from_bytes(secret, "big") < SECP256K1_N:  # odds 2**-128
        secret = hashlib.sha256(secret).digest()
    key: LocalAccount = Account.from_key(secret)
    return key


SCAN_LIMIT = 256  # channels per (contract, payee, token) searched for a free slot


def slots(
    client: ChannelClient, config_at: Callable[[int], ChannelConfig]
) -> Iterator[tuple[int, ChannelConfig, ChannelState]]:
    """The channels at derivation index 0, 1, ... with their state on chain, up to and
    including the first never used (neither funded nor finished): where a lost wallet's
    channels are found again, and where the next channel opens."""
    for index in range(SCAN_LIMIT):
        config = config_at(index)
        state = client.state(config)
        yield index, config, state
        if not state.exists and not state.finished:
            return
    raise PayerStoreError(f"no free channel slot among the first {SCAN_LIMIT}")


def channel_salt(index: int) -> bytes:
    """Small salts: the session key already makes each channel id unique, and a salt of
    mostly zero bytes is cheaper calldata on every claim."""
    return (index + 1).to_bytes(32, "big")


@dataclass(frozen=True)
class WalletChannel:
    """What the wallet keeps of one channel."""

    chain_id: int
    contract: str
    config: ChannelConfig
    index: int | None
    """The derivation index of its session key (and salt); None for a migrated channel."""
    acknowledged: int
    signature: bytes | None
    """The payer's signature of ``acknowledged``; None for zero or a total claimed on chain."""
    highest_signed: int
    deposited: int
    sites: tuple[str, ...] = ()
    """The origins (``scheme://host:port``) paid through it."""
    retired: str | None = None
    """Why it takes no new payments (the site called it closing or unknown, a withdraw)."""
    legacy_key: bytes | None = field(default=None, repr=False)
    """A random session key from before derivation: the only secret a wallet may hold."""
    refunded: int | None = None
    """The channel's refunded total as the site last reported it (JSON ``refunded``; None:
    not known, a channel found again or kept by a wallet from before refunds). A receipt's
    charged total may fall below what was acknowledged only by what this grows."""

    @property
    def channel_id(self) -> bytes:
        return self.config.channel_id

    def authorizer(self, account: LocalAccount) -> LocalAccount:
        """The key that signs its vouchers, rebuilt from the payer's key."""
        if account.address != self.config.payer:
            raise PayerStoreError(
                f"channel 0x{self.channel_id.hex()} belongs to payer {self.config.payer}, "
                f"not {account.address}"
            )
        if self.config.authorizer == self.config.payer:
            return account
        key: LocalAccount | None = None
        if self.legacy_key is not None:
            key = Account.from_key(self.legacy_key)
        elif self.index is not None:
            key = derive_session_key(
                account,
                self.chain_id,
                self.contract,
                self.config.payee,
                self.config.token,
                self.index,
            )
        if key is None or key.address != self.config.authorizer:
            raise PayerStoreError(
                f"the session key of channel 0x{self.channel_id.hex()} cannot be rebuilt "
                "from this payer's key"
            )
        return key

    def payer(self, client: ChannelClient, account: LocalAccount) -> Payer:
        """The channel's :class:`Payer`, with the wallet's totals (no chain read)."""
        if (client.domain.chain_id, client.address) != (self.chain_id, self.contract):
            raise PayerStoreError(
                f"channel 0x{self.channel_id.hex()} belongs to contract {self.contract} on "
                f"chain {self.chain_id}, not {client.address} on {client.domain.chain_id}"
            )
        return Payer(
            client,
            account,
            self.config,
            self.authorizer(account),
            acknowledged=self.acknowledged,
            acknowledged_signature=self.signature,
            highest_signed=self.highest_signed,
            deposited=self.deposited,
        )

    def with_payer(self, payer: Payer) -> WalletChannel:
        """This record once ``payer`` has moved on (signed, been acknowledged, topped up)."""
        return replace(
            self,
            acknowledged=payer.acknowledged,
            signature=payer.acknowledged_signature,
            highest_signed=payer.highest_signed,
            deposited=payer.deposited,
        )

    @classmethod
    def of(cls, payer: Payer, index: int | None, **extra: Any) -> WalletChannel:
        client = payer.client
        return cls(
            chain_id=client.domain.chain_id,
            contract=client.address,
            config=payer.config,
            index=index,
            acknowledged=payer.acknowledged,
            signature=payer.acknowledged_signature,
            highest_signed=payer.highest_signed,
            deposited=payer.deposited,
            **extra,
        )

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "chainId": self.chain_id,
            "contract": self.contract,
            "config": self.config.to_json(),
            "index": self.index,
            "acknowledged": str(self.acknowledged),
            "signature": None if self.signature is None else "0x" + self.signature.hex(),
            "highestSigned": str(self.highest_signed),
            "deposited": str(self.deposited),
            "sites": list(self.sites),
            "retired": self.retired,
        }
        if self.legacy_key is not None:
            data["legacySessionKey"] = "0x" + self.legacy_key.hex()
        if self.refunded is not None:
            data["refunded"] = str(self.refunded)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WalletChannel:
        signature, legacy = data["signature"], data.get("legacySessionKey")
        index = data["index"]
        return cls(
            chain_id=int(data["chainId"]),
            contract=to_checksum_address(data["contract"]),
            config=ChannelConfig.from_json(data["config"]),
            index=None if index is None else int(index),
            acknowledged=int(data["acknowledged"]),
            signature=None if signature is None else bytes.fromhex(signature[2:]),
            highest_signed=int(data["highestSigned"]),
            deposited=int(data["deposited"]),
            sites=tuple(str(site) for site in data.get("sites", [])),
            retired=data.get("retired"),
            legacy_key=None if legacy is None else bytes.fromhex(legacy[2:]),
            refunded=None if data.get("refunded") is None else int(data["refunded"]),
        )


@dataclass(frozen=True)
class ChannelStatus:
    """A wallet channel beside what the chain says of it: what ``micropay channel list``
    prints and :meth:`HttpPayer.channels` returns."""

    channel: WalletChannel
    chain: ChannelState

    @property
    def state(self) -> str:
        phase = self.chain.phase
        return "retired" if phase == "open" and self.channel.retired else phase

    @property
    def spent(self) -> int:
        """What the payee holds or has claimed: at least the acknowledged total."""
        return max(self.channel.acknowledged, self.chain.claimed)

    @property
    def unspent(self) -> int:
        """The deposit not yet promised to the payee; nothing once the channel finished."""
        if self.chain.finished:
            return 0
        return max(0, self.chain.deposited - self.spent)

    @property
    def withdraw_at(self) -> int | None:
        """When the payer may finish its withdraw (a unix time), once it asked."""
        return self.chain.closes_at if self.chain.withdraw_requested else None


class Wallet:
    """Channels by id, spending by site and over time; thread-safe.

    ``path=None`` keeps everything in memory (tests, one-off scripts). ``legacy_folder``
    is a folder of channel files from an older CLI, imported (then removed) on opening.
    """

    def __init__(self, path: Path | str | None = None, *, legacy_folder: Path | None = None):
        self.path = Path(path).expanduser() if path is not None else None
        self._lock = threading.Lock()
        self._channels: dict[bytes, WalletChannel] = {}
        self._site_spend: dict[str, int] = {}
        self._recent: list[tuple[float, int]] = []
        self._seen: tuple[int, int, int] | None = None  # the file as last read or written
        self.receipts = ReceiptLog(None if self.path is None else receipts_path(self.path))
        """The receipts the sites gave for the payments made from this wallet."""
        if self.path is not None:
            with self._held(save=False):  # another process may be writing it now
                pass
        if legacy_folder is not None and legacy_folder.is_dir():
            self._import_folder(legacy_folder)

    # -- reading and writing -------------------------------------------------------------------

    def _changing(self) -> contextlib.AbstractContextManager[None]:
        """Hold the wallet for one change, then save it (see :meth:`_held`)."""
        return self._held(save=True)

    @contextlib.contextmanager
    def _held(self, *, save: bool) -> Iterator[None]:
        """Hold the wallet: against this process's threads, and for a file against other
        processes too (an exclusive lock on ``<wallet>.lock``), with what they wrote since
        it was read taken in first; ``save``: write it back at the end. Two processes on one
        wallet (two workers of an agent, a CLI run beside it) so never put back an older
        copy over each other's spending or channels, and see each other's spending."""
        with self._lock:
            if self.path is None:
                yield
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            name = self.path.with_name(self.path.name + ".lock")
            lock = os.open(name, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX)
                stamp = self._stamp()
                if stamp is not None and stamp != self._seen:  # (a deleted file: keep ours)
                    self._channels, self._site_spend, self._recent = {}, {}, []
                    self._load(self.path)
                    self._seen = self._stamp()
                yield
                if save:
                    self._save()
            finally:
                os.close(lock)  # and with it the lock

    def _stamp(self) -> tuple[int, int, int] | None:
        """What tells one version of the file from the next (it is replaced, never edited)."""
        assert self.path is not None
        try:
            found = self.path.stat()
        except FileNotFoundError:
            return None
        return found.st_ino, found.st_mtime_ns, found.st_size

    def _load(self, path: Path) -> None:
        try:
            data = json.loads(path.read_text(encoding="utf8"))
            if data.get("format") == _HTTP_STORE_FORMAT:
                self._load_http_store(data)
                self._save()
                return
            if data.get("format") != _FORMAT:
                raise ValueError(f"unknown format {data.get('format')!r}")
            for item in data["channels"]:
                record = WalletChannel.from_json(item)
                self._channels[record.channel_id] = record
            self._site_spend = {site: int(v) for site, v in data["siteSpend"].items()}
            self._recent = [(float(t), int(a)) for t, a in data["recent"]]
        except (OSError, ValueError, KeyError, TypeError, AttributeError, VoucherError) as err:
            raise PayerStoreError(f"the wallet {path} is unreadable: {err}") from None

    def _load_http_store(self, data: dict[str, Any]) -> None:
        """The HTTP client's store of the first format: channels by offer key
        (``eip155:<chain>|<contract>|<payee>|<asset>``), session keys derived. It did not
        say which sites paid through which channel."""
        entries = [(item["key"], item, item.get("why")) for item in data.get("retired", [])]
        entries += [(key, item, None) for key, item in data["channels"].items()]  # live last
        for key, item, retired in entries:
            network, contract = str(key).split("|")[:2]
            signature = item["signature"]
            record = WalletChannel(
                chain_id=int(network.removeprefix("eip155:")),
                contract=to_checksum_address(contract),
                config=ChannelConfig.from_json(item["config"]),
                index=int(item["index"]),
                acknowledged=int(item["cumulative"]),
                signature=None if signature is None else bytes.fromhex(signature[2:]),
                highest_signed=int(item.get("highestSigned", item["cumulative"])),
                deposited=int(item["deposited"]),
                retired=retired,
            )
            self._channels[record.channel_id] = record
        self._site_spend = {site: int(v) for site, v in data["siteSpend"].items()}
        self._recent = [(float(t), int(a)) for t, a in data["recent"]]

    def _import_folder(self, folder: Path) -> None:
        """Channel files of the CLI before the wallet (one per channel, a random session key
        each): imported once, and removed once the wallet holding them is on disk (so no
        second copy of a session key, or of a payer key an old version wrote, stays)."""
        files = sorted(folder.glob("*.json"))
        with self._changing():
            for path in files:
                try:
                    data = json.loads(path.read_text(encoding="utf8"))
                    config = ChannelConfig.from_json(data["config"])
                    key = data.get("authorizerKey")
                    legacy = None if key is None else bytes.fromhex(key[2:])
                    if legacy is not None and Account.from_key(legacy).address == config.payer:
                        legacy = None  # an old version wrote the payer's own key: drop it
                    last = Voucher.from_json(data["lastVoucher"]) if data["lastVoucher"] else None
                    cumulative = int(data["cumulative"])
                    held = last is not None and last.cumulative_amount == cumulative
                    record = WalletChannel(
                        chain_id=int(data["chainId"]),
                        contract=to_checksum_address(data["contract"]),
                        config=config,
                        index=None,
                        acknowledged=cumulative,
                        signature=last.signature if last is not None and held else None,
                        highest_signed=cumulative,
                        deposited=int(data["deposited"]),
                        legacy_key=legacy,
                    )
                except (OSError, ValueError, KeyError, TypeError, VoucherError) as err:
                    raise PayerStoreError(f"{path} is corrupt: {err}") from None
                if record.channel_id.hex() != path.stem:
                    raise PayerStoreError(f"{path} holds another channel than its name says")
                known = self._channels.get(record.channel_id)
                if known is None or known.highest_signed < record.highest_signed:
                    self._channels[record.channel_id] = record
        if self.path is None:
            return  # an in-memory wallet: the files stay the only durable copy
        for path in files:
            path.unlink()
        if not any(folder.iterdir()):
            folder.rmdir()

    def _save(self) -> None:
        """Write the wallet (called holding :meth:`_changing`)."""
        if self.path is None:
            return
        data = {
            "format": _FORMAT,
            "channels": [record.to_json() for record in self._channels.values()],
            "siteSpend": {site: str(amount) for site, amount in self._site_spend.items()},
            "recent": [[t, str(a)] for t, a in self._recent],
        }
        write_json_atomically(self.path, data, private=True)
        self._seen = self._stamp()

    def _keep(self, record: WalletChannel) -> WalletChannel:
        """Hold ``record`` as its channel's (under :meth:`_changing`): its highest total
        signed is at least the one on file, which another process may have signed."""
        known = self._channels.get(record.channel_id)
        if known is not None and known.highest_signed > record.highest_signed:
            record = replace(record, highest_signed=known.highest_signed)
        self._channels[record.channel_id] = record
        return record

    # -- channels ------------------------------------------------------------------------------

    def channels(self) -> list[WalletChannel]:
        with self._lock:
            return list(self._channels.values())

    def channel(self, channel_id: bytes) -> WalletChannel | None:
        return self._channels.get(channel_id)

    def statuses(self, w3: Web3, payer: str) -> list[ChannelStatus]:
        """The channels of ``payer`` on ``w3``'s chain, each beside its state on chain."""
        chain_id = w3.eth.chain_id
        clients: dict[str, ChannelClient] = {}
        statuses = []
        for record in self.channels():
            if record.chain_id != chain_id or record.config.payer != payer:
                continue
            if record.contract not in clients:
                clients[record.contract] = ChannelClient(w3, record.contract)
            statuses.append(ChannelStatus(record, clients[record.contract].state(record.config)))
        return statuses

    def require(self, channel_id: bytes) -> WalletChannel:
        record = self._channels.get(channel_id)
        if record is None:
            where = self.path or "this wallet (in memory)"
            raise PayerStoreError(f"no stored channel 0x{channel_id.hex()} in the wallet {where}")
        return record

    def put(self, record: WalletChannel) -> None:
        with self._changing():
            self._keep(record)

    def retire(self, channel_id: bytes, why: str) -> None:
        """Take no new payments on a channel; it stays listed for its withdraw."""
        with self._changing():
            record = self._channels.get(channel_id)
            if record is not None and record.retired is None:
                self._channels[channel_id] = replace(record, retired=why)

    def open(
        self,
        client: ChannelClient,
        account: LocalAccount,
        payee: str,
        deposit: int,
        *,
        token: str,
        withdraw_delay: int,
        use_session_key: bool = True,
    ) -> Payer:
        """Open the payer's next channel to ``payee`` (a derived session key, or the payer's
        own key) with a first deposit, and keep it."""
        chain_id = client.domain.chain_id
        keys: dict[int, LocalAccount] = {}  # each slot's authorizer, derived once (a KDF apiece)

        def config_at(index: int) -> ChannelConfig:
            authorizer = keys[index] = (
                derive_session_key(account, chain_id, client.address, payee, token, index)
                if use_session_key
                else account
            )
            return ChannelConfig(
                payer=account.address,
                payee=payee,
                token=token,
                authorizer=authorizer.address,
                withdraw_delay=withdraw_delay,
                salt=channel_salt(index),
            )

        *_, (index, _config, _state) = slots(client, config_at)
        session_key = keys[index] if use_session_key else None
        payer = Payer.open(
            client,
            account,
            payee,
            deposit,
            token=token,
            withdraw_delay=withdraw_delay,
            session_key=session_key,
            use_session_key=use_session_key,
            salt=channel_salt(index),
        )
        self.put(WalletChannel.of(payer, index))
        return payer

    # -- spending ------------------------------------------------------------------------------

    def site_spend(self, site: str) -> int:
        with self._held(save=False):  # with what other processes spent meanwhile
            return self._site_spend.get(site, 0)

    def spend_since(self, since: float) -> int:
        with self._held(save=False):
            return sum(amount for when, amount in self._recent if when >= since)

    def record(
        self, record: WalletChannel, site: str, amount: int, now: float, forget_before: float
    ) -> WalletChannel:
        """Save a channel's new position and what it cost ``site``, in one write; returns
        the record as saved (with ``site`` among its sites)."""
        if site not in record.sites:
            record = replace(record, sites=(*record.sites, site))
        with self._changing():
            record = self._keep(record)
            self._count(site, amount, now, forget_before)
        return record

    def spent(self, site: str, amount: int, now: float, forget_before: float) -> None:
        """Count a payment that went through no channel (an ``exact`` transfer) against
        ``site`` and the period, in one write."""
        with self._changing():
            self._count(site, amount, now, forget_before)

    def _count(self, site: str, amount: int, now: float, forget_before: float) -> None:
        if amount:
            self._site_spend[site] = self._site_spend.get(site, 0) + amount
            self._recent = [(t, a) for t, a in self._recent if t >= forget_before]
            self._recent.append((now, amount))
