"""``micropay stream create|status|withdraw|cancel`` (fixed streams)."""

from __future__ import annotations

import os
from typing import Any

import click

from micropay.cli._context import (
    CliError,
    Settings,
    address,
    console,
    emit,
    hex32,
    parse_amount,
    session,
    show_amount,
    signer,
    token_address,
    token_units,
)
from micropay.errors import ContractRevertError
from micropay.streams import FixedStreamConfig, StreamsClient
from micropay.tokens import TokenClient
from micropay.vouchers import ZERO_ADDRESS


def _config(client: StreamsClient, text: str) -> FixedStreamConfig:
    try:
        return client.fixed_config(hex32(text, "stream id"))
    except ContractRevertError:
        raise CliError(f"no fixed stream {text} on this deployment") from None


@click.group()
def stream() -> None:
    """Fixed payment streams: money paid out per second between a start and an end."""


@stream.command("create")
@click.option("--recipient", required=True)
@click.option("--amount", "amount_text", required=True, help="total, e.g. 1eth or 1000")
@click.option("--duration", required=True, type=int, help="seconds from start to end")
@click.option(
    "--cliff", default=0, show_default=True, help="seconds after start before anything streams"
)
@click.option("--start-in", default=0, show_default=True, help="seconds from now until the start")
@click.option("--token", default=None, help="ERC-20 address (default: ETH)")
@click.option("--non-cancelable", is_flag=True)
@click.pass_obj
def create(
    settings: Settings,
    recipient: str,
    amount_text: str,
    duration: int,
    cliff: int,
    start_in: int,
    token: str | None,
    non_cancelable: bool,
) -> None:
    """Create and fund a fixed stream."""
    if duration <= 0 or cliff < 0 or cliff > duration or start_in < 0:
        raise CliError("need duration > 0, 0 <= cliff <= duration and start-in >= 0")
    with session(settings) as (connection, deployment):
        client = StreamsClient(connection.w3, deployment.streams)
        token_addr = token_address(token)
        decimals, symbol = token_units(client.w3, token_addr)
        amount = parse_amount(amount_text, decimals)
        key = signer(settings, connection)
        now = int(connection.w3.eth.get_block("latest")["timestamp"])
        start = now + max(start_in, 1)
        config = FixedStreamConfig(
            sender=key.address,
            recipient=address(recipient, "recipient"),
            token=token_addr,
            amount=amount,
            start=start,
            end=start + duration,
            cliff=start + cliff if cliff else 0,
            cancelable=not non_cancelable,
            salt=os.urandom(8).rjust(32, b"\0"),
        )
        if token_addr != ZERO_ADDRESS:
            erc20 = TokenClient(connection.w3, token_addr)
            if erc20.allowance(key.address, client.address) < amount:
                erc20.approve(client.address, amount, key)
        receipt = client.create_fixed(config, key)
        console.print(
            f"created stream [bold]0x{config.stream_id.hex()}[/bold]: "
            f"{show_amount(amount, decimals, symbol)} over {duration} s "
            f"(gas {receipt.gas_used:,})"
        )


@stream.command("status")
@click.argument("stream_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def status(settings: Settings, stream_id: str, as_json: bool) -> None:
    """Show a fixed stream's schedule and amounts now."""
    with session(settings) as (connection, deployment):
        client = StreamsClient(connection.w3, deployment.streams)
        config = _config(client, stream_id)
        amounts = client.fixed_amounts(config)
        decimals, symbol = token_units(client.w3, config.token)

        def money(value: int) -> Any:
            return value if as_json else show_amount(value, decimals, symbol)

        emit(
            {
                "stream": "0x" + config.stream_id.hex(),
                "sender": config.sender,
                "recipient": client.recipient_of(config),
                "amount": money(config.amount),
                "start": config.start,
                "cliff": config.cliff or "-",
                "end": config.end,
                "streamed": money(amounts.streamed),
                "withdrawable": money(amounts.withdrawable),
                "status": client.fixed_status(config).name.lower(),
                "cancelable": config.cancelable,
            },
            as_json,
            "stream",
        )


@stream.command("withdraw")
@click.argument("stream_id")
@click.option("--to", default=None, help="recipient only: pay to this address instead")
@click.pass_obj
def withdraw(settings: Settings, stream_id: str, to: str | None) -> None:
    """Pay out what has streamed (to the recipient, or where the recipient says)."""
    with session(settings) as (connection, deployment):
        client = StreamsClient(connection.w3, deployment.streams)
        config = _config(client, stream_id)
        receipt = client.withdraw(
            config, signer(settings, connection), address(to, "--to") if to else None
        )
        decimals, symbol = token_units(client.w3, config.token)
        console.print(f"withdrew {show_amount(receipt.amount, decimals, symbol)}")


@stream.command("cancel")
@click.argument("stream_id")
@click.pass_obj
def cancel(settings: Settings, stream_id: str) -> None:
    """As the sender: stop the stream; what streamed stays the recipient's, the rest returns."""
    with session(settings) as (connection, deployment):
        client = StreamsClient(connection.w3, deployment.streams)
        config = _config(client, stream_id)
        receipt = client.cancel(config, signer(settings, connection))
        decimals, symbol = token_units(client.w3, config.token)
        console.print(f"canceled: {show_amount(receipt.amount, decimals, symbol)} returned")
