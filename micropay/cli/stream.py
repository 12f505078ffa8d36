"""``micropay stream``: fixed streams (``create``, ``cancel``), open-ended streams (``open``,
``deposit``, ``pause``, ``resume``, ``adjust``, ``refund``), and ``status``, ``withdraw`` and
``transfer`` for either kind.

A stream is named by its id alone: its kind and parameters are read back from the chain
(:meth:`~micropay.streams.StreamsClient.stream_config`), so no local state is kept.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal, localcontext
from typing import Any

import click
from eth_account.signers.local import LocalAccount

from micropay.cli._context import (
    CliError,
    Moment,
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
from micropay.networks import Connection
from micropay.stream_model import RATE_SCALE, FixedStatus, rate_for
from micropay.streams import (
    FixedStreamConfig,
    OpenStreamConfig,
    StreamsClient,
    UnknownStreamError,
)
from micropay.tokens import TokenClient
from micropay.vouchers import ZERO_ADDRESS

StreamConfig = FixedStreamConfig | OpenStreamConfig

_PERIODS = {
    "s": 1,
    "sec": 1,
    "second": 1,
    "min": 60,
    "minute": 60,
    "h": 3_600,
    "hour": 3_600,
    "d": 86_400,
    "day": 86_400,
    "week": 7 * 86_400,
    "month": 30 * 86_400,
    "year": 365 * 86_400,
}
_RATE_HELP = (
    "amount per period: 1gwei/s, 0.1eth/day, 1000units/month (30 days), /min, /h, /week, "
    "/year; a bare amount is per second"
)
_TOKEN_HELP = "ERC-20 address (default: ETH); approved for the amount first if needed"


def parse_rate(text: str, decimals: int) -> int:
    """A rate option as the contract's ``ratePerSecond`` (base units a second times RATE_SCALE).

    Per-period amounts keep sub-unit rates exact enough: 1000 USDC a month is 385.8 base
    units a second, which no whole amount per second can say.
    """
    amount_text, _, period = text.partition("/")
    seconds = _PERIODS.get(period.strip().lower() or "s")
    if seconds is None:
        raise CliError(
            f"bad rate {text!r}: the period after / is s, min, h, day, week, month or year"
        )
    rate = rate_for(parse_amount(amount_text, decimals), seconds)
    if rate <= 0:
        raise CliError(f"bad rate {text!r}: a stream must stream something (pause it to stop it)")
    return rate


def show_rate(rate_per_second: int, decimals: int = 18, symbol: str = "ETH") -> str:
    """``0.000000001 ETH/s = 0.0000864 ETH/day (1000000000 wei/s)``: a scaled contract rate
    in token units a second and a day (12 significant digits), the exact base units beside."""
    with localcontext() as context:
        context.prec = 100
        base = Decimal(rate_per_second) / RATE_SCALE
        human = base / (Decimal(10) ** decimals)
        exact = f"{_decimal(base)} {'wei' if symbol == 'ETH' else 'base units'}/s"
        context.prec = 12
        per_second, per_day = _decimal(+human), _decimal(human * 86_400)
    return f"{per_second} {symbol}/s = {per_day} {symbol}/day ({exact})"


def _decimal(value: Decimal) -> str:
    return format(value.normalize(), "f") if value else "0"


def _allow(client: StreamsClient, token: str, key: LocalAccount, amount: int) -> None:
    """ERC-20 money reaches the contract by its own pull: approve it first where short."""
    if token != ZERO_ADDRESS and amount:
        TokenClient(client.w3, token).ensure_allowance(client.address, amount, key)


def _salt() -> bytes:
    """A random salt, so the same sender can open the same stream again."""
    return os.urandom(8).rjust(32, b"\0")


def _say(text: str) -> None:
    console.print(text, soft_wrap=True)  # ids are never wrapped or cut


@dataclass(frozen=True)
class _Stream:
    """A stream named on the command line, with what every command about it needs."""

    settings: Settings
    connection: Connection
    client: StreamsClient
    config: StreamConfig
    decimals: int
    symbol: str

    @property
    def id(self) -> str:
        return "0x" + self.config.stream_id.hex()

    def key(self) -> LocalAccount:
        return signer(self.settings, self.connection)

    def money(self, amount: int) -> str:
        return show_amount(amount, self.decimals, self.symbol)

    def rate(self, rate_per_second: int) -> str:
        return show_rate(rate_per_second, self.decimals, self.symbol)

    def amount(self, text: str, what: str) -> int:
        value = parse_amount(text, self.decimals)
        if value <= 0:
            raise CliError(f"the {what} must be more than zero")
        return value

    def parse_rate(self, text: str) -> int:
        return parse_rate(text, self.decimals)

    def open_only(self, what: str) -> OpenStreamConfig:
        """Refuse a fixed stream for an open-ended stream's command, saying why."""
        if isinstance(self.config, FixedStreamConfig):
            raise CliError(f"{self.id} is a fixed stream: only open-ended streams can be {what}")
        return self.config


