"""The watchtower: keeps the payee's chain view current and claims before money is lost.

A payee that sleeps through a payer's withdraw delay loses every voucher it did not claim.
The watchtower runs beside the payee (a thread in its process, or its own process on the
same ledger) and, every ``poll_interval`` seconds:

1. follows the PaymentChannels events of the ledger's channels with
   :class:`~micropay.chain_follower.ChainFollower` (confirmation depth, reorgs, restarts);
2. asks the :class:`~micropay.settlement.SettlementPolicy` which channels are due: by
   default a withdraw request makes its channel due at once, so the claim goes out with the
   whole delay still ahead;
3. checks each due channel against the chain's *latest* state, which skips a claim that is
   already sent but not yet confirmed and re-claims one that a reorg removed, and settles
   them in one ``claimMany`` (one by one if the batch reverts, so a single bad channel
   cannot hold up the rest).

It also reports what it cannot fix: channels whose best voucher exceeds the deposit on chain
(a deposit the payee accepted vouchers against was reorged away, or the payee refunded more
than the best voucher left unspent; such a channel is claimed
with its best voucher covered by the confirmed deposit instead, so the reorg costs only the
vouchers beyond it) and channels that finished with vouchers unclaimed.

As a command::

    python -m micropay.watchtower --rpc http://127.0.0.1:8545 --contract 0x... \\
        --ledger sqlite:////var/lib/shop/ledger.db --key-env PAYEE_KEY

runs until SIGINT or SIGTERM, finishes the round in progress, closes the ledger and exits 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import HTTPProvider, Web3

from micropay._contracts import Sender
from micropay.chain_follower import ChainFollower, SyncReport
from micropay.channels import ChannelClient
from micropay.claims import Claim, ClaimOutcome, claim_from, final_outcomes, submit
from micropay.errors import (
    ForeignLedgerError,
    LedgerCorruptError,
    MicropayError,
    WatchtowerConfigError,
)
from micropay.ledger import Ledger, Position
from micropay.settlement import (
    POLICY_OPTIONS,
    Candidate,
    PlannedClaim,
    SettlementPolicy,
    policy_from_options,
)

log = logging.getLogger("micropay.watchtower")


@dataclass(frozen=True)
class RunReport:
    """What one round of the watchtower saw and did."""

    sync: SyncReport
    chain_time: int
    gas_price: int
    planned: tuple[PlannedClaim, ...] = ()
    outcomes: tuple[ClaimOutcome, ...] = ()
    """Each claim transaction of the round (a failed batch, then its claims one by one)."""
    skipped: tuple[bytes, ...] = ()
    """Due, but the latest state says there is nothing to claim (already claimed, perhaps
    by a transaction not yet confirmed, or finished, or short of deposit)."""
    underfunded: tuple[bytes, ...] = ()
    """Best voucher above the deposit, confirmed and latest alike (a deposit the payee
    accepted vouchers against was reorged away): a claim with it would revert, so the best
    covered voucher is claimed instead, if one is left (see ``claimed_covered``). A deposit
    that is merely not yet confirmed does not count."""
    claimed_covered: tuple[bytes, ...] = ()
    """Channels this round's claims settled with their best covered voucher, the best being
    above the deposit on chain."""
    lost: tuple[bytes, ...] = ()
    """Finished on chain with accepted vouchers never claimed."""
    damaged: tuple[str, ...] = ()
    """Ledger rows that failed their checks (each message names its channel)."""
    watched: int = 0
    """Channels of the ledger this round looked at."""

    finished_at: float = field(default_factory=time.monotonic)

    @property
    def claimed(self) -> set[bytes]:
        """Channels a successful claim transaction of this round settled."""
        return {c.channel_id for outcome in self.outcomes if outcome.ok for c in outcome.claims}

    @property
    def failed(self) -> tuple[bytes, ...]:
        """Channels whose last claim attempt this round failed: still to claim."""
        return tuple(c for c, o in final_outcomes(self.outcomes).items() if not o.ok)


class Watchtower:
    """Follows the chain for a ledger's channels and claims by a settlement policy."""

    def __init__(
        self,
        client: ChannelClient,
        ledger: Ledger,
        sender: Sender,
        policy: SettlementPolicy | None = None,
        *,
        confirmations: int = 2,
        poll_interval: float = 5.0,
        keep_blocks: int = 256,
        max_range: int = 2_000,
        on_report: Callable[[RunReport], None] | None = None,
        payee_key: LocalAccount | None = None,
    ) -> None:
        """``sender`` pays the gas of claims: the payee itself, or a relayer, whose claims
        then carry ``payee_key``'s signature of each total (settling is the payee's act; the
        money always goes to the payee). ``confirmations`` is how deep a block must be
        before the watchtower believes it; claims themselves are checked against the latest
        state."""
        if ledger.domain != client.domain:
            raise ForeignLedgerError(
                f"the ledger {ledger.location} is for chain {ledger.domain.chain_id}, contract "
                f"{ledger.domain.verifying_contract}, not this client's "
                f"{client.domain.chain_id}, {client.address}"
            )
        if not poll_interval > 0:
            raise WatchtowerConfigError(
                f"poll_interval must be positive seconds: {poll_interval!r}"
            )
        self.client = client
        self.ledger = ledger
        self.sender = sender
        self.payee_key = payee_key
        self.policy = policy if policy is not None else SettlementPolicy()
        self.poll_interval = poll_interval
        self.follower = ChainFollower(
            client,
            ledger,
            confirmations=confirmations,
            keep_blocks=keep_blocks,
            max_range=max_range,
        )
        self.on_report = on_report
        self.last_report: RunReport | None = None
        self.last_error: BaseException | None = None
        self.rounds = 0
        self._reported = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned_lost: set[bytes] = set()
        self._warned_underfunded: set[bytes] = set()

    # -- one round -------------------------------------------------------------------------

    def run_once(self) -> RunReport:
        """Sync, decide and claim once; return what happened."""
        sync = self.follower.sync()
        positions, damaged = self._positions()
        self._track_owed_since(positions)
        eth = self.client.w3.eth
        chain_time = int(eth.get_block("latest")["timestamp"])
        gas_price = int(eth.gas_price)
        underfunded = self._underfunded(positions)
        lost = tuple(
            p.channel_id
            for p in positions
            if p.chain is not None and p.chain.finished and p.unsettled > 0
        )
        candidates = [
            Candidate.from_position(p) for p in positions if p.chain is not None and p.claimable
        ]
        planned = self.policy.plan(
            candidates, chain_time=chain_time, wall_time=time.time(), gas_price=gas_price
        )
        outcomes: tuple[ClaimOutcome, ...] = ()
        skipped: tuple[bytes, ...] = ()
        covered: tuple[bytes, ...] = ()
        if planned:
            held = {p.channel_id: p for p in positions}
            outcomes, skipped, covered = self._settle(planned, held)
        report = RunReport(
            sync=sync,
            chain_time=chain_time,
            gas_price=gas_price,
            planned=planned,
            outcomes=outcomes,
            skipped=skipped,
            underfunded=underfunded,
            claimed_covered=covered,
            lost=lost,
            damaged=damaged,
            watched=len(positions),
        )
        self._log(report)
        with self._reported:
            self.last_report = report
            self.rounds += 1
            self._reported.notify_all()
        if self.on_report is not None:
            self.on_report(report)
        return report

    def _positions(self) -> tuple[list[Position], tuple[str, ...]]:
        """Every checked position; a damaged row is reported (and logged), and the others are
        still watched: one bad row must not leave every other channel unprotected."""
        try:
            return self.ledger.positions(), ()
        except (LedgerCorruptError, ForeignLedgerError):
            pass
        positions: list[Position] = []
        damaged: list[str] = []
        for channel_id in self.ledger.channel_ids():
            try:
                position = self.ledger.position(channel_id)
            except (LedgerCorruptError, ForeignLedgerError) as err:
                damaged.append(str(err))
                continue
            if position is not None:
                positions.append(position)
        return positions, tuple(damaged)

    def _underfunded(self, positions: Sequence[Position]) -> tuple[bytes, ...]:
        """Channels whose best voucher exceeds the deposit even at the latest block (one read
        each, only for those the confirmed view already shows short)."""
        short = [p for p in positions if p.underfunded and not (p.chain and p.chain.finished)]
        return tuple(
            p.channel_id
            for p in short
            if self.client.state(p.channel_id).deposited < p.voucher.cumulative_amount
        )

    def _track_owed_since(self, positions: Sequence[Position]) -> None:
        """Keep the policy's age clock: cleared when settled, restarted if a claim was undone."""
        now = time.time()
        changes: list[tuple[bytes, float | None]] = []
        for position in positions:
            if position.chain is None:
                continue
            if position.unsettled == 0 and position.owed_since is not None:
                changes.append((position.channel_id, None))
            elif position.unsettled > 0 and position.owed_since is None:
                changes.append((position.channel_id, now))
        self.ledger.set_owed_since(changes)

    def _settle(
        self, planned: Sequence[PlannedClaim], held: dict[bytes, Position]
    ) -> tuple[tuple[ClaimOutcome, ...], tuple[bytes, ...], tuple[bytes, ...]]:
        """Send the planned claims, each with the voucher the latest state pays (see
        :func:`micropay.claims.claim_from`). Returns the outcomes, the channels skipped, and
        those claimed with their covered voucher."""
        claims: list[Claim] = []
        skipped: list[bytes] = []
        for planned_claim in planned:
            position = held[planned_claim.channel_id]
            state = self.client.state(planned_claim.channel_id)  # latest: see the docstring
            claim = claim_from(
                position.config,
                position.voucher,
                position.covered,
                state,
                planned_claim.reason,
                charged=position.charged,
            )
            if claim is None:
                skipped.append(planned_claim.channel_id)
            else:
                claims.append(claim)
        if not claims:
            return (), tuple(skipped), ()
        # The plan fits in one batch.
        outcomes = submit(self.client, claims, self.sender, payee_key=self.payee_key)
        settled = {c.channel_id for o in outcomes if o.ok for c in o.claims}
        covered = tuple(c.channel_id for c in claims if c.covered and c.channel_id in settled)
        return outcomes, tuple(skipped), covered

    def _log(self, report: RunReport) -> None:
        sync = report.sync
        if sync.rolled_back is not None:
            log.warning("reorg: rolled the chain view back from block %d to %d", *sync.rolled_back)
        if sync.reset:
            log.warning("reorg deeper than the kept block hashes: chain view rebuilt")
        for outcome in report.outcomes:
            ids = ", ".join(f"0x{c.channel_id.hex()[:12]}({c.reason})" for c in outcome.claims)
            if outcome.ok:
                log.info(
                    "claimed %d in tx 0x%s (block %s, gas %d): %s",
                    sum(outcome.amounts),
                    (outcome.tx_hash or b"").hex(),
                    outcome.block_number,
                    outcome.gas_used,
                    ids,
                )
            else:
                log.error("claim failed for %s: %s", ids, outcome.error)
        for channel_id in set(report.underfunded) - self._warned_underfunded:
            log.warning(
                "channel 0x%s: best voucher exceeds its deposit on chain (a top-up reorged "
                "away, or a refund?); only the vouchers the confirmed deposit covered can be "
                "claimed",
                channel_id.hex(),
            )
        for channel_id in self._warned_underfunded - set(report.underfunded):
            log.info("channel 0x%s: deposit covers the best voucher again", channel_id.hex())
        self._warned_underfunded = set(report.underfunded)
        for channel_id in set(report.lost) - self._warned_lost:
            log.error("channel 0x%s finished with accepted vouchers unclaimed", channel_id.hex())
        self._warned_lost.update(report.lost)
        for problem in report.damaged:
            log.error("damaged ledger row: %s", problem)

    # -- running -----------------------------------------------------------------------------

    def run_forever(self, stop: threading.Event) -> None:
        """Run rounds until ``stop`` is set; errors are logged and retried with backoff (a
        node restart must not end the watch)."""
        failures = 0
        while not stop.is_set():
            try:
                self.run_once()
                failures = 0
                delay = self.poll_interval
            except Exception as err:  # the watch goes on whatever one round hit
                failures += 1
                self.last_error = err
                log.exception("watchtower round failed (%d in a row)", failures)
                delay = min(self.poll_interval * 2**failures, 60.0)
            stop.wait(delay)

    def start(self) -> None:
        """Run rounds in a background thread until :meth:`stop`."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self.run_forever, args=(self._stop,), name="micropay-watchtower", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Stop after the round in progress."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait_for(self, predicate: Callable[[RunReport], bool], timeout: float) -> RunReport | None:
        """Block until a round's report satisfies ``predicate``; None on timeout."""
        with self._reported:
            self._reported.wait_for(
                lambda: self.last_report is not None and predicate(self.last_report), timeout
            )
            report = self.last_report
        return report if report is not None and predicate(report) else None

    def __enter__(self) -> Watchtower:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- the command ---------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m micropay.watchtower",
        description="Follow a PaymentChannels contract for a payee's ledger and claim in time.",
    )
    parser.add_argument("--rpc", required=True, help="the node's HTTP JSON-RPC URL")
    parser.add_argument("--contract", required=True, help="the PaymentChannels address")
    parser.add_argument(
        "--ledger",
        required=True,
        help="sqlite:///relative.db, sqlite:////abs/path.db or postgresql://...",
    )
    parser.add_argument(
        "--key-env",
        required=True,
        metavar="VAR",
        help="environment variable holding the hex private key that pays for claims",
    )
    parser.add_argument(
        "--payee-key-env",
        metavar="VAR",
        default=None,
        help="if the claim key is a relayer: the variable holding the payee's key, which "
        "signs each claim's total",
    )
    parser.add_argument(
        "--confirmations", type=int, default=2, help="blocks on top before a block is believed"
    )
    parser.add_argument("--poll", type=float, default=5.0, help="seconds between rounds")
    for option in POLICY_OPTIONS:  # checked when the policy is built, as `micropay watch` does
        parser.add_argument(
            option.flag,
            dest=option.dest,
            metavar=option.metavar,
            help=option.help,
            action="append" if option.repeated else "store",
        )
    parser.add_argument("--once", action="store_true", help="run one round and exit")
    parser.add_argument(
        "--log-level", default="INFO", type=str.upper, choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The long-running command; returns the process exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    secret = os.environ.get(args.key_env)
    if not secret:
        log.error("the environment variable %s holding the claim key is not set", args.key_env)
        return 2
    try:
        sender = Account.from_key(secret.strip())
    except (ValueError, TypeError):
        log.error("%s does not hold a valid hex private key", args.key_env)
        return 2
    payee_key: LocalAccount | None = None
    if args.payee_key_env is not None:
        try:
            payee_key = Account.from_key(os.environ.get(args.payee_key_env, "").strip())
        except (ValueError, TypeError):
            log.error("%s does not hold the payee's hex private key", args.payee_key_env)
            return 2
    try:
        policy = policy_from_options(vars(args))
        w3 = Web3(HTTPProvider(args.rpc, request_kwargs={"timeout": 30}))
        client = ChannelClient.attach(w3, args.contract)
        ledger = Ledger.open(args.ledger, client.domain)
    except MicropayError as err:
        log.error("%s", err)
        return 2
    except Exception as err:  # the node is unreachable or answers nonsense
        log.error("cannot start: %s", err)
        return 2
    try:
        try:
            tower = Watchtower(
                client,
                ledger,
                sender,
                policy,
                confirmations=args.confirmations,
                poll_interval=args.poll,
                payee_key=payee_key,
            )
        except MicropayError as err:  # a setting out of range (--poll 0, --confirmations -1)
            log.error("%s", err)
            return 2
        log.info(
            "watching %s on chain %d for %s (claims paid by %s)",
            client.address,
            client.domain.chain_id,
            ledger.location,
            sender.address,
        )
        if args.once:
            failed = tower.run_once().failed
            if failed:  # one round was asked for, and it did not do its job: say so
                log.error("%d claim(s) failed; the channels are still to claim", len(failed))
                return 1
        else:
            run_until_signalled(tower)
    finally:
        ledger.close()
    log.info("watchtower stopped")
    return 0


def run_until_signalled(tower: Watchtower) -> None:
    """Run rounds until SIGINT or SIGTERM, then finish the round in progress and return."""
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        log.info("received %s: stopping after this round", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        tower.run_forever(stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
