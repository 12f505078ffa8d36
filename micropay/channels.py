"""A web3.py client for the PaymentChannels singleton.

Every call that acts on a channel takes its :class:`~micropay.vouchers.ChannelConfig`
(the contract stores only balances). Reverts are raised as the named exceptions below, so
``except ChannelFinishedError`` reads like the situation it handles.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from eth_account.signers.local import LocalAccount
from web3.exceptions import BadFunctionCallOutput
from web3.types import TxReceipt

from micropay._contracts import ContractClient, Sender, sender_address
from micropay.errors import ContractRevertError, VoucherError, register_revert
from micropay.vouchers import (
    ZERO_ADDRESS,
    ChannelConfig,
    PayeeClaim,
    Voucher,
    VoucherDomain,
    sign_payee_claim,
)

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
    "PaymentChannels_TotalExceedsDeposit",
    "the total of {totalClaimed} to settle is more than the {deposited} the channel holds",
)
class TotalExceedsDepositError(ContractRevertError):
    """The total to settle is more than the channel's deposit (less refunds)."""


VoucherExceedsDepositError = TotalExceedsDepositError
"""The name from before vouchers were ceilings: a claim of the whole voucher over the deposit."""


@register_revert(
    "PaymentChannels_TotalExceedsCeiling",
    "the total of {totalClaimed} to settle is above the voucher's ceiling of {ceiling}",
)
class TotalExceedsCeilingError(ContractRevertError):
    """The total to settle is more than the payer's voucher authorises."""


@register_revert(
    "PaymentChannels_NothingToClaim",
    "the total of {totalClaimed} is not above the {claimed} already claimed",
)
class NothingToClaimError(ContractRevertError):
    """The claim adds nothing to what was already claimed (totals never go down)."""


@register_revert(
    "PaymentChannels_InvalidVoucherSignature",
    "the voucher is not signed by the channel's authorizer {authorizer}",
)
class VoucherSignatureRejectedError(ContractRevertError):
    """The contract refused the voucher's signature."""


@register_revert(
    "PaymentChannels_InvalidPayeeSignature",
    "the relayed claim is not signed by the channel's payee {payee}",
)
class PayeeSignatureRejectedError(ContractRevertError):
    """A relayed claim without the payee's consent to its total."""


register_revert(
    "PaymentChannels_PayeeSignatureCount",
    "{claims} claims need as many payee signatures, not {payeeSignatures}",
)(PayeeSignatureRejectedError)


@register_revert(
    "PaymentChannels_RefundExceedsUnspent",
    "a refund of {amount} is more than the {unspent} of the deposit not yet claimed",
)
class RefundExceedsUnspentError(ContractRevertError):
    """The payee tried to refund money that is claimed, or not there."""


@register_revert("PaymentChannels_ZeroRefund", "a refund must move a non-zero amount")
class ZeroRefundError(ContractRevertError):
    """A refund of nothing."""


@register_revert("PaymentChannels_NotPayer", "only the channel's payer may do this, not {caller}")
class NotPayerError(ContractRevertError):
    """Only the payer may request a withdrawal."""


