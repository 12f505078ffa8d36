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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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

console = Console(highlight=False)


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
    raise CliError(
        f"missing key: set ${settings.key_env} to a private key or pass --account ALIAS "
        "(test accounts sign only on embedded, anvil, hardhat and loopback dev chains)"
    )


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


def emit(rows: dict[str, Any], as_json: bool, title: str) -> None:
    """Print a read command's result: a two-column table, or JSON for scripts."""
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    table = Table(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows.items():
        table.add_row(key, str(value))
    console.print(table)
