"""``micropay channel open|list|pay|topup|status|claim|close|withdraw``.

The payer's channels live in its wallet (``<home>/wallet.json``, shared with the HTTP
client when it is given the same path); see :mod:`micropay.wallet`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.progress import Progress
from web3 import Web3

from micropay.channels import ChannelClient
from micropay.cli._context import (
    CliError,
    Moment,
    Money,
    Settings,
    address,
    console,
    emit,
    emit_json,
    hex32,
    parse_amount,
    session,
    show_amount,
    signer,
    token_address,
    token_units,
)
from micropay.networks import Connection, connect
from micropay.payer import Payer
from micropay.vouchers import ZERO_ADDRESS, ChannelConfig, Voucher
from micropay.wallet import ChannelStatus, Wallet


def _wallet(settings: Settings) -> Wallet:
    """The payer's wallet; channel files of an older CLI are imported into it once."""
    return Wallet(settings.home / "wallet.json", legacy_folder=settings.home / "channels")


def _payer(wallet: Wallet, connection: Connection, account: Any, channel_id: str) -> Payer:
    """A wallet channel's payer, on the contract the channel lives in (opened here, or by
    the HTTP client on a site's contract), brought up to date from the chain."""
    record = wallet.require(hex32(channel_id, "channel id"))
    payer = record.payer(ChannelClient(connection.w3, record.contract), account)
    payer.refresh()
    return payer


@click.group()
def channel() -> None:
    """Payment channels: open, pay, claim, close, withdraw.

    The payer opens a channel and pays with vouchers; the payee claims and closes."""


@channel.command("open")
@click.option("--payee", required=True, help="who the vouchers pay")
@click.option("--deposit", "deposit_text", required=True, help="e.g. 0.1eth or 1000")
@click.option("--token", default=None, help="ERC-20 address (default: ETH)")
@click.option("--delay", default=86_400, show_default=True, help="withdraw delay, seconds")
@click.option("--no-session-key", is_flag=True, help="sign vouchers with the payer's own key")
@click.pass_obj
def open_channel(
    settings: Settings,
    payee: str,
    deposit_text: str,
    token: str | None,
    delay: int,
    no_session_key: bool,
) -> None:
    """Open a channel with a first deposit.

    The channel is kept in the wallet under --home."""
    with session(settings) as (connection, deployment):
        client = ChannelClient(connection.w3, deployment.channels)
        token_addr = token_address(token)
        decimals, symbol = token_units(client.w3, token_addr)
        amount = parse_amount(deposit_text, decimals)
        payer = _wallet(settings).open(
            client,
            signer(settings, connection),
            address(payee, "payee"),
            amount,
            token=token_addr,
            withdraw_delay=delay,
            use_session_key=not no_session_key,
        )
        console.print(f"opened channel [bold]0x{payer.config.channel_id.hex()}[/bold]")
        console.print(
            f"deposit {show_amount(amount, decimals, symbol)}; vouchers signed by "
            f"{payer.config.authorizer}"
        )


@channel.command("pay")
@click.argument("channel_id")
@click.argument("amount_text", metavar="AMOUNT")
@click.option("--times", default=1, show_default=True, help="sign this many payments in a row")
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="write the payment (config + voucher JSON) here instead of stdout",
)
@click.pass_obj
def pay(settings: Settings, channel_id: str, amount_text: str, times: int, out: str | None) -> None:
    """Sign the next voucher(s) as payment JSON.

    The JSON (config and voucher) is what a payee accepts and `channel claim` reads."""
    if times < 1:
        raise CliError("--times must be at least 1")
    with connect(settings.network) as connection:
        wallet = _wallet(settings)
        payer = _payer(wallet, connection, signer(settings, connection), channel_id)
        client = payer.client
        decimals, _symbol = token_units(client.w3, payer.config.token)
        amount = parse_amount(amount_text, decimals)
        voucher: Voucher | None = None
        with Progress(console=console, transient=True, disable=times < 100) as progress:
            task = progress.add_task("signing vouchers", total=times)
            for _ in range(times):
                voucher = payer.pay(amount)
                progress.advance(task)
        wallet.put(wallet.require(payer.config.channel_id).with_payer(payer))
        assert voucher is not None
        payment = {"config": payer.config.to_json(), "voucher": voucher.to_json()}
        text = json.dumps(payment, indent=2)
        if out:
            Path(out).write_text(text + "\n", encoding="utf8")
            console.print(f"payment for cumulative {voucher.cumulative_amount} written to {out}")
        else:
            click.echo(text)


