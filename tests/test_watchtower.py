"""The watchtower on a real anvil: in time on every withdrawal, through reorgs and restarts.

The module starts its own anvil (``standalone``): it reorganises the chain (``anvil_reorg``)
and moves its clock by up to 90 days. Payees accept vouchers through
:class:`~micropay.payee.Payee` into a ledger, exactly as a site would; tests taking
``ledger_url`` run once on SQLite and once on the session's PostgreSQL.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest
from watchtower_helpers import ETH, Chain, start_chain

from micropay.channels import ChannelFinishedError
from micropay.devnode import anvil
from micropay.errors import ForeignLedgerError, WatchtowerConfigError
from micropay.ledger import EventKind, Ledger
from micropay.settlement import Reason, SettlementPolicy
from micropay.vouchers import ZERO_ADDRESS, VoucherDomain
from micropay.watchtower import Watchtower

pytestmark = pytest.mark.standalone
pytest_plugins = ["ledger_fixtures"]  # ledger_url: each test on SQLite and on PostgreSQL

DAY = 86_400


@pytest.fixture(scope="module")
def chain():
    with anvil() as w3:
        yield start_chain(w3)


@pytest.fixture
def ledger(chain, ledger_url):
    with Ledger.open(ledger_url, chain.client.domain) as opened:
        yield opened


def accept(chain: Chain, ledger: Ledger, payer, amounts):
    """The payee accepts one voucher per amount; returns the last (best) one."""
    payee = chain.payee_with(ledger)
    for amount in amounts:
        voucher = payer.pay(amount)
        payee.accept(payer.config, voucher)
    return voucher


def tower(chain: Chain, ledger: Ledger, **options) -> Watchtower:
    options.setdefault("poll_interval", 0.01)
    options.setdefault("payee_key", chain.payee)  # the tower relays: the payee signs totals
    return Watchtower(chain.client, ledger, chain.tower, **options)


def finish_withdraw_at(chain: Chain, payer, closes_at: int):
    """The payer finishes as soon as the contract allows (a block at ``closes_at`` first, so
    the gas estimate already sees the delay over)."""
    if chain.now < closes_at:
        chain.mine_at(closes_at)
    return payer.finish_withdraw()


# -- in time, every time ---------------------------------------------------------------------

TRIAL_DELAYS = [
    600,
    601,
    900,
    1_800,
    3_600,
    7_200,
    6 * 3_600,
    DAY,
    3 * DAY,
    7 * DAY,
    30 * DAY,
    90 * DAY,
]


def run_trial(chain: Chain, url: str, delay: int, confirmations: int, rng: random.Random) -> dict:
    """One payer leaves with vouchers unclaimed while a watchtower polls once per block, and
    the chain's clock jumps ahead by up to a third of the delay per block."""
    with Ledger.open(url, chain.client.domain) as ledger:
        payer = chain.open_channel(ETH, delay)
        amounts = [rng.randint(1, 10**16) for _ in range(rng.randint(2, 8))]
        best = accept(chain, ledger, payer, amounts)
        chain.mine(rng.randint(0, 3), seconds=rng.randint(0, delay // 4))  # life goes on
        outcomes = []
        watch = tower(
            chain,
            ledger,
            confirmations=confirmations,
            on_report=lambda report: outcomes.extend(o for o in report.outcomes if o.ok),
        )
        watch.start()
        try:
            receipt = payer.request_withdraw()
            requested_at = int(chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"])
            closes_at = payer.state().closes_at
            blocks = 0
            while payer.state().claimed < best.cumulative_amount:
                head = chain.head
                assert watch.wait_for(lambda r, head=head: r.sync.head >= head, timeout=30), (
                    f"no watchtower round saw block {head}: {watch.last_error!r}"
                )
                if payer.state().claimed == best.cumulative_amount:
                    break
                assert chain.now < closes_at, "the withdraw delay ran out before any claim"
                chain.mine(1, seconds=rng.randint(delay // 12, delay // (confirmations + 3)))
                blocks += 1
        finally:
            watch.stop()
        [outcome] = outcomes
        claimed_at = int(chain.w3.eth.get_block(outcome.block_number)["timestamp"])
        payee_before = chain.w3.eth.get_balance(chain.payee.address)
        finish_withdraw_at(chain, payer, closes_at)
        state = payer.state()
        assert state.finished and state.claimed == best.cumulative_amount
        # The payee's balance did not move at the finish: it was paid by the claim, in time.
        assert chain.w3.eth.get_balance(chain.payee.address) == payee_before
        assert claimed_at < closes_at
        return {
            "delay": delay,
            "confirmations": confirmations,
            "vouchers": len(amounts),
            "blocks": blocks,
            "after": claimed_at - requested_at,
            "left": closes_at - claimed_at,
            "amount": best.cumulative_amount,
        }


def test_watchtower_claims_before_every_withdraw_completes(chain, tmp_path):
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    rows = []
    for trial in range(24):
        delay = TRIAL_DELAYS[trial % len(TRIAL_DELAYS)]
        url = f"sqlite:///{tmp_path / f'trial{trial}.db'}"
        rows.append(run_trial(chain, url, delay, confirmations=trial % 4, rng=rng))
    lines = [
        f"\nwatchtower trials (seed {seed}): {len(rows)} withdrawals, all claimed in time",
        f"{'delay s':>9} {'conf':>4} {'vouchers':>8} {'blocks':>6} {'claimed after s':>15} "
        f"{'time left s':>12} {'left %':>6}",
    ]
    for row in rows:
        lines.append(
            f"{row['delay']:>9} {row['confirmations']:>4} {row['vouchers']:>8} {row['blocks']:>6} "
            f"{row['after']:>15} {row['left']:>12} {100 * row['left'] / row['delay']:>6.1f}"
        )
    print("\n".join(lines))
    assert len(rows) >= 20
    assert all(row["left"] > row["delay"] // 2 for row in rows)


def test_with_the_watchtower_stopped_the_payer_takes_back_what_the_payee_was_owed(chain, ledger):
    payer = chain.open_channel(ETH, 600)
    best = accept(chain, ledger, payer, [10**17, 2 * 10**17, 3 * 10**17])
    watch = tower(chain, ledger, confirmations=0)
    with watch:  # it was watching this channel, then it stops (a crash, a deploy, a holiday)
        assert watch.wait_for(lambda report: report.sync.seeded == 1, timeout=30)
    payer_before = chain.w3.eth.get_balance(chain.payer.address)
    payer_gas = 0
    receipt = payer.request_withdraw()
    payer_gas += receipt["gasUsed"] * receipt["effectiveGasPrice"]
    closes_at = payer.state().closes_at
    for _ in range(4):  # the same clock as the trials, with nobody watching
        chain.mine(1, seconds=150)
    receipt = finish_withdraw_at(chain, payer, closes_at)
    payer_gas += receipt["gasUsed"] * receipt["effectiveGasPrice"]
    refunded = chain.w3.eth.get_balance(chain.payer.address) - payer_before + payer_gas
    assert refunded == ETH  # the whole deposit, vouchers included
    with pytest.raises(ChannelFinishedError):
        chain.client.claim(payer.config, best, chain.payee)
    # Started again now, it can only report the loss.
    report = watch.run_once()
    assert report.lost == (payer.config.channel_id,) and not report.outcomes
    print(
        f"\nwatchtower stopped: the payee lost {best.cumulative_amount / ETH:.2f} ETH of accepted "
        "vouchers; the payer got its whole deposit back"
    )


# -- reorgs ------------------------------------------------------------------------------------


def test_claim_removed_by_a_reorg_is_rolled_back_and_claimed_again(chain, ledger):
    payer = chain.open_channel(ETH, 3_600)
    best = accept(chain, ledger, payer, [10**17, 4 * 10**17])
    payer.request_withdraw()
    chain.mine(2)
    watch = tower(chain, ledger, confirmations=1)
    first = watch.run_once()
    assert first.claimed == {payer.config.channel_id}
    claim_block = first.outcomes[0].block_number
    chain.mine(2)
    watch.run_once()
    assert ledger.position(payer.config.channel_id).chain.claimed == best.cumulative_amount

    chain.reorg(chain.head - claim_block + 1)  # deeper than the confirmation depth
    assert payer.state().claimed == 0  # the claim is gone from the chain

    again = watch.run_once()
    assert again.sync.rolled_back is not None and again.sync.rolled_back[1] < claim_block
    assert again.claimed == {payer.config.channel_id}
    assert payer.state().claimed == best.cumulative_amount
    chain.mine(2)
    watch.run_once()
    position = ledger.position(payer.config.channel_id)
    assert position.chain.claimed == best.cumulative_amount and position.unsettled == 0


def test_deposit_removed_by_a_reorg_is_reported_and_never_claimed_against(chain, ledger):
    payer = chain.open_channel(ETH, 3_600)
    # Accepted before the opening deposit was confirmed: no voucher is covered.
    accept(chain, ledger, payer, [6 * 10**17])
    watch = tower(chain, ledger, confirmations=1)
    chain.mine(1)
    watch.run_once()  # the watchtower has been following this channel
    top_up = payer.top_up(ETH)
    best = accept(chain, ledger, payer, [10**18])  # 1.6 ETH: only the top-up covers it
    chain.mine(2)
    assert watch.run_once().sync.events == 1
    assert ledger.position(payer.config.channel_id).chain.deposited == 2 * ETH

    chain.reorg(chain.head - top_up["blockNumber"] + 1)
    assert payer.state().deposited == ETH
    payer.request_withdraw()  # the payer leaves, and the payee's best voucher is now too big
    chain.mine(2)
    report = watch.run_once()
    assert report.sync.rolled_back is not None
    assert report.underfunded == (payer.config.channel_id,)
    assert not report.planned and not report.outcomes  # a claim would only revert
    position = ledger.position(payer.config.channel_id)
    assert position.chain.deposited == ETH and position.underfunded
    assert ledger.best(payer.config.channel_id) == best  # the voucher itself is kept

    payer.top_up(ETH)  # the payer sends its top-up again: the voucher is good again
    chain.mine(2)
    report = watch.run_once()
    assert report.underfunded == () and report.claimed == {payer.config.channel_id}
    assert payer.state().claimed == best.cumulative_amount


def test_top_up_removed_by_a_reorg_leaves_the_covered_voucher_claimed(chain, ledger):
    payer = chain.open_channel(ETH, 3_600)
    channel_id = payer.config.channel_id
    chain.mine(2)  # the opening deposit is confirmed (the payee's depth is 2 blocks)
    covered = accept(chain, ledger, payer, [2 * 10**17, 6 * 10**17])
    watch = tower(chain, ledger, confirmations=1)
    watch.run_once()
    top_up = payer.top_up(ETH)
    best = accept(chain, ledger, payer, [10**18])  # 1.6 ETH: only the top-up covers it
    assert ledger.best_covered(channel_id) == covered
    chain.mine(2)
    watch.run_once()

    chain.reorg(chain.head - top_up["blockNumber"] + 1)
    payer.request_withdraw()
    chain.mine(2)
    report = watch.run_once()
    assert report.sync.rolled_back is not None
    assert report.underfunded == (channel_id,) and report.claimed_covered == (channel_id,)
    [outcome] = report.outcomes
    assert outcome.ok and outcome.amounts == (covered.cumulative_amount,)
    assert payer.state().claimed == covered.cumulative_amount

    payer.top_up(ETH)  # sent again: the best voucher is good again, for what it adds
    chain.mine(2)
    report = watch.run_once()
    assert report.underfunded == () and report.claimed == {channel_id}
    assert report.claimed_covered == ()
    assert payer.state().claimed == best.cumulative_amount


def test_refund_removed_by_a_reorg_restores_the_followed_deposit(chain, ledger):
    payer = chain.open_channel(ETH, 3_600)
    channel_id = payer.config.channel_id
    best = accept(chain, ledger, payer, [3 * 10**17])
    watch = tower(chain, ledger, confirmations=1)
    chain.mine(2)
    watch.run_once()
    refunded = chain.client.refund(payer.config, 4 * 10**17, chain.payee)
    chain.mine(2)
    assert watch.run_once().sync.events == 1
    assert ledger.position(channel_id).chain.deposited == 6 * 10**17

    chain.reorg(chain.head - refunded["blockNumber"] + 1)
    assert payer.state().deposited == ETH  # the refund is gone from the chain
    report = watch.run_once()
    assert report.sync.rolled_back is not None
    assert report.sync.rolled_back[1] < refunded["blockNumber"]
    assert ledger.position(channel_id).chain.deposited == ETH
    assert EventKind.REFUNDED not in {e.kind for e in ledger.chain.events(channel_id)}

    payer.request_withdraw()
    chain.mine(2)
    assert watch.run_once().claimed == {channel_id}
    assert payer.state().claimed == best.cumulative_amount


def test_top_up_after_a_refund_removed_by_a_reorg_leaves_the_refunded_deposit(chain, ledger):
    """The refund's lower total outlives a reorg of the later top-up: the view's deposit is
    the latest surviving total, not the highest one ever read (the deposit before the
    refund), and the watchtower's plan claims within it."""
    payer = chain.open_channel(ETH, 3_600)
    channel_id = payer.config.channel_id
    chain.mine(2)  # the opening deposit is confirmed (the payee's depth is 2 blocks)
    covered = accept(chain, ledger, payer, [3 * 10**17])
    watch = tower(chain, ledger, confirmations=1)
    watch.run_once()
    chain.client.refund(payer.config, 6 * 10**17, chain.payee)  # 0.4 ETH left
    chain.mine(2)
    watch.run_once()
    top_up = payer.top_up(ETH)
    best = accept(chain, ledger, payer, [10**18])  # 1.3 ETH: only the top-up covers it
    chain.mine(2)
    watch.run_once()
    assert ledger.position(channel_id).chain.deposited == 14 * 10**17

    chain.reorg(chain.head - top_up["blockNumber"] + 1)
    assert payer.state().deposited == 4 * 10**17
    payer.request_withdraw()
    chain.mine(2)
    report = watch.run_once()
    assert report.sync.rolled_back is not None
    position = ledger.position(channel_id)
    assert position.chain.deposited == 4 * 10**17 and position.underfunded
    assert report.underfunded == (channel_id,) and report.claimed_covered == (channel_id,)
    [outcome] = report.outcomes
    assert outcome.ok and outcome.amounts == (3 * 10**17,)
    assert payer.state().claimed == covered.cumulative_amount < best.cumulative_amount


def test_reorg_deeper_than_the_kept_block_hashes_rebuilds_the_view(chain, ledger):
    payer = chain.open_channel(ETH, 3_600)
    accept(chain, ledger, payer, [10**17])
    watch = tower(chain, ledger, confirmations=0, keep_blocks=2)
    for _ in range(5):  # blocks with transactions in them, so a reorg changes their hashes
        payer.top_up(1)
        watch.run_once()
    assert ledger.position(payer.config.channel_id).chain.deposited == ETH + 5
    chain.reorg(5)  # every top-up goes, and with them every block whose hash is kept
    report = watch.run_once()
    assert report.sync.reset and report.sync.seeded == 1
    view = ledger.position(payer.config.channel_id).chain
    assert (view.deposited, view.claimed, view.closes_at) == (ETH, 0, 0)
    assert payer.state().deposited == ETH


# -- restarts, batching, wiring ---------------------------------------------------------------


def test_restarted_watchtower_resumes_from_its_stored_cursor(chain, ledger_url):
    domain = chain.client.domain
    with Ledger.open(ledger_url, domain) as ledger:
        payer = chain.open_channel(ETH, 3_600)
        best = accept(chain, ledger, payer, [3 * 10**17])
        first = tower(chain, ledger, confirmations=1).run_once()
        assert first.sync.seeded == 1
    payer.request_withdraw()  # while the watchtower is down
    chain.mine(3)
    with Ledger.open(ledger_url, domain) as ledger:
        report = tower(chain, ledger, confirmations=1).run_once()
        assert report.sync.seeded == 0
        assert report.claimed == {payer.config.channel_id}
        # Seeded one block under the head (its confirmation depth), before the opening
        # deposit was confirmed; both events came after, each read once.
        kinds = [event.kind for event in ledger.chain.events(payer.config.channel_id)]
        assert kinds == [EventKind.SEED, EventKind.DEPOSITED, EventKind.WITHDRAW_REQUESTED]
    assert payer.state().claimed == best.cumulative_amount


def test_due_channels_and_riders_settle_in_one_claim_many(chain, ledger):
    payers = [chain.open_channel(ETH, 3_600) for _ in range(5)]
    owed = [5 * 10**17, 2 * 10**17, 10**16, 10**16, 10**15]
    bests = [
        accept(chain, ledger, payer, [amount]) for payer, amount in zip(payers, owed, strict=True)
    ]
    policy = SettlementPolicy(thresholds={ZERO_ADDRESS: 10**17})
    report = tower(chain, ledger, policy=policy, confirmations=0).run_once()
    [outcome] = report.outcomes
    assert outcome.ok and len(outcome.claims) == 5
    reasons = {claim.channel_id: claim.reason for claim in outcome.claims}
    assert [reasons[p.config.channel_id] for p in payers] == [Reason.THRESHOLD] * 2 + [
        Reason.BATCH
    ] * 3
    for payer, best in zip(payers, bests, strict=True):
        assert payer.state().claimed == best.cumulative_amount
    print(f"\nfive channels settled in one claimMany: {outcome.gas_used} gas")
    chain.mine(1)
    assert tower(chain, ledger, policy=policy, confirmations=0).run_once().outcomes == ()


def test_already_claimed_channel_is_not_claimed_twice_before_confirmation(chain, ledger):
    payer = chain.open_channel(ETH, 3_600)
    accept(chain, ledger, payer, [10**17])
    payer.request_withdraw()
    watch = tower(chain, ledger, confirmations=5)
    chain.mine(5)
    first = watch.run_once()
    assert len(first.outcomes) == 1
    second = watch.run_once()  # its Claimed event is not confirmed yet
    assert second.planned and not second.outcomes
    assert second.skipped == (payer.config.channel_id,)


def test_background_watchtower_stops_cleanly(chain, ledger):
    watch = tower(chain, ledger, confirmations=0)
    with watch:
        assert watch.wait_for(lambda report: True, timeout=30) is not None
        assert watch.running
    assert not watch.running and watch.last_error is None


def test_watchtower_refuses_a_ledger_of_another_contract(chain, tmp_path):
    other = VoucherDomain(chain.client.domain.chain_id, "0x" + "ab" * 20)
    with (
        Ledger.open(f"sqlite:///{tmp_path / 'other.db'}", other) as ledger,
        pytest.raises(ForeignLedgerError),
    ):
        Watchtower(chain.client, ledger, chain.tower)


# -- the command -------------------------------------------------------------------------------


def _command(chain: Chain, ledger_url: str, *extra: str, key: str | None = None):
    env = {
        **os.environ,
        "TOWER_KEY": key if key is not None else chain.tower.key.hex(),
        "PAYEE_KEY": chain.payee.key.hex(),  # the tower relays: the payee signs each total
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "micropay.watchtower",
            "--rpc",
            chain.w3.provider.endpoint_uri,
            "--contract",
            chain.client.address,
            "--ledger",
            ledger_url,
            "--key-env",
            "TOWER_KEY",
            "--payee-key-env",
            "PAYEE_KEY",
            *extra,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize(
    "extra", [("--poll", "0"), ("--confirmations", "-1")], ids=["poll-0", "confirmations--1"]
)
def test_command_refuses_nonsense_watch_settings_in_one_line(chain, ledger_url, extra):
    """A ``--poll`` or ``--confirmations`` out of range is one log line and exit status 2,
    as every other bad setting. (The ``Watchtower(...)`` constructor, where those two are
    checked, ran outside the ``try`` that turns errors into a line: Python printed its
    traceback and exited 1.)"""
    process = _command(chain, ledger_url, "--once", *extra)
    _, err = process.communicate(timeout=120)
    assert "Traceback" not in err, err
    assert process.returncode == 2, err


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_command_claims_in_time_and_shuts_down_cleanly(chain, ledger, ledger_url, stop):
    payer = chain.open_channel(ETH, 600)
    best = accept(chain, ledger, payer, [10**17, 3 * 10**17])
    process = _command(chain, ledger_url, "--confirmations", "1", "--poll", "0.1")
    try:
        payer.request_withdraw()
        chain.mine(1)
        deadline = time.monotonic() + 60
        while payer.state().claimed < best.cumulative_amount:
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "the command did not claim within a minute"
            time.sleep(0.1)
        process.send_signal(stop)
        _, log = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, log
    assert f"received {stop.name}" in log and "watchtower stopped" in log
    assert "claimed" in log


@pytest.mark.parametrize(
    ("extra", "key", "message"),
    [
        ((), "", "TOWER_KEY holding the claim key is not set"),
        ((), "0x1234", "does not hold a valid hex private key"),
        (("--threshold", "eth=lots"), None, "malformed --threshold"),
    ],
    ids=["no-key", "bad-key", "bad-threshold"],
)
def test_command_refuses_bad_configuration(chain, tmp_path, extra, key, message):
    process = _command(chain, f"sqlite:///{tmp_path / 'ledger.db'}", "--once", *extra, key=key)
    _, log = process.communicate(timeout=60)
    assert process.returncode == 2 and message in log


def test_command_refuses_a_ledger_of_another_contract(chain, tmp_path):
    url = f"sqlite:///{tmp_path / 'other.db'}"
    Ledger.open(url, VoucherDomain(chain.client.domain.chain_id, "0x" + "ab" * 20)).close()
    process = _command(chain, url, "--once")
    _, log = process.communicate(timeout=60)
    assert process.returncode == 2 and "holds vouchers for chain" in log


def test_command_runs_one_round_with_once(chain, ledger_url):
    process = _command(chain, ledger_url, "--once", "--confirmations", "0")
    _, log = process.communicate(timeout=60)
    assert process.returncode == 0 and "watchtower stopped" in log, log


@pytest.mark.parametrize(
    "options",
    [
        {"poll_interval": 0},
        {"confirmations": -1},
        {"keep_blocks": 0},
        {"max_range": 0},
        {"confirmations": 1.5},
    ],
)
def test_watchtower_refuses_nonsense_settings(chain, tmp_path, options):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with Ledger.open(url, chain.client.domain) as ledger, pytest.raises(WatchtowerConfigError):
        Watchtower(chain.client, ledger, chain.tower, **options)
