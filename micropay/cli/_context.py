"""What every CLI command shares: network, signer, deployments, amounts and output.

User errors (a bad address, an unknown network, a missing key, a revert) surface as one
``error: …`` line and a non-zero exit, never a traceback: commands raise ``CliError`` or
a :class:`~micropay.errors.MicropayError`, and ``micropay.cli.main`` prints it.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import click
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.address import is_address, to_checksum_address
from rich.console import Console
from rich.table import Table
from web3 import Web3

from micropay.deployments import Deployment, DeploymentRegistry
from micropay.errors import ContractCodeError
from micropay.networks import Connection, connect
from micropay.tokens import TokenClient
from micropay.vouchers import ZERO_ADDRESS

console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 1_000)
"""Soft wrap, and no width limit when piped: the CLI never breaks a line, so an id printed
in 80 columns or piped into a file stays whole and can be copied."""


class CliError(click.ClickException):
    """A user error, printed as one line."""

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.message}", err=True)


@dataclass(frozen=True)
class Settings:
    """The global options, as given on the command line."""

    network: str
    key_env: str
    account: str | None
    dev_account: int
    home: Path
    network_given: bool = True

    @property
    def registry(self) -> DeploymentRegistry:
        return DeploymentRegistry(self.home / "deployments.json")


@contextmanager
def session(settings: Settings) -> Iterator[tuple[Connection, Deployment]]:
    """Connect and find the deployment for this chain, checked to be on it."""
    with connect(settings.network) as connection:
        yield connection, settings.registry.find(connection.w3)


def signer(settings: Settings, connection: Connection) -> LocalAccount:
    """The key that signs: an ape account, a key in the environment, or a local dev key."""
    if settings.account:
        keystore = Path.home() / ".ape" / "accounts" / f"{settings.account}.json"
        if not keystore.is_file():
            raise CliError(f"no ape account named {settings.account!r} ({keystore} is missing)")
        passphrase = os.environ.get("MICROPAY_PASSPHRASE") or getpass.getpass(
            f"passphrase for {settings.account}: "
        )
        try:
            secret = Account.decrypt(json.loads(keystore.read_text()), passphrase)
        except (ValueError, KeyError) as err:
            raise CliError(f"cannot unlock ape account {settings.account!r}: {err}") from None
        account: LocalAccount = Account.from_key(secret)
        return account
    raw = os.environ.get(settings.key_env)
    if raw:
        try:
            key: LocalAccount = Account.from_key(raw.strip())
        except (ValueError, TypeError):
            raise CliError(f"${settings.key_env} does not hold a valid private key") from None
        return key
    if connection.dev_keys:
        if not 0 <= settings.dev_account < len(connection.dev_keys):
            raise CliError(f"--dev-account must be between 0 and {len(connection.dev_keys) - 1}")
        return connection.dev_keys[settings.dev_account]
    raise CliError(f"missing key: set ${settings.key_env} to a private key or pass --account ALIAS")


def address(value: str, what: str = "address") -> str:
    if not is_address(value):
        raise CliError(f"bad {what}: {value!r} is not an Ethereum address")
    return to_checksum_address(value)


def token_address(value: str | None) -> str:
    if value in (None, "", "eth", "ETH"):
        return ZERO_ADDRESS
    return address(value, "token address")


_AMOUNT = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(eth|ether|gwei|wei|units)?\s*$", re.I)
_SCALE = {"eth": 18, "ether": 18, "gwei": 9, "wei": 0}


def hex32(text: str, what: str) -> bytes:
    """A channel or stream id: 32 bytes of hex, with or without 0x."""
    try:
        value = bytes.fromhex(text[2:] if text.startswith("0x") else text)
    except ValueError:
        value = b""
    if len(value) != 32:
        raise CliError(f"bad {what} {text!r}: expected 32 bytes of hex")
    return value


def token_units(w3: Web3, token: str) -> tuple[int, str]:
    """Decimals and symbol to show amounts of ``token`` (the zero address: ETH)."""
    if token == ZERO_ADDRESS:
        return 18, "ETH"
    try:
        erc20 = TokenClient(w3, token)
    except ContractCodeError as err:
        raise CliError(f"{err}; check the token address and --network") from None
    return erc20.decimals(), str(erc20.contract.functions.symbol().call())


def parse_amount(text: str, decimals: int = 18) -> int:
    """``1000`` (base units), ``0.5eth``, ``20gwei``, ``3wei`` or ``2.5units`` (token units)."""
    match = _AMOUNT.match(text)
    if not match:
        raise CliError(f"bad amount {text!r}: use 1000, 0.5eth, 20gwei, 3wei or 2.5units")
    number, unit = match.group(1), (match.group(2) or "").lower()
    if not unit:
        if "." in number:
            raise CliError(f"bad amount {text!r}: plain numbers are base units; add a unit")
        return int(number)
    scale = decimals if unit == "units" else _SCALE[unit]
    try:
        value = Decimal(number) * (Decimal(10) ** scale)
    except InvalidOperation:
        raise CliError(f"bad amount {text!r}") from None
    if value != value.to_integral_value():
        raise CliError(f"bad amount {text!r}: finer than one base unit")
    return int(value)


def show_amount(base_units: int, decimals: int = 18, symbol: str = "ETH") -> str:
    """``1.5 ETH (1500000000000000000 wei)``: human units with the exact integer beside."""
    human = Decimal(base_units) / (Decimal(10) ** decimals)
    text = format(human.normalize(), "f") if base_units else "0"
    unit = "wei" if symbol == "ETH" else "base units"
    return f"{text} {symbol} ({base_units} {unit})"


@dataclass(frozen=True)
class Money:
    """An amount for :func:`emit`: the exact integer in JSON, human units beside it in a table."""

    base_units: int
    decimals: int = 18
    symbol: str = "ETH"

    def __str__(self) -> str:
        return show_amount(self.base_units, self.decimals, self.symbol)


@dataclass(frozen=True)
class Moment:
    """A unix time for :func:`emit`: the raw integer in JSON; in a table an ISO date in UTC,
    how far it is from ``now`` (the chain's clock where it matters, which a dev node may have
    moved ahead of the wall clock) and the raw integer, so it can be pasted back."""

    timestamp: int
    now: int | None = None

    def __str__(self) -> str:
        when = datetime.fromtimestamp(self.timestamp, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        now = int(time.time()) if self.now is None else self.now
        return f"{when} ({relative(self.timestamp - now)}; {self.timestamp})"


def relative(seconds: int) -> str:
    """``in 2 h 5 min``, ``3 d ago``, ``now``: the two largest units, enough to act on."""
    if seconds == 0:
        return "now"
    left = abs(seconds)
    parts: list[str] = []
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60), ("s", 1)):
        if left >= size:
            parts.append(f"{left // size} {unit}")
            left %= size
        if len(parts) == 2 or (parts and left == 0):
            break
    text = " ".join(parts)
    return f"in {text}" if seconds > 0 else f"{text} ago"


def snake_case(key: str) -> str:
    """A row's label as a JSON key: ``withdraw closes at`` and ``PaymentChannels`` become
    ``withdraw_closes_at`` and ``payment_channels``."""
    split = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", key)
    return re.sub(r"[^a-z0-9]+", "_", split.lower()).strip("_")


def json_value(value: Any) -> Any:
    """What a value of a row is in JSON: amounts in base units, times as unix seconds."""
    if isinstance(value, Money):
        return value.base_units
    if isinstance(value, Moment):
        return value.timestamp
    if isinstance(value, dict):
        return {snake_case(str(key)): json_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_value(item) for item in value]
    return value


def emit_json(value: Any) -> None:
    """Print a result as JSON for scripts: snake_case keys, integers for money and times."""
    click.echo(json.dumps(json_value(value), indent=2, default=str))


def emit(rows: dict[str, Any], as_json: bool, title: str) -> None:
    """Print a read command's result: one ``label  value`` line a row, or JSON for scripts.

    Rows are lines, not a boxed table, so an id or an address is never folded to fit 80
    columns. ``None`` shows as ``-`` (and ``null`` in JSON)."""
    if as_json:
        emit_json(rows)
        return
    console.print(f"[bold]{title}[/bold]")
    width = max(len(key) for key in rows) if rows else 0
    for key, value in rows.items():
        shown = "-" if value is None else str(value)
        console.print(f"  {key.ljust(width)}  {shown}", markup=False)


def table(title: str, *columns: str, ids: tuple[str, ...] = ()) -> Table:
    """A multi-column table whose ``ids`` columns (channel ids, addresses) are never folded:
    the other columns wrap instead."""
    grid = Table(title=title, title_justify="left")
    for name in columns:
        if name in ids:
            grid.add_column(name, no_wrap=True, overflow="ignore", min_width=10)
        else:
            grid.add_column(name, overflow="fold")
    return grid
