"""``micropay settle|ledger show|watch``: a site's side, from its voucher ledger to its money.

A site that took vouchers over HTTP holds them in its ledger; these commands show what it
holds (``ledger show``), cash it out now (``settle``, with ``--dry-run`` to see the claims and
their gas first) and keep claiming in time (``watch``, the watchtower). All three settle by
the one path in :mod:`micropay.claims` and take the settlement-policy options of
``python -m micropay.watchtower`` (:data:`~micropay.settlement.POLICY_OPTIONS`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import click
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3

from micropay.channels import ChannelClient
from micropay.claims import Claim, ClaimOutcome, Settlement, claim_from, final_outcomes, settle
from micropay.cli._context import (
    CliError,
    Moment,
    Money,
    Settings,
    console,
    emit,
    emit_json,
    session,
    signer,
    table,
    token_units,
)
from micropay.ledger import Ledger
from micropay.settlement import POLICY_OPTIONS, SettlementPolicy, policy_from_options

_F = TypeVar("_F", bound=Callable[..., Any])


def policy_options(command: _F) -> _F:
    """Add the settlement-policy options (declared once, in micropay.settlement)."""
    for option in reversed(POLICY_OPTIONS):
        command = click.option(
            option.flag,
            option.dest,
            multiple=option.repeated,
            metavar=option.metavar,
            help=option.help,
        )(command)
    return command


def payee_key_option(command: _F) -> _F:
    """Add ``--payee-key-env``: settling is the payee's act, so a relayer's claims carry the
    payee's signature of each total."""
    return click.option(
        "--payee-key-env",
        "payee_key_env",
        metavar="VAR",
        default=None,
        help="if the signing key is a relayer: the variable holding the payee's key",
    )(command)


def _payee_key(variable: str | None) -> LocalAccount | None:
    if variable is None:
        return None
    secret = os.environ.get(variable)
    if not secret:
        raise CliError(f"the environment variable {variable} holding the payee's key is not set")
    try:
        key: LocalAccount = Account.from_key(secret.strip())
    except (ValueError, TypeError):
        raise CliError(f"{variable} does not hold a valid hex private key") from None
    return key


def _policy(values: dict[str, Any]) -> SettlementPolicy:
    """The policy the options give (checked before anything connects)."""
    return policy_from_options({option.dest: values.pop(option.dest) for option in POLICY_OPTIONS})


class _Units:
    """Decimals and symbols of the tokens shown, each looked up once."""

    def __init__(self, w3: Web3) -> None:
        self.w3 = w3
        self._known: dict[str, tuple[int, str]] = {}

    def symbol(self, token: str) -> str:
        return self._units(token)[1]

    def money(self, token: str, amount: int) -> Money:
        decimals, symbol = self._units(token)
        return Money(amount, decimals, symbol)

    def _units(self, token: str) -> tuple[int, str]:
        if token not in self._known:
            self._known[token] = token_units(self.w3, token)
        return self._known[token]


@contextmanager
def _site(
    settings: Settings, url: str, *, create: bool
) -> Iterator[tuple[Any, ChannelClient, Ledger]]:
    """Connect, find the deployment and open the site's ledger, bound to its contract."""
    with session(settings) as (connection, deployment):
        client = ChannelClient(connection.w3, deployment.channels)
        with Ledger.open(url, client.domain, create=create) as ledger:
            yield connection, client, ledger


# -- ledger show -----------------------------------------------------------------------------


@click.group()
def ledger() -> None:
    """A site's voucher ledger: what it holds, per channel."""


@ledger.command("show")
@click.option(
    "--ledger", "url", required=True, help="the site's voucher ledger, e.g. sqlite:///site.db"
)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_obj
def show(settings: Settings, url: str, as_json: bool) -> None:
    """List the channels the ledger holds.

    Per channel: deposit, best voucher (the ceiling), the charged and refunded totals, what
    is claimed on chain, and its state."""
    with _site(settings, url, create=False) as (connection, client, book):
        units = _Units(connection.w3)
        now = int(connection.w3.eth.get_block("latest")["timestamp"])  # withdraws use its clock
        records = []
        for position in book.positions():
            state = client.state(position.channel_id)
            token = position.config.token
            best = position.voucher.cumulative_amount
            claim = claim_from(
                position.config, position.voucher, position.covered, state, charged=position.charged
            )
            records.append(
                {
                    "channel id": "0x" + position.channel_id.hex(),
                    "payer": position.config.payer,
                    "token": token,
                    "deposit": units.money(token, state.deposited),
                    "best voucher": units.money(token, best),
                    "charged": units.money(token, position.charged_total),
                    "refunded": units.money(token, position.refunded),
                    "claimed": units.money(token, state.claimed),
                    "unclaimed": units.money(token, max(position.charged_total - state.claimed, 0)),
                    "claimable now": units.money(token, 0 if claim is None else claim.amount),
                    "withdraw requested": state.withdraw_requested,
                    "withdraw at": Moment(state.closes_at, now) if state.closes_at else None,
                    "state": state.phase,
                }
            )
        if as_json:
            emit_json(records)
        elif not records:
            console.print(f"the ledger {book.location} holds no channels", markup=False)
        for record in [] if as_json else records:
            title, *rest = record.items()
            emit(dict(rest), False, f"channel {title[1]}")


