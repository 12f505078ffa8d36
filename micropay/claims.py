"""Claiming what a payee holds: the one path from accepted vouchers to claim transactions.

Three callers settle a payee's channels, and all of them go through here:
:meth:`Payee.claim_all <micropay.payee.Payee.claim_all>` (a script settling its book), the
:class:`~micropay.watchtower.Watchtower` (by policy, every round) and ``micropay settle`` (an
operator's cash-out, :func:`settle`). The steps are the same for each:

1. :func:`claim_from` picks, against the channel's *latest* on-chain state, the voucher a
   claim should carry: the best one, or the best one the confirmed deposit covered when a
   reorg left the deposit short of the best (:func:`~micropay.channels.voucher_to_claim`);
   nothing if neither would add anything, so one such channel cannot revert a whole batch;
2. :func:`batches` splits the claims into transactions of at most ``max_batch``, each
   ordered by token (consecutive claims of one token pay out in one transfer);
3. :func:`submit` sends each batch (``claim`` for one channel, ``claimMany`` for several)
   and, if a batch reverts, claims its channels one by one, so one bad channel cannot hold up
   the rest; :func:`estimate` asks the node for the gas of the same calls and sends nothing.

Settling is the payee's act: a sender that is not the payee relays, and then needs the
payee's key (``payee_key``) to sign each claim's total (``claimFor``, ``claimManyFor``).
Each claim settles the channel's *charged* total (what the site charged, which refunds and
metered charges leave below the ceiling), with the best voucher as the ceiling.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from eth_account.signers.local import LocalAccount
from web3.types import TxReceipt

from micropay._contracts import Sender
from micropay.channels import ChannelClient, ChannelState, voucher_to_claim
from micropay.errors import ContractRevertError, TransactionFailedError, VoucherError
from micropay.ledger import Ledger
from micropay.settlement import Candidate, Reason, SettlementPolicy
from micropay.vouchers import ChannelConfig, Voucher

log = logging.getLogger("micropay.claims")


@dataclass(frozen=True)
class Claim:
    """One channel's claim, ready to send: the voucher it carries (the ceiling), the total it
    settles and what it adds."""

    config: ChannelConfig
    voucher: Voucher
    amount: int
    """What the claim adds to the channel's claimed total (the payee's gain)."""
    reason: Reason
    best_amount: int
    """The best voucher's total: above ``voucher``'s when the covered one is claimed."""
    total: int
    """The channel's claimed total once it is settled: the charged total, capped by the
    voucher's ceiling and the deposit."""

    @property
    def channel_id(self) -> bytes:
        return self.config.channel_id

    @property
    def covered(self) -> bool:
        """Claimed with the best covered voucher, the best being above the deposit."""
        return self.voucher.cumulative_amount != self.best_amount


def claim_from(
    config: ChannelConfig,
    best: Voucher,
    covered: Voucher | None,
    state: ChannelState,
    reason: Reason = Reason.REQUESTED,
    *,
    charged: int | None = None,
) -> Claim | None:
    """The claim a channel holding ``state`` pays now, or None if nothing would be paid (it
    is finished, or neither voucher adds to what is claimed within the deposit). It settles
    ``charged`` (the book's charged total; None: the whole best voucher) under the best
    voucher, or under the covered one, capped by its ceiling, when the deposit fell short of
    the best. A fallback on the covered voucher is logged: it means vouchers beyond the
    confirmed deposit are lost. A best voucher above a deposit that an on-chain refund
    lowered (no covered voucher left to fall back on) still settles the charged total, up to
    the deposit: the contract takes a ceiling above the deposit."""
    if state.finished:
        return None
    charged = best.cumulative_amount if charged is None else charged
    voucher = voucher_to_claim(best, covered, deposited=state.deposited, claimed=state.claimed)
    # A covered voucher above the deposit is no fallback either (with ``confirmations`` 0, or
    # once the refund came after its deposit was confirmed, the best voucher is the covered one).
    fallback = covered is not None and covered.cumulative_amount <= state.deposited
    if voucher is None and best.cumulative_amount > state.deposited and not fallback:
        voucher = best
    if voucher is None:
        return None
    total = min(charged, voucher.cumulative_amount, state.deposited)
    if total <= state.claimed:
        return None
    if voucher is not best:
        log.warning(
            "channel 0x%s: the best voucher for %d exceeds the deposit of %d on chain (a "
            "top-up was reorged away, or the payee refunded on chain?); claiming the covered "
            "voucher for %d instead",
            config.channel_id.hex(),
            best.cumulative_amount,
            state.deposited,
            voucher.cumulative_amount,
        )
    return Claim(
        config, voucher, total - state.claimed, reason, best.cumulative_amount, total=total
    )