def _payment(source: str) -> tuple[ChannelConfig, Voucher]:
    text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf8")
    try:
        data = json.loads(text)
        return ChannelConfig.from_json(data["config"]), Voucher.from_json(data["voucher"])
    except (ValueError, KeyError, TypeError) as err:
        raise CliError(
            f"{source} is not a payment JSON from `micropay channel pay`: {err}"
        ) from None


@channel.command("status")
@click.argument("channel_id")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_obj
def status(settings: Settings, channel_id: str, as_json: bool) -> None:
    """Show a channel's balances on chain.

    With the channel in the wallet, also what this payer has promised."""
    with session(settings) as (connection, deployment):
        client = ChannelClient(connection.w3, deployment.channels)
        cid = hex32(channel_id, "channel id")
        state = client.state(cid)
        token: str = ZERO_ADDRESS
        promised: int | None = None
        stored = _wallet(settings).channel(cid)
        if stored is not None:
            token, promised = stored.config.token, stored.highest_signed
        decimals, symbol = token_units(client.w3, token)

        def money(value: int) -> Money:
            return Money(value, decimals, symbol)

        rows: dict[str, Any] = {
            "channel": "0x" + cid.hex(),
            "state": state.phase,
            "deposited": money(state.deposited),
            "claimed": money(state.claimed),
            "remaining": money(state.remaining),
        }
        if state.finished:
            rows["returned to the payer"] = money(state.returned)
        rows["withdraw closes at"] = (
            Moment(state.closes_at, _chain_now(client.w3)) if state.withdraw_requested else None
        )
        if promised is not None:
            rows["promised by this payer"] = money(promised)
        if not state.exists:
            rows["note"] = "no deposit on chain: unknown channel"
        emit(rows, as_json, "channel")


@channel.command("claim")
@click.argument("payment", metavar="PAYMENT_JSON")
@click.pass_obj
def claim(settings: Settings, payment: str) -> None:
    """As the payee: claim a payment's voucher; the channel stays open.

    Settling is the payee's act: the signing key must be the channel's payee."""
    config, voucher = _payment(payment)
    with session(settings) as (connection, deployment):
        client = ChannelClient(connection.w3, deployment.channels)
        before = client.state(config).claimed
        receipt = client.claim_each([(config, voucher)], signer(settings, connection))
        decimals, symbol = token_units(client.w3, config.token)
        console.print(
            f"claimed {show_amount(voucher.cumulative_amount - before, decimals, symbol)}"
            f" for {config.payee} (gas {receipt['gasUsed']:,})"
        )


@channel.command("close")
@click.argument("payment", metavar="PAYMENT_JSON")
@click.pass_obj
def close(settings: Settings, payment: str) -> None:
    """As the payee: claim a voucher and refund the rest.

    One transaction pays the payee the voucher's total and returns the rest to the payer."""
    config, voucher = _payment(payment)
    with session(settings) as (connection, deployment):
        client = ChannelClient(connection.w3, deployment.channels)
        state = client.state(config)
        best = voucher if voucher.cumulative_amount > state.claimed else None
        receipt = client.close(config, best, signer(settings, connection))
        final = client.state(config)
        decimals, symbol = token_units(client.w3, config.token)
        console.print(
            f"closed: payee has {show_amount(final.claimed, decimals, symbol)}, payer "
            f"refunded {show_amount(final.returned, decimals, symbol)} "
            f"(gas {receipt['gasUsed']:,})"
        )


