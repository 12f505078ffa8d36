"""The demo (the main job) runs end to end and its balances add up to the wei."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from micropay import demo, demo_metered, demo_x402
from micropay.networks import connect

pytestmark = pytest.mark.standalone


@pytest.fixture(scope="module")
def story():
    output = io.StringIO()
    with connect("embedded") as connection:
        summary = demo.run(
            connection, articles=1_000, console=Console(file=output, width=160, highlight=False)
        )
    return summary, output.getvalue()


def test_every_wei_is_accounted_for(story):
    summary, text = story
    assert summary.conserved
    assert "nothing lost" in text


def test_the_reader_paid_exactly_the_articles_and_the_site_settled_them_at_once(story):
    summary, _ = story
    assert summary.paid_for_articles == 1_000 * demo.PRICE == summary.settled_in_one_tx
    # The rest of the reader's deposit waits in its channel, still the reader's.
    assert summary.net("reader") == -(summary.paid_for_articles + summary.contract_delta)
    assert summary.channel_gas / summary.articles < 100  # gas per paid article


def test_the_replay_is_refused_and_the_watchtower_saves_the_site(story):
    summary, _ = story
    assert summary.replay_status == 402 and summary.replay_reason == "stale_voucher"
    assert summary.watchtower_claimed == 40 * demo.PRICE
    assert summary.withdraw_refund == 60 * demo.PRICE


def test_the_salary_stream_pays_exactly_what_it_promised(story):
    summary, _ = story
    assert summary.salary_paid == summary.salary_expected == 3 * 10**18


def test_the_summary_compares_with_paying_on_chain(story):
    summary, text = story
    assert summary.eth_transfer_gas == 21_000
    assert summary.erc20_transfer_gas > 21_000
    for line in (
        "gas per payment with micropay",
        "gas per payment as plain ETH transfers",
        "gas per payment as ERC-20 transfers (measured)",
    ):
        assert line in text


def test_an_x402_agent_pays_ten_requests_in_exact_then_a_thousand_in_channel(story):
    summary, text = story
    agent = summary.agent
    assert agent is not None  # the x402 package is a dev dependency: the scene always runs
    assert (agent.exact_payments, agent.channel_payments) == (10, 1_000)
    price = demo_x402.QUOTE_PRICE
    # Every base unit the agent spent reached the site: 10 transfers and one claim.
    assert agent.agent_spent == agent.site_received == 1_010 * price
    assert (agent.exact_paid, agent.channel_paid, agent.channel_held) == (
        10 * price,
        1_000 * price,
        0,
    )
    # exact: one EIP-3009 transfer each; channel: approve, deposit and one claim for all.
    assert agent.exact_gas_per_payment > 50_000
    assert agent.channel_gas_per_payment < 200
    assert "x402 agent, exact: payments / gas per payment" in text
    assert "x402 agent, channel: payments / gas per payment" in text


def test_metered_searches_are_charged_what_they_used_and_the_refund_shows_in_the_settlement(
    story,
):
    summary, text = story
    m = summary.metered
    assert m is not None
    used = [demo_metered.results_for(q) * demo_metered.PER_RESULT for q in demo_metered.QUERIES]
    after_refund = demo_metered.results_for("after the refund") * demo_metered.PER_RESULT
    assert m.charges == (*used, after_refund)
    assert 0 in m.charges  # the search that found nothing cost nothing
    assert m.refunded == used[demo_metered.QUERIES.index(demo_metered.WRONG)] > 0
    # To the wei: charges less the refund = the book = what the close settled, and the
    # deposit split exactly into settled and returned; the site settled below the ceiling.
    # The streams charged what they delivered, not the increments signed for.
    assert (m.tokens, m.seconds) == (len(demo_metered.ANSWER), demo_metered.SECONDS)
    assert m.tokens_charged == m.tokens * demo_metered.PER_TOKEN
    assert m.seconds_charged == m.seconds * demo_metered.PER_SECOND
    charged = sum(m.charges) + m.tokens_charged + m.seconds_charged
    assert charged - m.refunded == m.charged_total == m.settled
    assert m.settled + m.returned == m.deposit
    assert m.settled < m.ceiling
    assert summary.net("API user") == -m.settled
    assert m.adds_up
    assert "metered: charged - refunded = settled (last ceiling signed)" in text
    assert "streamed LLM tokens / media seconds: units / charged (wei)" in text
