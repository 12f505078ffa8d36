"""The voucher ledger on both back ends: atomic accepts, durability, and every named failure.

Each test taking ``ledger_url`` runs twice: on a fresh SQLite file and on a fresh schema of
a real PostgreSQL server started for the session (tests/ledger_fixtures.py).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from ledger_helpers import AUTHORIZER, DOMAIN, channel, raw_execute, voucher
from ledger_v1 import create_v1_ledger

from micropay.errors import InvalidSignatureError, StaleVoucherError, VoucherError
from micropay.ledger import (
    BlockRef,
    ChainEvent,
    EventKind,
    ForeignLedgerError,
    Ledger,
    LedgerCorruptError,
    LedgerError,
    LedgerURLError,
)
from micropay.payee import MemoryVoucherBook
from micropay.settlement import Candidate
from micropay.vouchers import VoucherDomain, new_session_key, sign_voucher

pytestmark = pytest.mark.offchain
pytest_plugins = ["ledger_fixtures"]

OTHER_CONTRACT = VoucherDomain(DOMAIN.chain_id, "0x" + "ab" * 20)
OTHER_CHAIN = VoucherDomain(DOMAIN.chain_id + 1, DOMAIN.verifying_contract)


@pytest.fixture
def ledger(ledger_url):
    with Ledger.open(ledger_url, DOMAIN) as opened:
        yield opened


# -- accepting -------------------------------------------------------------------------------


def test_first_voucher_is_stored_and_counts_in_full(ledger):
    config = channel(1)
    assert ledger.accept_if_higher(config, voucher(config, 700)) == 700
    assert ledger.best(config.channel_id) == voucher(config, 700)
    assert ledger.config(config.channel_id) == config
    assert ledger.channel_ids() == [config.channel_id]


def test_higher_voucher_counts_only_what_it_adds(ledger):
    config = channel(1)
    ledger.accept_if_higher(config, voucher(config, 700))
    assert ledger.accept_if_higher(config, voucher(config, 1_000)) == 300
    assert ledger.best(config.channel_id).cumulative_amount == 1_000


@pytest.mark.parametrize("amount", [999, 1_000])
def test_voucher_that_does_not_beat_the_best_is_stale_and_changes_nothing(ledger, amount):
    config = channel(1)
    ledger.accept_if_higher(config, voucher(config, 1_000))
    with pytest.raises(StaleVoucherError, match="does not beat the accepted 1000"):
        ledger.accept_if_higher(config, voucher(config, amount))
    assert ledger.best(config.channel_id) == voucher(config, 1_000)


def test_amounts_up_to_uint256_max_are_exact(ledger):
    config = channel(1)
    top = 2**256 - 1
    ledger.accept_if_higher(config, voucher(config, top - 5))
    assert ledger.accept_if_higher(config, voucher(config, top)) == 5
    assert ledger.best(config.channel_id).cumulative_amount == top


def test_channels_are_independent(ledger):
    first, second = channel(1), channel(2)
    ledger.accept_if_higher(first, voucher(first, 50))
    assert ledger.accept_if_higher(second, voucher(second, 10)) == 10
    assert sorted(ledger.channel_ids()) == sorted([first.channel_id, second.channel_id])
    assert ledger.best(channel(3).channel_id) is None
    assert ledger.config(channel(3).channel_id) is None


def test_vouchers_survive_closing_and_reopening(ledger_url):
    config = channel(1)
    with Ledger.open(ledger_url, DOMAIN) as ledger:
        ledger.accept_if_higher(config, voucher(config, 42))
    with Ledger.open(ledger_url, DOMAIN) as reopened:
        assert reopened.best(config.channel_id) == voucher(config, 42)
        assert reopened.accept_if_higher(config, voucher(config, 50)) == 8


def test_two_ledgers_on_one_database_share_the_best_voucher(ledger_url):
    config = channel(1)
    with Ledger.open(ledger_url, DOMAIN) as one, Ledger.open(ledger_url, DOMAIN) as two:
        one.accept_if_higher(config, voucher(config, 10))
        with pytest.raises(StaleVoucherError):
            two.accept_if_higher(config, voucher(config, 10))
        assert two.accept_if_higher(config, voucher(config, 25)) == 15
        assert one.best(config.channel_id).cumulative_amount == 25


def accepts_only_over_what_was_read(book):
    """``over``: the book must still hold what the caller read, or nothing is stored."""
    config = channel(1)
    assert book.accept_if_higher(config, voucher(config, 10), over=0) == 10  # none was stored
    # A rival stored 10 since this caller read "nothing": its voucher for 30 was priced at
    # 30 and must not be stored for the 20 it now adds.
    with pytest.raises(StaleVoucherError, match="holds 10 for the channel, not 0"):
        book.accept_if_higher(config, voucher(config, 30), over=0)
    with pytest.raises(StaleVoucherError, match="holds 10 for the channel, not 20"):
        book.accept_if_higher(config, voucher(config, 30), over=20)
    with pytest.raises(StaleVoucherError, match="does not beat the accepted 10"):
        book.accept_if_higher(config, voucher(config, 10), over=10)
    assert book.best(config.channel_id) == voucher(config, 10)
    assert book.accept_if_higher(config, voucher(config, 30), over=10) == 20
    top = 2**256 - 1
    assert book.accept_if_higher(config, voucher(config, top), over=30) == top - 30
    other = channel(2)
    with pytest.raises(StaleVoucherError, match="holds 0 for the channel, not 5"):
        book.accept_if_higher(other, voucher(other, 10), over=5)
    assert book.best(other.channel_id) is None


def test_an_accept_over_a_stale_read_is_refused_and_changes_nothing(ledger):
    accepts_only_over_what_was_read(ledger)


def test_the_memory_book_accepts_over_a_read_the_same_way():
    accepts_only_over_what_was_read(MemoryVoucherBook())


def keeps_the_best_covered_voucher(book):
    """Beside the best voucher, the best one within the confirmed deposit: only a covered
    voucher replaces it, in the same accept; a better one beyond the confirmed deposit (a
    top-up not yet confirmed) leaves it in place for a reorg to fall back on."""
    config = channel(1)
    channel_id = config.channel_id
    assert book.accept_if_higher(config, voucher(config, 10), covered=True) == 10
    assert book.best(channel_id) == book.best_covered(channel_id) == voucher(config, 10)
    assert book.accept_if_higher(config, voucher(config, 30)) == 20
    assert book.accept_if_higher(config, voucher(config, 40), over=30) == 10
    assert book.best(channel_id) == voucher(config, 40)
    assert book.best_covered(channel_id) == voucher(config, 10)
    with pytest.raises(StaleVoucherError):  # a refused voucher changes neither
        book.accept_if_higher(config, voucher(config, 40), covered=True)
    with pytest.raises(StaleVoucherError):
        book.accept_if_higher(config, voucher(config, 45), over=30, covered=True)
    assert book.best_covered(channel_id) == voucher(config, 10)
    # The top-up confirmed: a voucher within it is both best and covered.
    assert book.accept_if_higher(config, voucher(config, 50), over=40, covered=True) == 10
    assert book.best(channel_id) == book.best_covered(channel_id) == voucher(config, 50)
    other = channel(2)
    book.accept_if_higher(other, voucher(other, 5))  # opened, not confirmed yet
    assert book.best_covered(other.channel_id) is None
    assert book.best_covered(channel(3).channel_id) is None


def test_the_ledger_keeps_the_best_covered_voucher(ledger):
    keeps_the_best_covered_voucher(ledger)


def test_the_memory_book_keeps_the_best_covered_voucher():
    keeps_the_best_covered_voucher(MemoryVoucherBook())


def test_the_covered_voucher_survives_reopening_and_shows_in_positions(ledger_url):
    config = channel(1)
    with Ledger.open(ledger_url, DOMAIN) as ledger:
        ledger.accept_if_higher(config, voucher(config, 10), covered=True)
        ledger.accept_if_higher(config, voucher(config, 30))
    with Ledger.open(ledger_url, DOMAIN) as reopened:
        assert reopened.best_covered(config.channel_id) == voucher(config, 10)
        [position] = reopened.positions()
        assert position.voucher == voucher(config, 30) and position.covered == voucher(config, 10)
        assert reopened.position(config.channel_id).covered == voucher(config, 10)
        assert reopened.check() == 1


def test_an_accept_over_a_negative_amount_is_refused(ledger):
    config = channel(1)
    with pytest.raises(ValueError, match="0 or more"):
        ledger.accept_if_higher(config, voucher(config, 10), over=-1)


def test_threads_sharing_a_ledger_never_lose_the_best_or_count_twice(ledger):
    configs = [channel(i) for i in range(3)]
    top = 60
    signed = {(i, a): voucher(configs[i], a) for i in range(3) for a in range(1, top + 1)}
    credited = [0] * 3
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def work(worker):
        barrier.wait()
        for amount in range(1 + worker, top + 1, 2):  # workers overlap pairwise
            for i in range(3):
                try:
                    added = ledger.accept_if_higher(configs[i], signed[(i, amount)])
                except StaleVoucherError:
                    continue
                with lock:
                    credited[i] += added

    threads = [threading.Thread(target=work, args=(w % 2,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert credited == [top] * 3
    assert [ledger.best(c.channel_id).cumulative_amount for c in configs] == [top] * 3


# -- refusing bad vouchers -------------------------------------------------------------------


def test_voucher_not_signed_by_the_authorizer_is_refused(ledger):
    config = channel(1)
    forged = sign_voucher(DOMAIN, config.channel_id, 100, new_session_key())
    with pytest.raises(InvalidSignatureError):
        ledger.accept_if_higher(config, forged)
    assert ledger.best(config.channel_id) is None


def test_voucher_signed_for_another_contract_is_refused(ledger):
    config = channel(1)
    foreign = sign_voucher(OTHER_CONTRACT, config.channel_id, 100, AUTHORIZER)
    with pytest.raises(InvalidSignatureError):
        ledger.accept_if_higher(config, foreign)


def test_voucher_for_another_channel_than_its_configuration_is_refused(ledger):
    with pytest.raises(VoucherError, match="another channel"):
        ledger.accept_if_higher(channel(1), voucher(channel(2), 100))


# -- foreign and corrupt data ----------------------------------------------------------------


@pytest.mark.parametrize("other", [OTHER_CONTRACT, OTHER_CHAIN], ids=["contract", "chain"])
def test_ledger_refuses_to_open_for_another_domain(ledger_url, other):
    Ledger.open(ledger_url, DOMAIN).close()
    with pytest.raises(ForeignLedgerError, match=f"opened for chain {other.chain_id}"):
        Ledger.open(ledger_url, other)


def _damage(url, assignment, params=()):
    raw_execute(url, f"UPDATE best_vouchers SET {assignment}", params)


def test_row_whose_amount_was_altered_is_named_corrupt(ledger_url, ledger):
    config = channel(1)
    ledger.accept_if_higher(config, voucher(config, 100))
    ledger.close()
    amount = f"{10**6:078d}" if ledger_url.startswith("sqlite") else 10**6
    _damage(ledger_url, "cumulative_amount = ?", (amount,))
    with Ledger.open(ledger_url, DOMAIN) as reopened:
        for read in (
            lambda: reopened.best(config.channel_id),
            reopened.positions,
            reopened.check,
        ):
            with pytest.raises(LedgerCorruptError, match="does not verify") as info:
                read()
            assert config.channel_id.hex() in str(info.value)


def test_row_whose_configuration_was_altered_is_named_corrupt(ledger_url, ledger):
    config = channel(1)
    ledger.accept_if_higher(config, voucher(config, 100))
    _damage(ledger_url, "payee = ?", ("0x" + "33" * 20,))
    with pytest.raises(LedgerCorruptError, match=r"hashes to .* not to its channel id"):
        ledger.config(config.channel_id)


def test_row_with_a_malformed_field_is_named_corrupt(ledger_url, ledger):
    config = channel(1)
    ledger.accept_if_higher(config, voucher(config, 100))
    _damage(ledger_url, "signature = ?", (b"\x01" * 10,))
    with pytest.raises(LedgerCorruptError, match="malformed"):
        ledger.best(config.channel_id)
    _damage(ledger_url, "payer = ?", ("not an address",))
    with pytest.raises(LedgerCorruptError, match="payer is not an address"):
        ledger.best(config.channel_id)


def test_amount_that_is_not_a_uint256_is_named_corrupt(ledger_url, ledger):
    config = channel(1)
    ledger.accept_if_higher(config, voucher(config, 100))
    bad = "12x" if ledger_url.startswith("sqlite") else -5
    _damage(ledger_url, "cumulative_amount = ?", (bad,))
    with pytest.raises(LedgerCorruptError, match="cumulative_amount is not a uint256"):
        ledger.best(config.channel_id)


def test_row_tagged_with_another_contract_is_named_foreign(ledger_url, ledger):
    config = channel(1)
    ledger.accept_if_higher(config, voucher(config, 100))
    _damage(ledger_url, "verifying_contract = ?", (OTHER_CONTRACT.verifying_contract,))
    with pytest.raises(ForeignLedgerError, match=OTHER_CONTRACT.verifying_contract):
        ledger.positions()


def test_row_copied_from_a_ledger_of_another_contract_is_named(ledger_url, tmp_path):
    """A row moved between ledgers with its domain columns rewritten still cannot pass: its
    signature was made for the other contract."""
    config = channel(1)
    source = f"sqlite:///{tmp_path / 'other.db'}"
    with Ledger.open(source, OTHER_CONTRACT) as other:
        other.accept_if_higher(
            config, sign_voucher(OTHER_CONTRACT, config.channel_id, 9, AUTHORIZER)
        )
    [(signature,)] = raw_execute(source, "SELECT signature FROM best_vouchers")
    with Ledger.open(ledger_url, DOMAIN) as ledger:
        ledger.accept_if_higher(config, voucher(config, 9))
        _damage(ledger_url, "signature = ?", (signature,))
        with pytest.raises(LedgerCorruptError, match="copied from a ledger for another contract"):
            ledger.check()


def test_covered_voucher_whose_signature_was_altered_is_named_corrupt(ledger_url, ledger):
    config = channel(1)
    ledger.accept_if_higher(config, voucher(config, 10), covered=True)
    ledger.accept_if_higher(config, voucher(config, 30))
    ledger.close()
    _damage(ledger_url, "covered_signature = ?", (voucher(config, 11).signature,))
    with Ledger.open(ledger_url, DOMAIN) as reopened:
        for read in (
            lambda: reopened.best_covered(config.channel_id),
            reopened.positions,
            reopened.check,
        ):
            with pytest.raises(LedgerCorruptError, match="covered voucher for 10 does not verify"):
                read()
        assert reopened.best(config.channel_id) == voucher(config, 30)  # the best still reads


def test_covered_voucher_above_the_best_or_half_missing_is_named_corrupt(ledger_url, ledger):
    config = channel(1)
    ledger.accept_if_higher(config, voucher(config, 10), covered=True)
    ledger.accept_if_higher(config, voucher(config, 30))
    amount = f"{40:078d}" if ledger_url.startswith("sqlite") else 40
    _damage(ledger_url, "covered_amount = ?", (amount,))
    with pytest.raises(LedgerCorruptError, match="covered voucher for 40 is above its best"):
        ledger.best_covered(config.channel_id)
    _damage(ledger_url, "covered_signature = NULL")
    with pytest.raises(LedgerCorruptError, match="half a covered voucher"):
        ledger.best(config.channel_id)


def test_a_schema_version_1_ledger_is_upgraded_in_place(ledger_url):
    """A ledger written by the old release's own table definitions opens, keeps its
    vouchers (none of them known to be covered) and takes covered vouchers from then on."""
    first, second = channel(1), channel(2)
    create_v1_ledger(
        ledger_url, DOMAIN, [(first, voucher(first, 700)), (second, voucher(second, 90))]
    )
    with Ledger.open(ledger_url, DOMAIN) as ledger:
        assert ledger.best(first.channel_id) == voucher(first, 700)
        assert ledger.best_covered(first.channel_id) is None
        assert ledger.check() == 2
        assert ledger.accept_if_higher(first, voucher(first, 800), covered=True) == 100
        assert ledger.accept_if_higher(second, voucher(second, 95)) == 5
    [(version,)] = raw_execute(
        ledger_url, "SELECT value FROM ledger_meta WHERE key = 'schema_version'"
    )
    assert version == "4"  # through versions 2 and 3 to the current one
    with Ledger.open(ledger_url, DOMAIN) as reopened:  # upgraded once; opens as current
        assert reopened.best_covered(first.channel_id) == voucher(first, 800)
        assert reopened.best_covered(second.channel_id) is None
        assert sorted(p.voucher.cumulative_amount for p in reopened.positions()) == [95, 800]


def test_ledger_from_a_newer_micropay_is_refused(ledger_url):
    Ledger.open(ledger_url, DOMAIN).close()
    raw_execute(ledger_url, "UPDATE ledger_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(LedgerError, match="schema version 99"):
        Ledger.open(ledger_url, DOMAIN)


def _filled_sqlite_ledger(path: Path) -> str:
    url = f"sqlite:///{path}"
    with Ledger.open(url, DOMAIN) as ledger:
        for i in range(400):
            ledger.accept_if_higher(channel(i), voucher(channel(i), i + 1))
    assert not path.with_name(path.name + "-wal").exists()  # checkpointed on close
    return url


@pytest.mark.parametrize("keep", [0.9, 0.5, 0.1])
def test_truncated_sqlite_file_is_named_corrupt(tmp_path, keep):
    path = tmp_path / "ledger.db"
    url = _filled_sqlite_ledger(path)
    size = path.stat().st_size
    with path.open("r+b") as file:
        file.truncate(int(size * keep))
    with pytest.raises(LedgerCorruptError, match=str(path)):
        Ledger.open(url, DOMAIN)


def test_file_shorter_than_a_sqlite_header_is_named_truncated(tmp_path):
    path = tmp_path / "ledger.db"
    _filled_sqlite_ledger(path)
    with path.open("r+b") as file:
        file.truncate(7)
    with pytest.raises(LedgerCorruptError, match="truncated"):
        Ledger.open(f"sqlite:///{path}", DOMAIN)


def test_file_that_is_not_a_database_is_named(tmp_path):
    path = tmp_path / "ledger.db"
    path.write_text("channel,amount\n0x01,5\n" * 100)
    with pytest.raises(LedgerCorruptError, match="not a SQLite database"):
        Ledger.open(f"sqlite:///{path}", DOMAIN)


def test_damaged_page_inside_a_sqlite_file_is_named_corrupt(tmp_path):
    path = tmp_path / "ledger.db"
    url = _filled_sqlite_ledger(path)
    with path.open("r+b") as file:
        file.seek(4096 * 3 + 100)
        file.write(b"\xff" * 2000)
    with (
        pytest.raises(LedgerCorruptError, match=r"damaged|integrity check"),
        Ledger.open(url, DOMAIN) as ledger,
    ):
        ledger.check()


# -- opening ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "mysql://db/ledger",
        "sqlite://host/ledger.db",
        "sqlite:ledger.db",
        "sqlite:",
        "sqlite:///",
        "sqlite:////tmp/",
        "sqlite:///ledger.db?mode=ro",
        "ledger.db",
    ],
)
def test_malformed_or_unsupported_urls_are_named(url):
    with pytest.raises(LedgerURLError):
        Ledger.open(url, DOMAIN)


def test_sqlite_ledger_in_a_missing_directory_is_refused(tmp_path):
    with pytest.raises(LedgerError, match="not a directory"):
        Ledger.open(f"sqlite:///{tmp_path / 'missing' / 'ledger.db'}", DOMAIN)


def test_three_slashes_make_a_path_relative_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "books").mkdir()
    with Ledger.open("sqlite:///books/ledger.db", DOMAIN) as ledger:
        assert ledger.location == "books/ledger.db"
    assert (tmp_path / "books" / "ledger.db").is_file()


def test_unreachable_postgresql_is_named():
    from micropay.devnode import free_port

    with pytest.raises(LedgerError, match="cannot connect"):
        Ledger.open(f"postgresql://nobody@127.0.0.1:{free_port()}/none", DOMAIN)


def test_password_is_kept_out_of_messages():
    from micropay.devnode import free_port

    with pytest.raises(LedgerError) as info:
        Ledger.open(f"postgresql://user:hunter2@127.0.0.1:{free_port()}/none", DOMAIN)
    assert "hunter2" not in str(info.value)


def test_ledger_needs_a_voucher_domain(tmp_path):
    with pytest.raises(VoucherError, match="VoucherDomain"):
        Ledger.open(f"sqlite:///{tmp_path / 'l.db'}", "31337")


def test_closed_ledger_says_so(ledger):
    ledger.close()
    with pytest.raises(LedgerError, match="closed"):
        ledger.best(channel(1).channel_id)


# -- what is owed: the chain view --------------------------------------------------------------


def _event(block, index, config, kind, **totals):
    return ChainEvent(block, index, config.channel_id, kind, **totals)


def test_unsettled_is_the_best_voucher_less_what_was_claimed_on_chain(ledger):
    config = channel(1)
    ledger.accept_if_higher(config, voucher(config, 900))
    assert ledger.unsettled(config.channel_id) == 900  # nothing read from the chain yet
    ledger.chain.record(
        [BlockRef(10, b"\x0a" * 32)],
        [
            _event(
                10, -1, config, EventKind.SEED, total_deposited=1_000, total_claimed=0, closes_at=0
            )
        ],
    )
    ledger.chain.record(
        [BlockRef(12, b"\x0c" * 32)],
        [_event(12, 3, config, EventKind.CLAIMED, total_claimed=600)],
    )
    [position] = ledger.positions()
    assert (position.chain.deposited, position.chain.claimed, position.unsettled) == (
        1_000,
        600,
        300,
    )
    assert position.claimable and not position.underfunded
    assert ledger.chain.cursor() == BlockRef(12, b"\x0c" * 32)


def _read_block(chain, number, *events):
    """The follower's record of block ``number`` (its hash made up) and its events."""
    chain.record([BlockRef(number, bytes([number]) * 32)], list(events))