@contextmanager
def _stream(settings: Settings, text: str) -> Iterator[_Stream]:
    """Connect and find the stream with id ``text``, of either kind."""
    with session(settings) as (connection, deployment):
        client = StreamsClient(connection.w3, deployment.streams)
        try:
            config = client.stream_config(hex32(text, "stream id"))
        except UnknownStreamError:
            raise CliError(
                f"no stream {text} on this deployment (neither a fixed nor an open-ended one)"
            ) from None
        yield _Stream(settings, connection, client, config, *token_units(client.w3, config.token))


@click.group()
def stream() -> None:
    """Payment streams: fixed or open-ended.

    A fixed stream pays an amount between a start and an end; an open-ended one pays a rate
    per second out of deposits."""


@stream.command("create", short_help="Create and fund a fixed stream.")
@click.option("--recipient", required=True, help="who the stream pays")
@click.option("--amount", "amount_text", required=True, help="total, e.g. 1eth or 1000")
@click.option("--duration", required=True, type=int, help="seconds from start to end")
@click.option(
    "--cliff", default=0, show_default=True, help="seconds after start before anything streams"
)
@click.option("--start-in", default=0, show_default=True, help="seconds from now until the start")
@click.option("--token", default=None, help=_TOKEN_HELP)
@click.option("--non-cancelable", is_flag=True, help="the sender can never cancel it")
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
            salt=_salt(),
        )
        _allow(client, token_addr, key, amount)
        receipt = client.create_fixed(config, key)
        _say(
            f"created stream [bold]0x{config.stream_id.hex()}[/bold]: "
            f"{show_amount(amount, decimals, symbol)} over {duration} s "
            f"(gas {receipt.gas_used:,})"
        )


@stream.command("open", short_help="Open and fund an open-ended stream.")
@click.option("--recipient", required=True, help="who the stream pays")
@click.option("--rate", "rate_text", required=True, help=_RATE_HELP)
@click.option(
    "--deposit",
    "deposit_text",
    default="0",
    show_default=True,
    help="first deposit, e.g. 0.1eth; anyone can add more with `stream deposit`",
)
@click.option("--token", default=None, help=_TOKEN_HELP)
@click.pass_obj
def open_stream(
    settings: Settings, recipient: str, rate_text: str, deposit_text: str, token: str | None
) -> None:
    """Open an open-ended stream: it pays the rate from now until paused, funded by deposits
    (what streams beyond them is owed as debt)."""
    with session(settings) as (connection, deployment):
        client = StreamsClient(connection.w3, deployment.streams)
        token_addr = token_address(token)
        decimals, symbol = token_units(client.w3, token_addr)
        rate = parse_rate(rate_text, decimals)
        deposit = parse_amount(deposit_text, decimals)
        key = signer(settings, connection)
        config = OpenStreamConfig(
            key.address, address(recipient, "recipient"), token_addr, salt=_salt()
        )
        _allow(client, token_addr, key, deposit)
        receipt = client.create_open(config, rate, deposit, key)
        _say(
            f"opened stream [bold]0x{config.stream_id.hex()}[/bold]: "
            f"{show_rate(rate, decimals, symbol)}, deposit "
            f"{show_amount(receipt.amount, decimals, symbol)} (gas {receipt.gas_used:,})"
        )


