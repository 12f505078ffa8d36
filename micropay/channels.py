"""A web3.py client for the PaymentChannels singleton.

Every call that acts on a channel takes its :class:`~micropay.vouchers.ChannelConfig`
(the contract stores only balances). Reverts are raised as the named exceptions below, so
``except ChannelFinishedError`` reads like the situation it handles.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from web3.exceptions import BadFunctionCallOutput
from web3.types import TxReceipt

from micropay._contracts import ContractClient, Sender
from micropay.errors import ContractRevertError, VoucherError, register_revert
from micropay.vouchers import ZERO_ADDRESS, ChannelConfig, Voucher, VoucherDomain

# -- named reverts ---------------------------------------------------------------------------


@register_revert("PaymentChannels_ZeroAddress", "payer, payee and authorizer must be set")
class ChannelConfigError(ContractRevertError):
    """The channel configuration is refused by the contract."""


register_revert(
    "PaymentChannels_WithdrawDelayOutOfRange",
    "the withdraw delay must be between {min} and {max} seconds",
)(ChannelConfigError)


@register_revert("PaymentChannels_ChannelNotFound", "nothing was ever deposited into this channel")
class ChannelNotFoundError(ContractRevertError):
    """No deposit was ever made into the channel."""


@register_revert(
    "PaymentChannels_ChannelFinished", "the channel was closed or withdrawn and cannot be used"
)
class ChannelFinishedError(ContractRevertError):
    """The channel is finished for good."""


@register_revert(
    "PaymentChannels_VoucherExceedsDeposit",
    "the voucher promises {cumulativeAmount} but the channel holds only {deposited}",
)
class VoucherExceedsDepositError(ContractRevertError):
    """The voucher is for more than the channel's deposit."""


@register_revert(
    "PaymentChannels_NothingToClaim",
    "the voucher's {cumulativeAmount} is not above the {claimed} already claimed",
)
class NothingToClaimError(ContractRevertError):
    """The voucher adds nothing to what was already claimed."""


@register_revert(
    "PaymentChannels_InvalidVoucherSignature",
    "the voucher is not signed by the channel's authorizer {authorizer}",
)
class VoucherSignatureRejectedError(ContractRevertError):
    """The contract refused the voucher's signature."""


@register_revert("PaymentChannels_NotPayer", "only the channel's payer may do this, not {caller}")
class NotPayerError(ContractRevertError):
    """Only the payer may request a withdrawal."""


@register_revert("PaymentChannels_NotPayee", "only the channel's payee may close it, not {caller}")
class NotPayeeError(ContractRevertError):
    """Only the payee may close."""


@register_revert(
    "PaymentChannels_WithdrawAlreadyRequested",
    "a withdraw was already requested; it ends at {closesAt}",
)
class WithdrawAlreadyRequestedError(ContractRevertError):
    """The payer asked twice."""


@register_revert("PaymentChannels_WithdrawNotRequested", "the payer has not requested a withdraw")
class WithdrawNotRequestedError(ContractRevertError):
    """finishWithdraw before requestWithdraw."""


@register_revert(
    "PaymentChannels_WithdrawNotReady",
    "the withdraw delay ends at {closesAt}; it is now {timestamp}",
)
class WithdrawNotReadyError(ContractRevertError):
    """finishWithdraw before the delay has passed."""


@register_revert("PaymentChannels_ZeroDeposit", "a deposit must move a non-zero amount")
class ZeroDepositError(ContractRevertError):
    """Nothing was deposited (after any transfer fee)."""


@register_revert(
    "PaymentChannels_DepositTooLarge", "a channel holds at most 2**112 - 1 base units in total"
)
class DepositTooLargeError(ContractRevertError):
    """The channel's total would not fit the contract's 112-bit balance."""


# -- state -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelState:
    """A channel's balances as the contract stores them."""

    deposited: int
    claimed: int
    closes_at: int
    """0 while open; when the payer may finish withdrawing, once it asked."""
    finished: bool

    @property
    def exists(self) -> bool:
        return self.deposited > 0

    @property
    def remaining(self) -> int:
        """What the payer's vouchers can still add on top of what is claimed: nothing once
        the channel finished (the rest went back to the payer: :attr:`returned`)."""
        return 0 if self.finished else self.deposited - self.claimed

    @property
    def returned(self) -> int:
        """What went back to the payer when the channel finished (0 while it is open)."""
        return self.deposited - self.claimed if self.finished else 0

    @property
    def withdraw_requested(self) -> bool:
        return self.closes_at != 0

    @property
    def phase(self) -> str:
        """``open``, ``withdrawing``, ``finished``, or ``absent`` (no deposit on chain)."""
        if self.finished:
            return "finished"
        if not self.exists:
            return "absent"
        return "withdrawing" if self.withdraw_requested else "open"