def test_a_refund_lowers_the_deposit_by_block_order_and_a_rollback_restores_it(ledger):
    """The deposit is the latest total (block, then log index), not the highest: a refund's
    lower total wins over the deposits before it, in its block and in earlier ones."""
    config = channel(1)
    ledger.accept_if_higher(config, voucher(config, 400))
    chain = ledger.chain
    seed = _event(10, -1, config, EventKind.SEED, total_deposited=1_000, total_claimed=0)
    _read_block(chain, 10, seed)
    deposited = _event(11, 0, config, EventKind.DEPOSITED, total_deposited=1_500)
    refunded = _event(11, 1, config, EventKind.REFUNDED, total_deposited=700)
    _read_block(chain, 11, deposited, refunded)
    assert ledger.position(config.channel_id).chain.deposited == 700
    claimed = _event(12, 0, config, EventKind.CLAIMED, total_claimed=300)
    _read_block(chain, 12, claimed, _event(12, 1, config, EventKind.REFUNDED, total_deposited=350))
    position = ledger.position(config.channel_id)
    assert (position.chain.deposited, position.chain.claimed) == (350, 300)
    assert position.underfunded and not position.claimable  # the best (400) is above 350
    assert ledger.chain.views()[config.channel_id] == position.chain
    chain.rollback(11)
    assert ledger.position(config.channel_id).chain.deposited == 700
    chain.rollback(10)
    assert ledger.position(config.channel_id).chain.deposited == 1_000