@register_revert(
    "PaymentChannels_NotPayee", "only the channel's payee may settle, close or refund, not {caller}"
)
class NotPayeeError(ContractRevertError):
    """Only the payee may claim (others relay with its signature), close or refund."""


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
    """Everything deposited less what the payee refunded: the most it can ever be paid."""
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

    def payee_claim_digest(self, channel_id: bytes, total_claimed: int) -> bytes:
        """The contract's digest of a payee's consent to a relayed claim, for cross-checking."""
        return bytes(
            self._read(self.contract.functions.payeeClaimDigest(channel_id, total_claimed))
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
    #
    # A voucher is a ceiling: each claim settles a total up to it (by default the whole
    # voucher). Only the payee settles: it sends the claim itself, or signs a PayeeClaim for
    # a relayer (``claim_for``; ``claim_each`` does it given the payee's key).

    def claim(
        self, config: ChannelConfig, voucher: Voucher, sender: Sender, *, total: int | None = None
    ) -> TxReceipt:
        """As the payee, settle the channel at ``total`` (default: the voucher's amount)."""
        return self._transact(self._claim_call((config, voucher, _total(voucher, total))), sender)

    def claim_for(
        self, config: ChannelConfig, voucher: Voucher, payee_claim: PayeeClaim, sender: Sender
    ) -> TxReceipt:
        """Relay the payee's claim: settle at ``payee_claim.total_claimed``, ``sender`` pays."""
        call = self._claim_for_call((config, voucher, payee_claim.total_claimed), payee_claim)
        return self._transact(call, sender)

    def claim_many(self, claims: Sequence[ClaimItem], sender: Sender) -> TxReceipt:
        """As the payee of every channel, settle them in one transaction; order by token to
        batch payouts."""
        return self._transact(self._claim_many_call(claims), sender)

    def claim_many_for(
        self, claims: Sequence[ClaimItem], payee_claims: Sequence[PayeeClaim], sender: Sender
    ) -> TxReceipt:
        """Relay many payees' claims in one transaction, ``payee_claims[i]`` for ``claims[i]``
        (its total is the one settled)."""
        return self._transact(self._claim_many_for_call(claims, payee_claims), sender)

    def claim_each(
        self, claims: Sequence[ClaimItem], sender: Sender, *, payee_key: LocalAccount | None = None
    ) -> TxReceipt:
        """Settle ``claims`` in one transaction: ``claim`` for one (it costs less gas than a
        ``claimMany`` of one), ``claimMany`` for several. A ``sender`` that is not the payee
        relays: ``payee_key`` signs each total (``claimFor``, ``claimManyFor``)."""
        return self._transact(self._claim_each_call(claims, sender, payee_key), sender)

    def estimate_claim_each(
        self, claims: Sequence[ClaimItem], sender: Sender, *, payee_key: LocalAccount | None = None
    ) -> int:
        """The node's gas estimate of :meth:`claim_each` from ``sender``; nothing is sent."""
        return self._estimate(self._claim_each_call(claims, sender, payee_key), sender)

    def close(
        self,
        config: ChannelConfig,
        voucher: Voucher | None,
        sender: Sender,
        *,
        total: int | None = None,
    ) -> TxReceipt:
        """Close as the payee: settle at ``total`` (default: ``voucher``'s amount; None for
        the voucher: nothing more) and refund the rest to the payer."""
        if voucher is None:
            amount, ceiling, signature = 0, 0, b""
        else:
            _check_matches(config, voucher)
            amount = _total(voucher, total)
            ceiling, signature = voucher.cumulative_amount, voucher.compact_signature
        call = self.contract.functions.close(config.as_tuple(), amount, ceiling, signature)
        return self._transact(call, sender)

    def refund(self, config: ChannelConfig, amount: int, sender: Sender) -> TxReceipt:
        """As the payee, return ``amount`` of the unclaimed deposit to the payer; the channel
        stays open with that much less."""
        return self._transact(self.contract.functions.refund(config.as_tuple(), amount), sender)

    def _claim_each_call(
        self, claims: Sequence[ClaimItem], sender: Sender, payee_key: LocalAccount | None
    ) -> Any:
        if not claims:
            raise VoucherError("nothing to claim: no vouchers given")
        items = [_settled(item) for item in claims]
        caller = sender_address(sender)
        if all(config.payee == caller for config, _, _ in items):
            return self._claim_call(items[0]) if len(items) == 1 else self._claim_many_call(items)
        payee_claims = [self._consent(item, caller, payee_key) for item in items]
        if len(items) == 1:
            return self._claim_for_call(items[0], payee_claims[0])
        return self._claim_many_for_call(items, payee_claims)

    def _consent(self, item: _Settled, caller: str, payee_key: LocalAccount | None) -> PayeeClaim:
        """The payee's signature over the total, for a claim ``caller`` relays."""
        config, _, total = item
        if payee_key is None or payee_key.address != config.payee:
            raise VoucherError(
                f"only the payee {config.payee} settles its claims: {caller} can relay one "
                "only with the payee's key to sign it (payee_key)"
            )
        return sign_payee_claim(self.domain, config.channel_id, total, payee_key)

    def _claim_call(self, claim: ClaimItem) -> Any:
        config, voucher, total = _settled(claim)
        return self.contract.functions.claim(
            config.as_tuple(), total, voucher.cumulative_amount, voucher.compact_signature
        )

    def _claim_for_call(self, claim: ClaimItem, payee_claim: PayeeClaim) -> Any:
        config, voucher, total = _settled(claim)
        _check_consent(config, total, payee_claim)
        return self.contract.functions.claimFor(
            config.as_tuple(),
            total,
            voucher.cumulative_amount,
            voucher.compact_signature,
            payee_claim.signature,
        )

    def _claim_many_call(self, claims: Sequence[ClaimItem]) -> Any:
        return self.contract.functions.claimMany([_claim_tuple(claim) for claim in claims])

    def _claim_many_for_call(
        self, claims: Sequence[ClaimItem], payee_claims: Sequence[PayeeClaim]
    ) -> Any:
        if len(claims) != len(payee_claims):
            raise VoucherError(f"{len(claims)} claims need as many payee claims")
        for claim, payee_claim in zip(claims, payee_claims, strict=True):
            config, _, total = _settled(claim)
            _check_consent(config, total, payee_claim)
        return self.contract.functions.claimManyFor(
            [_claim_tuple(claim) for claim in claims], [p.signature for p in payee_claims]
        )


ClaimItem: TypeAlias = tuple[ChannelConfig, Voucher] | tuple[ChannelConfig, Voucher, int]
"""A channel to settle: its configuration, its voucher (the ceiling) and, optionally, the total
to settle, at most the voucher's amount (default: the voucher's amount)."""

_Settled: TypeAlias = tuple[ChannelConfig, Voucher, int]


def _settled(claim: ClaimItem) -> _Settled:
    """The claim with its total filled in, checked to be for the configuration's channel."""
    if len(claim) == 2:
        config, voucher = claim
        total = voucher.cumulative_amount
    else:
        config, voucher, total = claim
    _check_matches(config, voucher)
    return config, voucher, _total(voucher, total)


def _total(voucher: Voucher, total: int | None) -> int:
    """The total a claim settles: ``total``, or the whole voucher."""
    if total is None:
        return voucher.cumulative_amount
    if type(total) is not int or total < 0:
        raise VoucherError(f"the total to settle must be a non-negative integer: {total!r}")
    return total


def _claim_tuple(claim: ClaimItem) -> tuple[Any, ...]:
    """A claim as the contract's ``Claim`` struct."""
    config, voucher, total = _settled(claim)
    return (config.as_tuple(), total, voucher.cumulative_amount, voucher.compact_signature)


def _check_consent(config: ChannelConfig, total: int, payee_claim: PayeeClaim) -> None:
    if payee_claim.channel_id != config.channel_id or payee_claim.total_claimed != total:
        raise VoucherError("the payee's claim is for another channel or total than this claim")


def _channel_id(config_or_id: ChannelConfig | bytes) -> bytes:
    return config_or_id.channel_id if isinstance(config_or_id, ChannelConfig) else config_or_id


def _check_matches(config: ChannelConfig, voucher: Voucher) -> None:
    if voucher.channel_id != config.channel_id:
        raise VoucherError("the voucher is for another channel than this configuration")
