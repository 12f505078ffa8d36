"""A payer's channels on disk: configuration, session key, running total, last voucher.

A payer that forgets its running total would either sign a voucher below one it already
gave (the payee refuses it) or, worse, lose track of what it promised. Each channel is one
small JSON file, written atomically (temporary file, fsync, rename) after every voucher,
readable only by its owner because it holds the session key. A channel whose vouchers the
payer's own key signs (``--no-session-key``) stores only ``"authorizer": "payer"``: the main
key is never written anywhere and comes from the caller on every load. A corrupt file raises
:class:`~micropay.errors.PayerStoreError` naming it; nothing is silently replaced.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from micropay._files import write_json_atomically
from micropay.channels import ChannelClient
from micropay.errors import PayerStoreError, VoucherError
from micropay.payer import Payer
from micropay.vouchers import ChannelConfig, Voucher

_PAYER = "payer"  # "authorizer": the payer's own key signs the vouchers


@dataclass(frozen=True)
class StoredChannel:
    """What is kept for one channel."""

    chain_id: int
    contract: str
    config: ChannelConfig
    authorizer_key: LocalAccount | None
    """The session key that signs vouchers; None when the payer's own key does."""
    cumulative: int
    deposited: int
    last_voucher: Voucher | None
    held_payer_key: bool = False
    """The file is from a version that wrote the payer's own key; the next save drops it."""


class PayerStore:
    """One folder of channel files, named by channel id."""

    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)

    def _path(self, channel_id: bytes) -> Path:
        return self.folder / f"{channel_id.hex()}.json"

    def save(self, payer: Payer) -> None:
        """Persist a payer's state; call after every voucher it signs."""
        if payer.config.authorizer == payer.config.payer:
            authorizer: dict[str, str] = {"authorizer": _PAYER}
        else:
            authorizer = {"authorizerKey": "0x" + bytes(payer.authorizer_key.key).hex()}
        record = {
            "chainId": payer.client.domain.chain_id,
            "contract": payer.client.address,
            "config": payer.config.to_json(),
            **authorizer,
            "cumulative": str(payer.cumulative),
            "deposited": str(payer.deposited),
            "lastVoucher": payer.last_voucher.to_json() if payer.last_voucher else None,
        }
        write_json_atomically(self._path(payer.config.channel_id), record, private=True, indent=1)

    def read(self, channel_id: bytes) -> StoredChannel:
        path = self._path(channel_id)
        if not path.is_file():
            raise PayerStoreError(f"no stored channel 0x{channel_id.hex()} in {self.folder}")
        try:
            data = json.loads(path.read_text(encoding="utf8"))
            config = ChannelConfig.from_json(data["config"])
            key: LocalAccount | None = None
            if data.get("authorizer") != _PAYER:
                key = Account.from_key(data["authorizerKey"])
            held_payer_key = key is not None and key.address == config.payer
            stored = StoredChannel(
                chain_id=int(data["chainId"]),
                contract=str(data["contract"]),
                config=config,
                authorizer_key=None if held_payer_key else key,
                cumulative=int(data["cumulative"]),
                deposited=int(data["deposited"]),
                last_voucher=(
                    Voucher.from_json(data["lastVoucher"]) if data["lastVoucher"] else None
                ),
                held_payer_key=held_payer_key,
            )
        except (ValueError, KeyError, TypeError, VoucherError) as err:
            raise PayerStoreError(f"{path} is corrupt: {err}") from None
        if stored.config.channel_id != channel_id:
            raise PayerStoreError(f"{path} holds another channel than its name says")
        return stored

    def load(self, client: ChannelClient, account: LocalAccount, channel_id: bytes) -> Payer:
        """Rebuild the payer, trusting the larger of the stored total and the chain's claims.

        ``account`` is the payer's key, given at run time; it also signs the vouchers of a
        channel opened without a session key. A file that still holds the payer's key (from
        an older micropay) is rewritten without it.
        """
        stored = self.read(channel_id)
        if (stored.chain_id, stored.contract) != (client.domain.chain_id, client.address):
            raise PayerStoreError(
                f"channel 0x{channel_id.hex()} belongs to contract {stored.contract} on chain "
                f"{stored.chain_id}, not {client.address} on {client.domain.chain_id}"
            )
        payer = Payer.recover(
            client, account, stored.config, stored.authorizer_key or account, stored.last_voucher
        )
        if stored.cumulative > payer.acknowledged:
            last = stored.last_voucher
            held = last is not None and last.cumulative_amount == stored.cumulative
            payer.acknowledge(stored.cumulative, last.signature if last and held else None)
        if stored.held_payer_key:
            self.save(payer)
        return payer

    def channel_ids(self) -> list[bytes]:
        if not self.folder.is_dir():
            return []
        return sorted(bytes.fromhex(p.stem) for p in self.folder.glob("*.json"))