def test_rolling_back_forgets_what_reorged_blocks_said(ledger):
    config = channel(1)
    ledger.accept_if_higher(config, voucher(config, 900))
    chain = ledger.chain
    chain.record(
        [BlockRef(10, b"\x0a" * 32)],
        [_event(10, -1, config, EventKind.SEED, total_deposited=500, total_claimed=0)],
    )
    chain.record(
        [BlockRef(11, b"\x0b" * 32)],
        [_event(11, 0, config, EventKind.DEPOSITED, total_deposited=1_000)],
    )
    chain.record(
        [BlockRef(12, b"\x0c" * 32)],
        [
            _event(12, 0, config, EventKind.CLAIMED, total_claimed=900),
            _event(12, 1, config, EventKind.WITHDRAW_REQUESTED, closes_at=5_000),
        ],
    )
    assert ledger.position(config.channel_id).unsettled == 0
    chain.rollback(10)
    position = ledger.position(config.channel_id)
    assert (position.chain.deposited, position.chain.claimed, position.chain.closes_at) == (
        500,
        0,
        0,
    )
    assert position.underfunded and not position.claimable
    assert chain.cursor() == BlockRef(10, b"\x0a" * 32)
    assert [e.kind for e in chain.events(config.channel_id)] == [EventKind.SEED]
    chain.rollback(9)
    assert chain.unseeded() == [config.channel_id]
    assert ledger.position(config.channel_id).chain is None


