"""The payer's side of a channel: open it, sign the next voucher, never promise too much.

A :class:`Payer` keeps two totals of one channel. ``acknowledged`` is the total the payee
is known to hold (a voucher handed over, a receipt, a view the payer checked), and
``highest_signed`` the largest total the payer has ever signed there: the payee may hold
that one too, if a voucher left and its answer was lost. ``voucher_for`` signs any total
from the acknowledged one up to the deposit (an uncharged or re-priced request signs again
from the acknowledged total) and refuses, before signing, anything beyond the deposit.
By default the vouchers are signed by a *session key* named as the channel's authorizer,
so the payer's main key signs only on-chain transactions and a leaked session key can
spend at most the deposit.
"""

from __future__ import annotations

import os
import time

from eth_account.signers.local import LocalAccount
from web3.types import TxReceipt

from micropay.channels import ChannelClient, ChannelState
from micropay.errors import PaymentRefusedError, VoucherError
from micropay.tokens import TokenClient
from micropay.vouchers import ZERO_ADDRESS, ChannelConfig, Voucher, new_session_key, sign_voucher


def default_salt() -> bytes:
    """A salt that differs per channel yet costs little calldata: microseconds since 1970.

    Each zero byte of calldata costs 4 gas and each non-zero byte 16, and the salt is sent
    with every claim, so 7 significant bytes instead of 32 random ones save about 300 gas
    per claim. Uniqueness only matters between the same payer, payee and token.
    """
    return (time.time_ns() // 1_000 + int.from_bytes(os.urandom(1), "big")).to_bytes(32, "big")


class Payer:
    """One channel from the payer's side."""

    def __init__(
        self,
        client: ChannelClient,
        account: LocalAccount,
        config: ChannelConfig,
        authorizer_key: LocalAccount,
        *,
        acknowledged: int = 0,
        acknowledged_signature: bytes | None = None,
        highest_signed: int | None = None,
        deposited: int = 0,
    ) -> None:
        if authorizer_key.address != config.authorizer:
            raise VoucherError("authorizer_key is not the channel's authorizer")
        if account.address != config.payer:
            raise VoucherError("account is not the channel's payer")
        self.client = client
        self.account = account
        self.config = config
        self.authorizer_key = authorizer_key
        self._signing_secret = bytes(authorizer_key.key)
        self.acknowledged = acknowledged
        """The total the payee is known to hold; the next payment is signed on top of it."""
        self.acknowledged_signature = acknowledged_signature
        """The payer's signature of ``acknowledged`` (None for zero, or a total read from
        the chain's claims)."""
        self.highest_signed = max(acknowledged, highest_signed or 0)
        """The largest total ever signed on the channel: what the payee may hold at most."""
        self.deposited = deposited
        self.last_voucher: Voucher | None = None
        """The voucher signed last."""
        self.finished = False
        """Known closed or withdrawn (from the chain at recovery, or by finish_withdraw)."""

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        client: ChannelClient,
        account: LocalAccount,
        payee: str,
        deposit: int,
        *,
        token: str = ZERO_ADDRESS,
        withdraw_delay: int = 24 * 3600,
        session_key: LocalAccount | None = None,
        use_session_key: bool = True,
        salt: bytes | None = None,
    ) -> Payer:
        """Open a channel with a first deposit (approving an ERC-20 first if needed)."""
        authorizer = session_key or (new_session_key() if use_session_key else account)
        config = ChannelConfig(
            payer=account.address,
            payee=payee,
            token=token,
            authorizer=authorizer.address,
            withdraw_delay=withdraw_delay,
            salt=salt or default_salt(),
        )
        payer = cls(client, account, config, authorizer)
        payer.top_up(deposit)
        return payer

    @classmethod
    def recover(
        cls,
        client: ChannelClient,
        account: LocalAccount,
        config: ChannelConfig,
        authorizer_key: LocalAccount,
        last_voucher: Voucher | None,
    ) -> Payer:
        """Rebuild a payer from the chain and the last voucher it issued.

        The running total is the larger of the last voucher and what the payee already
        claimed on chain, so a recovered payer never signs a voucher below one it gave.
        """
        if last_voucher is not None and last_voucher.channel_id != config.channel_id:
            raise VoucherError("last_voucher belongs to another channel")
        payer = cls(
            client,
            account,
            config,
            authorizer_key,
            acknowledged=last_voucher.cumulative_amount if last_voucher else 0,
            acknowledged_signature=last_voucher.signature if last_voucher else None,
        )
        payer.last_voucher = last_voucher
        payer.refresh()
        return payer

    def top_up(self, amount: int) -> TxReceipt:
        """Add to the deposit; for an ERC-20 the allowance is raised first if it is short."""
        if self.config.token != ZERO_ADDRESS:
            TokenClient(self.client.w3, self.config.token).ensure_allowance(
                self.client.address, amount, self.account
            )
        receipt = self.client.deposit(self.config, amount, self.account)
        self.deposited = self.client.state(self.config).deposited
        return receipt

    # -- paying --------------------------------------------------------------------------------

    @property
    def cumulative(self) -> int:
        """Everything promised so far: the highest total signed."""
        return self.highest_signed

    @property
    def remaining(self) -> int:
        """What can still be promised on top of the acknowledged total without a top-up."""
        return self.deposited - self.acknowledged

    def pay(self, amount: int) -> Voucher:
        """Sign the voucher that adds ``amount`` to everything promised so far, and count it
        as handed over (the CLI's and a script's way: the voucher goes straight to the
        payee)."""
        if type(amount) is not int or amount <= 0:
            raise PaymentRefusedError(f"a payment must be a positive integer, not {amount!r}")
        voucher = self.voucher_for(self.highest_signed + amount)
        self.acknowledge(voucher.cumulative_amount, voucher.signature)
        return voucher

    def voucher_for(self, cumulative_amount: int) -> Voucher:
        """Sign a voucher for an exact total: at least the acknowledged one, at most the
        deposit. Signing below ``highest_signed`` again is harmless (the payee can claim
        only one voucher, and the higher one already bounds what it can take)."""
        if self.finished:
            raise PaymentRefusedError(
                f"channel 0x{self.config.channel_id.hex()} is finished (closed or withdrawn): "
                "no voucher on it can be claimed; open a new channel"
            )
        if cumulative_amount < self.acknowledged:
            raise PaymentRefusedError(
                f"cumulative {cumulative_amount} is below the {self.acknowledged} the payee "
                "already holds"
            )
        if cumulative_amount > self.deposited:
            missing = cumulative_amount - self.deposited
            raise PaymentRefusedError(
                f"cumulative {cumulative_amount} would exceed the deposit of {self.deposited}; "
                f"top up first: micropay channel topup 0x{self.config.channel_id.hex()} {missing}"
            )
        voucher = sign_voucher(
            self.client.domain, self.config.channel_id, cumulative_amount, self._signing_secret
        )
        self.highest_signed = max(self.highest_signed, cumulative_amount)
        self.last_voucher = voucher
        return voucher

    def acknowledge(self, total: int, signature: bytes | None) -> None:
        """The payee holds ``total`` (a receipt, or its view backed by ``signature`` or by the
        chain's claims): the next payment builds on it. It may be below the previous one,
        when a payee lost vouchers it never claimed."""
        self.acknowledged = total
        self.acknowledged_signature = signature
        self.highest_signed = max(self.highest_signed, total)

    def refresh(self) -> ChannelState:
        """Bring the deposit, the claims and the finished flag up to date from the chain (a
        top-up or a claim made elsewhere); returns the state read."""
        state = self.client.state(self.config)
        self.deposited = state.deposited
        self.finished = state.finished
        if state.claimed > self.acknowledged:
            self.acknowledge(state.claimed, None)
        return state

    # -- leaving -------------------------------------------------------------------------------

    def state(self) -> ChannelState:
        return self.client.state(self.config)

    def request_withdraw(self) -> TxReceipt:
        return self.client.request_withdraw(self.config, self.account)

    def finish_withdraw(self) -> TxReceipt:
        receipt = self.client.finish_withdraw(self.config, self.account)
        self.finished = True
        return receipt