def voucher_to_claim(
    best: Voucher, covered: Voucher | None, *, deposited: int, claimed: int
) -> Voucher | None:
    """The voucher a claim should carry on a channel holding ``deposited``, ``claimed`` of it
    already paid: the best voucher if the deposit covers it, else the best one accepted within
    the confirmed deposit (``covered``: the top-up the best was accepted against was reorged
    away, and a claim with the best would revert). None if neither adds anything."""
    for voucher in (best, covered):
        if voucher is not None and claimed < voucher.cumulative_amount <= deposited:
            return voucher
    return None


class ChannelClient(ContractClient):
    """Deploy or attach to PaymentChannels and act on channels."""

    ARTIFACT = "PaymentChannels"
    SHIPPED_CODE = True

    @property
    def domain(self) -> VoucherDomain:
        """The voucher domain of this deployment (cached after the first call)."""
        cached: VoucherDomain | None = self.__dict__.get("_domain")
        if cached is None:
            cached = VoucherDomain(self.w3.eth.chain_id, self.address)
            self.__dict__["_domain"] = cached
        return cached

    # -- reads ---------------------------------------------------------------------------------

    def state(
        self, config_or_id: ChannelConfig | bytes, *, block: int | None = None
    ) -> ChannelState:
        """The channel at the latest block, or as of block number ``block`` (a confirmed
        deposit is the deposit some blocks under the head). At a block from before the
        contract was deployed, no channel had anything."""
        channel_id = _channel_id(config_or_id)
        try:
            deposited, claimed, closes_at, finished = self._read(
                self.contract.functions.channel(channel_id), block
            )
        except BadFunctionCallOutput:
            if block is None or self.w3.eth.get_code(self.address, block):
                raise
            return ChannelState(0, 0, 0, False)
        return ChannelState(deposited, claimed, closes_at, finished)

    def voucher_digest(self, channel_id: bytes, cumulative_amount: int) -> bytes:
        """The contract's own digest, for cross-checking an encoder."""
        return bytes(
            self._read(self.contract.functions.voucherDigest(channel_id, cumulative_amount))
        )

    def withdraw_delay_bounds(self) -> tuple[int, int]:
        functions = self.contract.functions
        return (
            int(self._read(functions.MIN_WITHDRAW_DELAY())),
            int(self._read(functions.MAX_WITHDRAW_DELAY())),
        )

    # -- payer side ----------------------------------------------------------------------------

    def deposit(self, config: ChannelConfig, amount: int, sender: Sender) -> TxReceipt:
        """Open or top up. For ETH the amount is sent as value; for an ERC-20, approve first."""
        value = amount if config.token == ZERO_ADDRESS else 0
        call = self.contract.functions.deposit(config.as_tuple(), amount)
        return self._transact(call, sender, value)

    def deposit_with_permit(
        self,
        config: ChannelConfig,
        amount: int,
        deadline: int,
        permit_signature: tuple[int, bytes, bytes],
        sender: Sender,
    ) -> TxReceipt:
        """Deposit an ERC-20 with an EIP-2612 permit ``(v, r, s)`` signed by ``sender``."""
        v, r, s = permit_signature
        call = self.contract.functions.depositWithPermit(
            config.as_tuple(), amount, deadline, v, r, s
        )
        return self._transact(call, sender)

    def request_withdraw(self, config: ChannelConfig, sender: Sender) -> TxReceipt:
        return self._transact(self.contract.functions.requestWithdraw(config.as_tuple()), sender)

    def finish_withdraw(self, config: ChannelConfig, sender: Sender) -> TxReceipt:
        return self._transact(self.contract.functions.finishWithdraw(config.as_tuple()), sender)

    # -- payee side ----------------------------------------------------------------------------

    def claim(self, config: ChannelConfig, voucher: Voucher, sender: Sender) -> TxReceipt:
        _check_matches(config, voucher)
        call = self.contract.functions.claim(
            config.as_tuple(), voucher.cumulative_amount, voucher.compact_signature
        )
        return self._transact(call, sender)

    def claim_many(
        self, claims: Sequence[tuple[ChannelConfig, Voucher]], sender: Sender
    ) -> TxReceipt:
        """Settle many channels in one transaction; order by payee and token to batch payouts."""
        batch: list[Any] = []
        for config, voucher in claims:
            _check_matches(config, voucher)
            batch.append((config.as_tuple(), voucher.cumulative_amount, voucher.compact_signature))
        return self._transact(self.contract.functions.claimMany(batch), sender)

    def close(self, config: ChannelConfig, voucher: Voucher | None, sender: Sender) -> TxReceipt:
        """Close as the payee: claim with ``voucher`` (None: nothing more), refund the rest."""
        if voucher is None:
            amount, signature = 0, b""
        else:
            _check_matches(config, voucher)
            amount, signature = voucher.cumulative_amount, voucher.compact_signature
        call = self.contract.functions.close(config.as_tuple(), amount, signature)
        return self._transact(call, sender)


def _channel_id(config_or_id: ChannelConfig | bytes) -> bytes:
    return config_or_id.channel_id if isinstance(config_or_id, ChannelConfig) else config_or_id


def _check_matches(config: ChannelConfig, voucher: Voucher) -> None:
    if voucher.channel_id != config.channel_id:
        raise VoucherError("the voucher is for another channel than this configuration")