@stream.command("status", short_help="Show a stream now, fixed or open-ended.")
@click.argument("stream_id")
@click.option("--json", "as_json", is_flag=True, help="print JSON (amounts in base units)")
@click.pass_obj
def status(settings: Settings, stream_id: str, as_json: bool) -> None:
    """Show a stream's parameters and its amounts now, fixed or open-ended."""
    with _stream(settings, stream_id) as target:
        config, client = target.config, target.client

        chain_now = int(target.connection.w3.eth.get_block("latest")["timestamp"])

        def money(value: int) -> Any:
            return value if as_json else target.money(value)

        def when(value: int | None) -> Moment | None:
            """A time on the stream's clock (the chain's): ISO date and how far from now."""
            return Moment(value, chain_now) if value else None

        rows: dict[str, Any] = {
            "stream": target.id,
            "kind": "fixed" if isinstance(config, FixedStreamConfig) else "open-ended",
            "sender": config.sender,
            "recipient": client.recipient_of(config),
            "token": config.token if as_json or not config.is_eth else "ETH",
        }
        if isinstance(config, FixedStreamConfig):
            state = client.fixed_state(config)
            amounts = client.fixed_amounts(config)
            stage = client.fixed_status(config)
            refunded = state.refunded(config.schedule)
            over = state.canceled_at or stage in (FixedStatus.SETTLED, FixedStatus.DEPLETED)
            rows |= {
                "amount": money(config.amount),
                "start": when(config.start),
                "cliff": when(config.cliff),
                "end": when(config.end),
                "streamed": money(amounts.streamed),
                "withdrawn": money(state.withdrawn),
                "withdrawable": money(amounts.withdrawable),
                # Canceled or ended: nothing more will stream, whatever the schedule said.
                "to_stream": money(0 if over else config.amount - amounts.streamed),
                "refunded": money(refunded),
                "remaining": money(config.amount - state.withdrawn - refunded),
                "status": stage.name.lower(),
                "cancelable": config.cancelable,
                "canceled_at": when(state.canceled_at),
            }
        else:
            stored, now = client.open_state(config), client.open_amounts(config)
            rate = stored.rate_per_second
            rows |= {
                "rate_per_second": rate if as_json else target.rate(rate),
                "deposited": money(stored.deposited),
                "streamed": money(now.streamed),
                "withdrawn": money(stored.withdrawn),
                "withdrawable": money(now.withdrawable),
                "refunded": money(stored.refunded),
                "refundable": money(now.refundable),
                "debt": money(now.debt),
                "remaining": money(stored.balance),
                "runs_dry_at": when(stored.runs_dry_at()),
                "status": client.open_status(config).name.lower(),
            }
            if as_json:
                rows["rate_scale"] = RATE_SCALE
        emit(rows, as_json, "stream")


@stream.command("withdraw", short_help="Pay out what has streamed to the recipient.")
@click.argument("stream_id")
@click.option("--to", default=None, help="recipient only: pay to this address instead of its own")
@click.pass_obj
def withdraw(settings: Settings, stream_id: str, to: str | None) -> None:
    """Pay out what has streamed. The recipient may name where; anyone else (the sender, a
    relayer) can only pay the recipient, and pays the gas."""
    with _stream(settings, stream_id) as target:
        key = target.key()
        recipient = target.client.recipient_of(target.config)
        destination = address(to, "--to") if to else recipient
        receipt = target.client.withdraw(target.config, key, destination)
        if destination != recipient:
            where = f"{destination}, as the recipient {recipient} asked"
        elif key.address == recipient:
            where = f"you, the recipient {recipient}"
        else:
            where = f"the recipient {recipient} (a stream pays out only to its recipient)"
        _say(f"withdrew {target.money(receipt.amount)} to {where}")