@channel.command("withdraw")
@click.argument("channel_id")
@click.option("--finish", is_flag=True, help="finish after the delay (default: request)")
@click.pass_obj
def withdraw(settings: Settings, channel_id: str, finish: bool) -> None:
    """As the payer: request a withdraw, or --finish it.

    The withdraw can finish once the channel's delay has passed; until then the payee may
    still claim."""
    with connect(settings.network) as connection:
        wallet = _wallet(settings)
        payer = _payer(wallet, connection, signer(settings, connection), channel_id)
        client = payer.client
        wallet.retire(payer.config.channel_id, "withdrawn by the payer")
        decimals, symbol = token_units(client.w3, payer.config.token)
        if finish:
            payer.finish_withdraw()
            state = client.state(payer.config)
            console.print(
                f"withdrawn: {show_amount(state.returned, decimals, symbol)} returned to "
                f"{payer.config.payer}"
            )
        else:
            payer.request_withdraw()
            closes_at = Moment(client.state(payer.config).closes_at, _chain_now(client.w3))
            console.print(
                f"withdraw requested; finish with `micropay channel withdraw "
                f"0x{payer.config.channel_id.hex()} --finish` after {closes_at}"
                " (the payee may claim until then)"
            )


@channel.command("list")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_obj
def list_channels(settings: Settings, as_json: bool) -> None:
    """Every channel of this payer key in the wallet.

    Channels opened here or over HTTP, with their state, what was spent, the unspent
    deposit and when a withdraw may finish."""
    with connect(settings.network) as connection:
        account = signer(settings, connection)
        statuses = _wallet(settings).statuses(connection.w3, account.address)
        if as_json:
            emit_json([_status_row(status) for status in statuses])
            return
        if not statuses:
            console.print(f"no channels of {account.address} on this chain in the wallet")
        now = _chain_now(connection.w3)
        for status in statuses:
            config = status.channel.config
            decimals, symbol = token_units(connection.w3, config.token)
            withdraw = status.withdraw_at
            console.print(f"[bold]0x{config.channel_id.hex()}[/bold]")
            console.print(
                f"  {status.state}, payee {config.payee}; spent "
                f"{show_amount(status.spent, decimals, symbol)}, unspent "
                f"{show_amount(status.unspent, decimals, symbol)}"
                + (f"; withdraw may finish at {Moment(withdraw, now)}" if withdraw else "")
            )


def _status_row(status: ChannelStatus) -> dict[str, Any]:
    config = status.channel.config
    return {
        "channel": "0x" + config.channel_id.hex(),
        "payee": config.payee,
        "token": config.token,
        "state": status.state,
        "spent": status.spent,
        "unspent": status.unspent,
        "deposited": status.chain.deposited,
        "withdraw_at": status.withdraw_at,
        "sites": list(status.channel.sites),
    }


def _chain_now(w3: Web3) -> int:
    """The chain's clock, which decides when a withdraw may finish (a dev node's clock may
    run ahead of the wall clock)."""
    return int(w3.eth.get_block("latest")["timestamp"])


@channel.command("topup")
@click.argument("channel_id")
@click.argument("amount_text", metavar="AMOUNT")
@click.pass_obj
def topup(settings: Settings, channel_id: str, amount_text: str) -> None:
    """Add to a channel's deposit: 0.05eth, 1000, 2.5units."""
    with connect(settings.network) as connection:
        wallet = _wallet(settings)
        payer = _payer(wallet, connection, signer(settings, connection), channel_id)
        client = payer.client
        if payer.finished:
            raise CliError(f"channel {channel_id} is finished: open a new one")
        decimals, symbol = token_units(client.w3, payer.config.token)
        amount = parse_amount(amount_text, decimals)
        if amount <= 0:
            raise CliError("the top-up must be more than zero")
        receipt = payer.top_up(amount)
        wallet.put(wallet.require(payer.config.channel_id).with_payer(payer))
        console.print(
            f"topped up: deposit now {show_amount(payer.deposited, decimals, symbol)} "
            f"(gas {receipt['gasUsed']:,})"
        )