def test_channel_without_a_seed_has_no_view_until_it_is_seeded(ledger):
    """Events alone are part of a channel's history (its first deposit may be older): no
    view is better than a partial one."""
    config = channel(1)
    ledger.accept_if_higher(config, voucher(config, 900))
    claimed = _event(12, 0, config, EventKind.CLAIMED, total_claimed=100)
    ledger.chain.record([BlockRef(12, b"\x0c" * 32)], [claimed])
    assert ledger.chain.unseeded() == [config.channel_id]
    assert ledger.position(config.channel_id).chain is None and ledger.positions()[0].chain is None
    seed = _event(14, -1, config, EventKind.SEED, total_deposited=1_000, total_claimed=300)
    ledger.chain.record([BlockRef(14, b"\x0e" * 32)], [seed])
    assert ledger.chain.unseeded() == []
    assert ledger.position(config.channel_id).chain.claimed == 300


def test_only_recent_block_hashes_are_kept(ledger):
    for number in range(1, 21):
        ledger.chain.record([BlockRef(number, number.to_bytes(32, "big"))], [], keep=5)
    assert [block.number for block in ledger.chain.blocks()] == [20, 19, 18, 17, 16, 15]


def test_underfunded_channel_is_claimed_with_its_covered_voucher(ledger):
    """A top-up the best voucher relied on was reorged away: a claim carries the best
    voucher the confirmed deposit covered, and the policy weighs what that one adds."""
    config = channel(1)
    ledger.accept_if_higher(config, voucher(config, 800), covered=True)
    ledger.accept_if_higher(config, voucher(config, 1_500))
    seed = _event(10, -1, config, EventKind.SEED, total_deposited=1_000, total_claimed=100)
    ledger.chain.record([BlockRef(10, b"\x0a" * 32)], [seed])
    position = ledger.position(config.channel_id)
    assert position.underfunded and position.unsettled == 1_400
    assert position.to_claim == voucher(config, 800)
    assert position.claimable and position.claimable_amount == 700
    assert Candidate.from_position(position).unsettled == 700
    claimed = _event(11, 0, config, EventKind.CLAIMED, total_claimed=800)
    ledger.chain.record([BlockRef(11, b"\x0b" * 32)], [claimed])
    position = ledger.position(config.channel_id)
    assert position.to_claim is None and not position.claimable  # the rest is not covered
    assert position.unsettled == 700
    topped_up = _event(12, 0, config, EventKind.DEPOSITED, total_deposited=2_000)
    ledger.chain.record([BlockRef(12, b"\x0c" * 32)], [topped_up])
    assert ledger.position(config.channel_id).to_claim == voucher(config, 1_500)


