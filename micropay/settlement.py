"""When to settle: the payee's settlement policy, as pure decisions over what it is owed.

Claiming costs gas, so claiming after every voucher throws the point of channels away; never
claiming loses everything once a payer withdraws. A :class:`SettlementPolicy` decides, for a
set of claimable channels at one moment, which to claim now. A channel is *due* when any
rule says so:

- **withdraw**: its payer asked to withdraw. By default it is claimed as soon as the request
  is seen (the payee has the whole delay to get the claim mined, so it should not wait);
  ``withdraw_lead`` postpones that to ``closes_at - withdraw_lead``;
- **age**: it has owed something for ``max_unsettled_age`` seconds;
- **threshold**: its unsettled amount reached ``thresholds[token]`` (base units);
- **gas**: its unsettled amount is worth at least ``gas_multiple`` times the gas of claiming it
  alone at the current gas price (ETH channels, or tokens given a price in wei per unit).

When anything is due, other channels ride along in the same ``claimMany`` if they pay for
their marginal gas (``batch_claim_gas``): one transaction settles many channels. Decisions
are pure functions of their inputs, so they are tested without a chain.

A channel whose best voucher exceeds its deposit (a top-up it was accepted against was
reorged away) is weighed, and claimed, by its best covered voucher: the rules see what a
claim would really add, not the promise that can no longer be paid.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from fractions import Fraction
from types import MappingProxyType
from typing import TypeVar

from eth_utils.address import is_address, to_checksum_address

from micropay.errors import SettlementPolicyError
from micropay.ledger import Position
from micropay.vouchers import ZERO_ADDRESS

_N = TypeVar("_N")


class Reason(StrEnum):
    """Why a channel is in a settlement batch."""

    WITHDRAW = "withdraw"
    AGE = "age"
    THRESHOLD = "threshold"
    GAS = "gas"
    BATCH = "batch"
    """Not due by itself; it rides along because it pays for its marginal gas."""
    REQUESTED = "requested"
    """Not due by the policy; claimed because the operator asked (``micropay settle``)."""


def _token(value: object) -> str:
    if not isinstance(value, str) or not is_address(value):
        raise SettlementPolicyError(f"not a token address: {value!r}")
    return to_checksum_address(value)


@dataclass(frozen=True)
class Candidate:
    """What the policy needs to know about one claimable channel."""

    channel_id: bytes
    token: str
    unsettled: int
    """What claiming it now would add."""
    closes_at: int = 0
    """When the payer's withdraw completes; 0 if it has not asked."""
    owed_since: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "token", _token(self.token))

    @classmethod
    def from_position(cls, position: Position) -> Candidate:
        """The channel as a claim would settle it: with its best voucher, or with its best
        covered one when a reorg left the deposit short of the best (what is worth claiming
        then is what the covered voucher adds)."""
        return cls(
            channel_id=position.channel_id,
            token=position.config.token,
            unsettled=position.claimable_amount,
            closes_at=position.chain.closes_at if position.chain is not None else 0,
            owed_since=position.owed_since,
        )


@dataclass(frozen=True)
class PlannedClaim:
    channel_id: bytes
    reason: Reason