# -- settle ----------------------------------------------------------------------------------


@click.command("settle")
@click.option(
    "--ledger", "url", required=True, help="the site's voucher ledger, e.g. sqlite:///site.db"
)
@click.option(
    "--dry-run", is_flag=True, help="show the claims and their estimated gas; send nothing"
)
@click.option("--due-only", is_flag=True, help="claim only what the policy finds due (and riders)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@payee_key_option
@policy_options
@click.pass_obj
def settle_command(
    settings: Settings,
    /,
    url: str,
    dry_run: bool,
    due_only: bool,
    as_json: bool,
    payee_key_env: str | None,
    **options: Any,
) -> None:
    """Cash out: claim every channel's best voucher.

    Claims go in claim-many transactions of at most --max-batch (the covered voucher where a
    reorg left the deposit short), and the command shows what moved and its gas."""
    policy = _policy(options)
    payee_key = _payee_key(payee_key_env)
    with _site(settings, url, create=False) as (connection, client, book):
        result = settle(
            client,
            book,
            signer(settings, connection),
            policy,
            due_only=due_only,
            dry_run=dry_run,
            payee_key=payee_key,
        )
        units = _Units(connection.w3)
        if not result.claims:
            if as_json:
                emit_json(_settlement_data(result, units))
            else:
                why = (
                    "none is due under the policy"
                    if due_only
                    else "no channel has a claimable voucher"
                )
                click.echo(f"nothing to claim in {book.location}: {why}")
            return
        _show_settlement(result, units, as_json)
    if not dry_run:
        _refuse_failed(result.outcomes)


def _refuse_failed(outcomes: Sequence[ClaimOutcome]) -> None:
    """Exit non-zero if a channel's last claim attempt failed (it is still to claim)."""
    failed = [o for o in final_outcomes(outcomes).values() if not o.ok]
    if failed:
        raise CliError(f"{len(failed)} claim(s) failed: {failed[0].error}")


def _settlement_data(result: Settlement, units: _Units) -> dict[str, Any]:
    number = {id(outcome): n for n, outcome in enumerate(result.outcomes, 1)}
    final = final_outcomes(result.outcomes)
    gas_key = "estimated_gas" if result.dry_run else "gas_used"
    totals: dict[str, int] = {}
    for claim in result.claims if result.dry_run else result.claimed:
        totals[claim.config.token] = totals.get(claim.config.token, 0) + claim.amount
    return {
        "dry_run": result.dry_run,
        "claims": [
            {
                "channel_id": "0x" + claim.channel_id.hex(),
                "payer": claim.config.payer,
                "token": claim.config.token,
                "symbol": units.symbol(claim.config.token),
                "amount": claim.amount,
                "voucher": claim.voucher.cumulative_amount,
                "covered_voucher": claim.covered,
                "reason": str(claim.reason),
                "transaction": number[id(final[claim.channel_id])],
                "status": _status(result, final[claim.channel_id]),
            }
            for claim in result.claims
        ],
        "transactions": [
            {
                "transaction": n,
                "claims": len(outcome.claims),
                gas_key: outcome.gas_used if outcome.ok else None,
                "tx_hash": None if outcome.tx_hash is None else "0x" + outcome.tx_hash.hex(),
                "block_number": outcome.block_number,
                "error": outcome.error,
            }
            for n, outcome in enumerate(result.outcomes, 1)
        ],
        "totals": {
            "amounts": [
                {"token": token, "symbol": units.symbol(token), "amount": amount}
                for token, amount in totals.items()
            ],
            gas_key: sum(o.gas_used for o in result.outcomes if o.ok),
        },
    }


def _status(result: Settlement, outcome: ClaimOutcome) -> str:
    if not outcome.ok:
        return "failed"
    return "would claim" if result.dry_run else "claimed"


def _show_settlement(result: Settlement, units: _Units, as_json: bool) -> None:
    data = _settlement_data(result, units)
    if as_json:
        emit_json(data)
        return
    gas_key = "estimated_gas" if result.dry_run else "gas_used"
    gas_label = gas_key.replace("_", " ")
    claims = table(
        "claims (dry run: nothing sent)" if result.dry_run else "claims",
        "channel",
        "payer",
        "amount",
        "reason",
        "status",
        "tx",
        ids=("channel", "payer"),
    )
    for row in data["claims"]:
        amount = str(units.money(row["token"], row["amount"]))
        claims.add_row(
            row["channel_id"],
            row["payer"],
            amount + (" (covered voucher)" if row["covered_voucher"] else ""),
            row["reason"],
            row["status"],
            _tx_summary(data["transactions"][row["transaction"] - 1], gas_key),
        )
    console.print(claims)
    sent = table("transactions", "tx", "claims", gas_label, "hash", ids=("hash",))
    for tx in data["transactions"]:
        sent.add_row(
            str(tx["transaction"]),
            str(tx["claims"]),
            "-" if tx[gas_key] is None else f"{tx[gas_key]:,}",
            tx["tx_hash"] or ("-" if tx["error"] is None else f"failed: {tx['error']}"),
        )
    console.print(sent)
    amounts = ", ".join(
        str(units.money(total["token"], total["amount"])) for total in data["totals"]["amounts"]
    )
    verb = "would move" if result.dry_run else "moved"
    console.print(
        f"total: {verb} {amounts or 'nothing'} in {len(data['transactions'])} transaction(s), "
        f"{gas_label} {data['totals'][gas_key]:,}",
        markup=False,
    )


def _tx_summary(tx: dict[str, Any], gas_key: str) -> str:
    """``1: estimated gas 85,000 for 2 claim(s)``: the transaction a claim rides in."""
    if tx["error"] is not None:
        return f"{tx['transaction']}: failed"
    gas = gas_key.replace("_", " ")
    return f"{tx['transaction']}: {gas} {tx[gas_key]:,} for {tx['claims']} claim(s)"


# -- watch -----------------------------------------------------------------------------------


class _OneLine(logging.Formatter):
    """``warning: message`` and the exception's message, never a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        text = f"{record.levelname.lower()}: {record.getMessage()}"
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            text += f": {type(error).__name__}: {error}"
        return text


@contextmanager
def _logging_to_stderr(quiet: bool) -> Iterator[None]:
    """micropay's warnings (errors only, when quiet) as one line each on stderr."""
    logger = logging.getLogger("micropay")
    handler = logging.StreamHandler()
    handler.setFormatter(_OneLine())
    handler.setLevel(logging.ERROR if quiet else logging.WARNING)
    logger.addHandler(handler)
    previous, logger.propagate = logger.propagate, False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = previous


@click.command()
@click.option(
    "--ledger", "url", required=True, help="the site's voucher ledger, e.g. sqlite:///site.db"
)
@click.option(
    "--confirmations", default=2, show_default=True, help="blocks on top before one is believed"
)
@click.option("--poll", default=5.0, show_default=True, help="seconds between rounds")
@click.option("--once", is_flag=True, help="run one round and exit")
@click.option("--quiet", is_flag=True, help="print only claims and errors, not every round")
@payee_key_option
@policy_options
@click.pass_obj
def watch(
    settings: Settings,
    /,
    url: str,
    confirmations: int,
    poll: float,
    once: bool,
    quiet: bool,
    payee_key_env: str | None,
    **options: Any,
) -> None:
    """Run the watchtower for a site's ledger.

    It follows the chain until Ctrl-C or SIGTERM and claims by the policy (by default as
    soon as a payer asks to withdraw)."""
    from micropay.watchtower import RunReport, Watchtower, run_until_signalled

    policy = _policy(options)
    payee_key = _payee_key(payee_key_env)
    with _site(settings, url, create=True) as (connection, client, book):
        units = _Units(connection.w3)

        def report(round_report: RunReport) -> None:
            for outcome in round_report.outcomes:
                if outcome.ok:
                    for claim in outcome.claims:
                        click.echo(_claim_line(claim, outcome, units))
            if not quiet:
                made = sum(len(o.claims) for o in round_report.outcomes if o.ok)
                click.echo(
                    f"round {tower.rounds}: {round_report.watched} channel(s) watched, "
                    f"{made} claim(s) made"
                )

        tower = Watchtower(
            client,
            book,
            signer(settings, connection),
            policy,
            confirmations=confirmations,
            poll_interval=poll,
            on_report=report,
            payee_key=payee_key,
        )
        with _logging_to_stderr(quiet):
            if not quiet:
                click.echo(
                    f"watching {len(book.channel_ids())} channel(s) of {url} on "
                    f"{connection.name}" + ("" if once else "; Ctrl-C stops")
                )
            if once:  # the round's claims are printed above; the exit status says so
                _refuse_failed(tower.run_once().outcomes)
            else:
                run_until_signalled(tower)
        if not quiet:
            click.echo("stopped")


def _claim_line(claim: Claim, outcome: ClaimOutcome, units: _Units) -> str:
    tx = "0x" + (outcome.tx_hash or b"").hex()
    return (
        f"claimed {units.money(claim.config.token, claim.amount)} on 0x{claim.channel_id.hex()} "
        f"({claim.reason}) in tx {tx}, gas {outcome.gas_used:,} for {len(outcome.claims)} claim(s)"
    )


COMMANDS: list[click.Command] = [settle_command, ledger, watch]