def test_finished_channel_is_not_claimable(ledger):
    config = channel(1)
    ledger.accept_if_higher(config, voucher(config, 900))
    ledger.chain.record(
        [BlockRef(3, b"\x03" * 32)],
        [
            _event(3, -1, config, EventKind.SEED, total_deposited=1_000, total_claimed=0),
            _event(3, 0, config, EventKind.WITHDRAWN, total_claimed=0, finished=True),
        ],
    )
    position = ledger.position(config.channel_id)
    assert position.chain.finished and position.unsettled == 900 and not position.claimable


def test_owed_since_starts_at_the_first_unsettled_accept_and_can_be_cleared(ledger):
    config = channel(1)
    ledger.accept_if_higher(config, voucher(config, 1))
    first = ledger.position(config.channel_id).owed_since
    ledger.accept_if_higher(config, voucher(config, 2))
    assert ledger.position(config.channel_id).owed_since == first
    ledger.set_owed_since([(config.channel_id, None)])
    assert ledger.position(config.channel_id).owed_since is None
    ledger.accept_if_higher(config, voucher(config, 3))
    assert ledger.position(config.channel_id).owed_since > first


def test_many_threads_share_a_bounded_pool_of_connections(ledger_url):
    """A server that starts a thread per request must not open a connection per request."""
    configs = [channel(i) for i in range(40)]
    with Ledger.open(ledger_url, DOMAIN, max_connections=2) as ledger:
        threads = [
            threading.Thread(target=ledger.accept_if_higher, args=(c, voucher(c, 5)))
            for c in configs
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert ledger._store._opened <= 2
        assert len(ledger.channel_ids()) == 40


def test_nonsense_pool_size_is_refused(tmp_path):
    with pytest.raises(LedgerError, match="max_connections"):
        Ledger.open(f"sqlite:///{tmp_path / 'l.db'}", DOMAIN, max_connections=0)