@stream.command("transfer", short_help="Recipient: hand a stream to a new recipient.")
@click.argument("stream_id")
@click.option("--to", "new_recipient", required=True, help="the stream's new recipient")
@click.pass_obj
def transfer(settings: Settings, stream_id: str, new_recipient: str) -> None:
    """As the recipient: hand the stream, with everything streamed and not yet withdrawn,
    to a new recipient (either kind; the sender cannot)."""
    with _stream(settings, stream_id) as target:
        new = address(new_recipient, "--to")
        target.client.transfer(target.config, new, target.key())
        _say(f"stream {target.id} now pays {new}")


@stream.command("cancel", short_help="Sender: cancel a fixed stream, refund the rest.")
@click.argument("stream_id")
@click.pass_obj
def cancel(settings: Settings, stream_id: str) -> None:
    """As the sender of a fixed stream: stop it; what streamed stays the recipient's, the
    rest returns."""
    with _stream(settings, stream_id) as target:
        if isinstance(target.config, OpenStreamConfig):
            raise CliError(
                f"{target.id} is open-ended: `stream pause` it, then `stream refund` its balance"
            )
        receipt = target.client.cancel(target.config, target.key())
        _say(f"canceled: {target.money(receipt.amount)} returned to the sender")


@stream.command("deposit", short_help="Top up an open-ended stream (anyone may).")
@click.argument("stream_id")
@click.argument("amount_text", metavar="AMOUNT")
@click.pass_obj
def deposit(settings: Settings, stream_id: str, amount_text: str) -> None:
    """Add AMOUNT (e.g. 0.1eth) to an open-ended stream; anyone may. It pays any debt
    first."""
    with _stream(settings, stream_id) as target:
        config = target.open_only("topped up (fixed ones are funded in full)")
        amount = target.amount(amount_text, "deposit")
        key = target.key()
        _allow(target.client, config.token, key, amount)
        receipt = target.client.top_up(config, amount, key)
        _say(f"deposited {target.money(receipt.amount)} into stream {target.id}")


@stream.command("pause", short_help="Sender: pause an open-ended stream.")
@click.argument("stream_id")
@click.pass_obj
def pause(settings: Settings, stream_id: str) -> None:
    """As the sender: stop an open-ended stream accruing; what it owes stays owed."""
    with _stream(settings, stream_id) as target:
        target.client.pause(target.open_only("paused"), target.key())
        _say(f"paused stream {target.id}")


@stream.command("resume", short_help="Sender: resume a paused open-ended stream.")
@click.argument("stream_id")
@click.option(
    "--rate", "rate_text", default=None, help=_RATE_HELP + " (default: the rate before the pause)"
)
@click.pass_obj
def resume(settings: Settings, stream_id: str, rate_text: str | None) -> None:
    """As the sender: restart a paused open-ended stream."""
    with _stream(settings, stream_id) as target:
        config = target.open_only("resumed")
        rate = target.parse_rate(rate_text) if rate_text else target.client.last_rate(config)
        target.client.resume(config, rate, target.key())
        _say(f"resumed stream {target.id} at {target.rate(rate)}")


@stream.command("adjust", short_help="Sender: change an open-ended stream's rate.")
@click.argument("stream_id")
@click.option("--rate", "rate_text", required=True, help=_RATE_HELP)
@click.pass_obj
def adjust(settings: Settings, stream_id: str, rate_text: str) -> None:
    """As the sender: change a running open-ended stream's rate from now on."""
    with _stream(settings, stream_id) as target:
        config = target.open_only("adjusted")
        rate = target.parse_rate(rate_text)
        target.client.adjust_rate(config, rate, target.key())
        _say(f"stream {target.id} now streams {target.rate(rate)}")


@stream.command("refund", short_help="Sender: take back deposit not yet owed.")
@click.argument("stream_id")
@click.argument("amount_text", metavar="AMOUNT")
@click.pass_obj
def refund(settings: Settings, stream_id: str, amount_text: str) -> None:
    """As the sender: take back AMOUNT of an open-ended stream's balance not yet owed (it
    shrinks every second while the stream runs: pause first to take it all)."""
    with _stream(settings, stream_id) as target:
        config = target.open_only("refunded (cancel a fixed one)")
        amount = target.amount(amount_text, "refund")
        receipt = target.client.refund(config, amount, target.key())
        _say(f"refunded {target.money(receipt.amount)} to the sender {config.sender}")