@dataclass(frozen=True)
class SettlementPolicy:
    """The rules above; every field is optional, and the defaults only act on withdrawals."""

    thresholds: Mapping[str, int] = field(default_factory=dict)
    """Claim a channel once it owes this many base units of its token."""
    gas_multiple: float | None = None
    """Claim once the unsettled value is this many times the gas a lone claim costs."""
    wei_per_unit: Mapping[str, Fraction | int | float] = field(default_factory=dict)
    """Prices for the gas rule: wei per base unit of each token (ETH is always 1)."""
    max_unsettled_age: float | None = None
    """Claim a channel that has owed something for this many seconds (wall clock)."""
    withdraw_lead: int | None = None
    """Claim a withdrawing channel this many seconds before its withdraw completes;
    None (the default) claims as soon as the request is seen."""
    max_batch: int = 50
    """Most claims in one transaction (the rest wait for the next round, most urgent first)."""
    claim_gas: int = 60_000
    """Gas of a transaction claiming one channel, for the gas rule."""
    batch_claim_gas: int = 20_000
    """Gas each further channel adds to a ``claimMany``, for riding along."""
    piggyback: bool = True
    """Let channels that are not due ride along in a batch that goes anyway."""

    def __post_init__(self) -> None:
        thresholds: dict[str, int] = {}
        for token, amount in dict(self.thresholds).items():
            if type(amount) is not int or amount <= 0:
                raise SettlementPolicyError(f"threshold for {token} must be a positive integer")
            thresholds[_token(token)] = amount
        prices: dict[str, Fraction] = {}
        for token, price in dict(self.wei_per_unit).items():
            try:
                value = Fraction(price)
            except (TypeError, ValueError):
                raise SettlementPolicyError(
                    f"price of {token} is not a number: {price!r}"
                ) from None
            if value < 0:
                raise SettlementPolicyError(f"price of {token} is negative")
            prices[_token(token)] = value
        prices.setdefault(ZERO_ADDRESS, Fraction(1))
        object.__setattr__(self, "thresholds", MappingProxyType(thresholds))
        object.__setattr__(self, "wei_per_unit", MappingProxyType(prices))
        checks = [
            (self.gas_multiple is None or self.gas_multiple > 0, "gas_multiple must be positive"),
            (
                self.max_unsettled_age is None or self.max_unsettled_age > 0,
                "max_unsettled_age must be positive seconds",
            ),
            (
                self.withdraw_lead is None
                or (type(self.withdraw_lead) is int and self.withdraw_lead >= 0),
                "withdraw_lead must be whole seconds, not negative",
            ),
            (type(self.max_batch) is int and self.max_batch >= 1, "max_batch must be at least 1"),
            (type(self.claim_gas) is int and self.claim_gas > 0, "claim_gas must be positive"),
            (
                type(self.batch_claim_gas) is int and self.batch_claim_gas > 0,
                "batch_claim_gas must be positive",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise SettlementPolicyError(message)

    def value_in_wei(self, token: str, amount: int) -> Fraction | None:
        """What ``amount`` base units of ``token`` are worth in wei, if the policy knows."""
        price = self.wei_per_unit.get(token)
        return None if price is None else Fraction(price) * amount

    def reason(
        self, candidate: Candidate, *, chain_time: int, wall_time: float, gas_price: int
    ) -> Reason | None:
        """Why ``candidate`` is due now, or None. ``chain_time`` (the latest block's timestamp)
        times withdrawals, which the contract measures; ``wall_time`` times ages."""
        if candidate.unsettled <= 0:
            return None
        if candidate.closes_at and (
            self.withdraw_lead is None or chain_time >= candidate.closes_at - self.withdraw_lead
        ):
            return Reason.WITHDRAW
        if (
            self.max_unsettled_age is not None
            and candidate.owed_since is not None
            and wall_time - candidate.owed_since >= self.max_unsettled_age
        ):
            return Reason.AGE
        threshold = self.thresholds.get(candidate.token)
        if threshold is not None and candidate.unsettled >= threshold:
            return Reason.THRESHOLD
        if self.gas_multiple is not None:
            value = self.value_in_wei(candidate.token, candidate.unsettled)
            cost = Fraction(self.gas_multiple) * self.claim_gas * gas_price
            if value is not None and value >= cost:
                return Reason.GAS
        return None

    def rides_along(self, candidate: Candidate, gas_price: int) -> bool:
        """Whether a channel that is not due is worth adding to a batch that goes anyway."""
        if not self.piggyback or candidate.unsettled <= 0:
            return False
        value = self.value_in_wei(candidate.token, candidate.unsettled)
        if value is not None:
            return value >= max(Fraction(self.gas_multiple or 1), Fraction(1)) * (
                self.batch_claim_gas * gas_price
            )
        threshold = self.thresholds.get(candidate.token)
        # Without a price, half the threshold stands in for "worth it"; with neither, the
        # marginal gas of a claim in a batch is the payee's cheapest chance to settle it.
        return threshold is None or 2 * candidate.unsettled >= threshold

    def plan(
        self,
        candidates: Sequence[Candidate],
        *,
        chain_time: int,
        wall_time: float,
        gas_price: int,
    ) -> tuple[PlannedClaim, ...]:
        """The claims to send now, most urgent first, at most ``max_batch``; () if none is due
        (the order is :meth:`rank`'s; the rest wait for the next round)."""
        ranked = self.rank(
            candidates, chain_time=chain_time, wall_time=wall_time, gas_price=gas_price
        )
        return ranked[: self.max_batch]

    def rank(
        self,
        candidates: Sequence[Candidate],
        *,
        chain_time: int,
        wall_time: float,
        gas_price: int,
    ) -> tuple[PlannedClaim, ...]:
        """Every claim the policy wants now, most urgent first, uncapped; () if none is due.

        Withdrawing channels come first, earliest deadline first; then the other due ones
        and the riders, largest unsettled amount first.
        """
        due: list[tuple[Candidate, Reason]] = []
        others: list[Candidate] = []
        for candidate in candidates:
            reason = self.reason(
                candidate, chain_time=chain_time, wall_time=wall_time, gas_price=gas_price
            )
            if reason is not None:
                due.append((candidate, reason))
            else:
                others.append(candidate)
        if not due:
            return ()
        due.sort(
            key=lambda item: (
                item[1] is not Reason.WITHDRAW,
                item[0].closes_at if item[1] is Reason.WITHDRAW else 0,
                -item[0].unsettled,
            )
        )
        riders = sorted(
            (c for c in others if self.rides_along(c, gas_price)), key=lambda c: -c.unsettled
        )
        planned = [PlannedClaim(c.channel_id, reason) for c, reason in due]
        planned += [PlannedClaim(c.channel_id, Reason.BATCH) for c in riders]
        return tuple(planned)


# -- the policy as command-line options ------------------------------------------------------
#
# ``python -m micropay.watchtower``, ``micropay watch`` and ``micropay settle`` take the same
# options; they are declared once here, as plain text in and a policy out, so each command
# line library only adds them (argparse in the watchtower, click in the CLI) and every
# command refuses a bad value with the same message.


@dataclass(frozen=True)
class PolicyOption:
    """One settlement-policy option: its flag, its help and how its text becomes a value."""

    flag: str
    metavar: str
    help: str
    repeated: bool = False
    """May be given several times (one ``TOKEN=VALUE`` each)."""

    @property
    def dest(self) -> str:
        """The option's name as a keyword: ``--gas-multiple`` is ``gas_multiple``."""
        return self.flag.removeprefix("--").replace("-", "_")


POLICY_OPTIONS: tuple[PolicyOption, ...] = (
    PolicyOption(
        "--threshold",
        "TOKEN=AMOUNT",
        "claim once a channel owes AMOUNT base units of TOKEN (TOKEN may be 'eth'); repeatable",
        repeated=True,
    ),
    PolicyOption(
        "--price",
        "TOKEN=WEI",
        "wei per base unit of TOKEN, for --gas-multiple (a fraction like 1/3 is fine); repeatable",
        repeated=True,
    ),
    PolicyOption("--gas-multiple", "N", "claim a channel once it is worth N times its gas"),
    PolicyOption("--max-age", "SECONDS", "claim what has been owed this long"),
    PolicyOption(
        "--withdraw-lead",
        "SECONDS",
        "claim a withdrawing channel this long before it closes (default: as soon as the "
        "request is seen)",
    ),
    PolicyOption("--max-batch", "N", "most claims in one transaction (default 50)"),
)


def _pairs(flag: str, texts: Sequence[str]) -> list[tuple[str, str]]:
    pairs = []
    for text in texts:
        token, sep, value = text.partition("=")
        if not sep or not token or not value:
            raise SettlementPolicyError(f"malformed {flag} {text!r}: write TOKEN=VALUE")
        pairs.append((ZERO_ADDRESS if token.lower() in ("eth", "native") else token, value))
    return pairs


def _parsed(flag: str, text: str | None, kind: Callable[[str], _N], what: str) -> _N | None:
    if text is None:
        return None
    try:
        return kind(text)
    except (ValueError, ZeroDivisionError):
        raise SettlementPolicyError(f"malformed {flag} {text!r}: expected {what}") from None


def policy_from_options(values: Mapping[str, object]) -> SettlementPolicy:
    """The policy that :data:`POLICY_OPTIONS` describe, from their values as given (text, or a
    sequence of texts for repeated ones; None or absent: not given), keyed by ``dest``.
    Raises :class:`SettlementPolicyError` naming the option that makes no sense."""

    def texts(name: str) -> list[str]:
        given = values.get(name)
        if given is None:
            return []
        if isinstance(given, str) or not isinstance(given, Iterable):
            return [str(given)]
        return [str(item) for item in given]

    def text(name: str) -> str | None:
        given = values.get(name)
        return None if given is None else str(given)

    whole, number = "a whole number", "a number"
    thresholds: dict[str, int] = {}
    for token, value in _pairs("--threshold", texts("threshold")):
        thresholds[token] = _parsed("--threshold", value, int, f"AMOUNT as {whole}") or 0
    prices = {
        token: _parsed("--price", value, Fraction, "a number or a fraction like 1/3") or Fraction(0)
        for token, value in _pairs("--price", texts("price"))
    }
    batch = _parsed("--max-batch", text("max_batch"), int, whole)
    try:
        return SettlementPolicy(
            thresholds=thresholds,
            wei_per_unit=prices,
            gas_multiple=_parsed("--gas-multiple", text("gas_multiple"), float, number),
            max_unsettled_age=_parsed("--max-age", text("max_age"), float, number),
            withdraw_lead=_parsed("--withdraw-lead", text("withdraw_lead"), int, whole),
            max_batch=50 if batch is None else batch,
        )
    except SettlementPolicyError as err:
        raise SettlementPolicyError(f"bad settlement policy: {err}") from None