@dataclass(frozen=True)
class ClaimOutcome:
    """One claim transaction (or one failed attempt, or one estimate) and what it was for."""

    claims: tuple[Claim, ...]
    tx_hash: bytes | None = None
    block_number: int | None = None
    gas_used: int = 0
    """Gas the transaction used; for an estimate (``dry_run``), the node's estimate."""
    error: str | None = None
    dry_run: bool = False
    """Nothing was sent: ``gas_used`` is ``eth_estimateGas`` of the call."""

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def amounts(self) -> tuple[int, ...]:
        """What each claim adds to its channel's claimed total."""
        return tuple(claim.amount for claim in self.claims)


def final_outcomes(outcomes: Sequence[ClaimOutcome]) -> dict[bytes, ClaimOutcome]:
    """Per channel, the attempt that settled it, or its last failed one (a batch that
    reverted is followed by its claims one by one: the last word is theirs)."""
    final: dict[bytes, ClaimOutcome] = {}
    for outcome in outcomes:
        for claim in outcome.claims:
            held = final.get(claim.channel_id)
            if held is None or not held.ok:
                final[claim.channel_id] = outcome
    return final


def batches(claims: Sequence[Claim], max_batch: int | None = None) -> list[tuple[Claim, ...]]:
    """The claims in transactions of at most ``max_batch`` (None: one), in the order given
    (most urgent first), each ordered by token so consecutive same-token claims pay out once."""
    size = max(len(claims), 1) if max_batch is None else max_batch
    return [
        tuple(sorted(claims[start : start + size], key=lambda claim: claim.config.token))
        for start in range(0, len(claims), size)
    ]


def send(
    client: ChannelClient,
    batch: Sequence[Claim],
    sender: Sender,
    payee_key: LocalAccount | None = None,
) -> TxReceipt:
    """Send one batch as one transaction; raise what the contract or the node says if it fails.
    A ``sender`` that is not the payee relays with ``payee_key``'s signatures."""
    return client.claim_each(
        [(claim.config, claim.voucher, claim.total) for claim in batch], sender, payee_key=payee_key
    )


def _attempt(
    client: ChannelClient,
    batch: tuple[Claim, ...],
    sender: Sender,
    payee_key: LocalAccount | None,
) -> ClaimOutcome:
    try:
        receipt = send(client, batch, sender, payee_key)
    except (ContractRevertError, TransactionFailedError, VoucherError) as err:
        return ClaimOutcome(batch, error=str(err))
    return ClaimOutcome(
        batch,
        tx_hash=bytes(receipt["transactionHash"]),
        block_number=int(receipt["blockNumber"]),
        gas_used=int(receipt["gasUsed"]),
    )


def submit(
    client: ChannelClient,
    claims: Sequence[Claim],
    sender: Sender,
    max_batch: int | None = None,
    payee_key: LocalAccount | None = None,
) -> tuple[ClaimOutcome, ...]:
    """Send every claim, in :func:`batches`; a batch that fails is retried one claim at a
    time. Returns every attempt, failed ones included (``error`` says why)."""
    outcomes: list[ClaimOutcome] = []
    for batch in batches(claims, max_batch):
        outcome = _attempt(client, batch, sender, payee_key)
        outcomes.append(outcome)
        if not outcome.ok and len(batch) > 1:
            log.warning("batch claim failed (%s); claiming one by one", outcome.error)
            outcomes.extend(_attempt(client, (claim,), sender, payee_key) for claim in batch)
    return tuple(outcomes)


def estimate(
    client: ChannelClient,
    claims: Sequence[Claim],
    sender: Sender,
    max_batch: int | None = None,
    payee_key: LocalAccount | None = None,
) -> tuple[ClaimOutcome, ...]:
    """What :func:`submit` would send, batch by batch, with the node's gas estimate of each
    transaction (``eth_estimateGas``); nothing is sent (a relayed batch's payee signatures
    are made, but never leave this process)."""
    outcomes = []
    for batch in batches(claims, max_batch):
        try:
            gas = client.estimate_claim_each(
                [(claim.config, claim.voucher, claim.total) for claim in batch],
                sender,
                payee_key=payee_key,
            )
        except (ContractRevertError, TransactionFailedError, VoucherError) as err:
            outcomes.append(ClaimOutcome(batch, error=str(err), dry_run=True))
            continue
        outcomes.append(ClaimOutcome(batch, gas_used=gas, dry_run=True))
    return tuple(outcomes)


# -- cash-out ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settlement:
    """What :func:`settle` planned and what became of it."""

    claims: tuple[Claim, ...]
    """Every claim planned, most urgent first."""
    outcomes: tuple[ClaimOutcome, ...]
    """Each batch (estimated for a dry run, or sent), then any one-by-one retries."""
    dry_run: bool
    chain_time: int
    gas_price: int

    @property
    def claimed(self) -> tuple[Claim, ...]:
        """The claims a successful transaction settled (none for a dry run)."""
        if self.dry_run:
            return ()
        return tuple(claim for outcome in self.outcomes if outcome.ok for claim in outcome.claims)


def settle(
    client: ChannelClient,
    ledger: Ledger,
    sender: Sender,
    policy: SettlementPolicy | None = None,
    *,
    due_only: bool = False,
    dry_run: bool = False,
    payee_key: LocalAccount | None = None,
) -> Settlement:
    """Claim every channel of ``ledger`` with something claimable now, by its latest on-chain
    state, in transactions of at most ``policy.max_batch``; or, with ``due_only``, only the
    channels the policy finds due (and those riding along). Each claim carries the reason
    the policy gives it (``requested`` where the policy would have waited). With ``dry_run``
    nothing is sent: each batch gets the node's gas estimate instead. A ``sender`` that is
    not the payee relays, with ``payee_key`` signing each claim's total.

    The ledger's age clock is cleared for each channel a claim settled in full."""
    policy = policy if policy is not None else SettlementPolicy()
    eth = client.w3.eth
    chain_time = int(eth.get_block("latest")["timestamp"])
    gas_price = int(eth.gas_price)
    found: dict[bytes, Claim] = {}
    candidates = []
    for position in ledger.positions():
        state = client.state(position.channel_id)
        claim = claim_from(
            position.config, position.voucher, position.covered, state, charged=position.charged
        )
        if claim is None:
            continue
        found[claim.channel_id] = claim
        candidates.append(
            Candidate(
                claim.channel_id,
                claim.config.token,
                claim.amount,
                closes_at=state.closes_at,
                owed_since=position.owed_since,
            )
        )
    ranked = policy.rank(
        candidates, chain_time=chain_time, wall_time=time.time(), gas_price=gas_price
    )
    planned = [replace(found.pop(p.channel_id), reason=p.reason) for p in ranked]
    if not due_only:  # the rest, largest first, as the operator asked
        planned += sorted(found.values(), key=lambda claim: -claim.amount)
    if dry_run:
        outcomes = estimate(client, planned, sender, policy.max_batch, payee_key)
    else:
        outcomes = submit(client, planned, sender, policy.max_batch, payee_key)
    result = Settlement(tuple(planned), outcomes, dry_run, chain_time, gas_price)
    ledger.set_owed_since((c.channel_id, None) for c in result.claimed if not c.covered)
    return result
