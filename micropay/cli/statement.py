"""``micropay statement`` and ``micropay receipt verify``: what was paid, for what.

Without ``--ledger`` the statement is the reader's, from the receipts its wallet kept
(``<home>/wallet.receipts.jsonl``; no node needed); with ``--ledger URL`` it is the site's,
from the charges its ledger recorded (the node names the deployment the ledger is for).
Totals are exact base units of each asset (the zero address is ETH, in wei).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from micropay._x402 import Receipt
from micropay.cli._context import CliError, Settings, address, console, emit, session
from micropay.errors import PaymentHeaderError
from micropay.receipt_log import ReceiptLog, receipts_path
from micropay.receipts import SignedReceipt, verify_receipt
from micropay.statements import GROUPINGS, Charge, Grouping, StatementLine, summarise
from micropay.vouchers import ZERO_ADDRESS, VoucherDomain

_FORMATS = ("table", "csv", "json")


def _asset_name(asset: str | None) -> str:
    if asset is None:
        return "unknown"
    return "ETH" if asset == ZERO_ADDRESS else asset


def _charges(settings: Settings, ledger_url: str | None) -> tuple[list[Charge], str]:
    """The charges to sum, and whose statement it is."""
    if ledger_url is None:
        path = receipts_path(settings.home / "wallet.json")
        kept = ReceiptLog(path).all()
        return [Charge.of_kept(k) for k in kept], f"the reader's receipts ({path})"
    from micropay.ledger import Ledger

    if ledger_url.lower().startswith("sqlite:///"):
        file = Path(ledger_url[len("sqlite:///") :])
        if not file.is_file():
            raise CliError(f"no ledger at {ledger_url} ({file} does not exist)")
    with session(settings) as (_connection, deployment):
        domain = VoucherDomain(deployment.chain_id, deployment.channels)
        with Ledger.open(ledger_url, domain) as ledger:
            payees: dict[bytes, str] = {}
            charges = []
            for charged in ledger.charges():
                if charged.channel_id not in payees:
                    config = ledger.config(charged.channel_id)
                    payees[charged.channel_id] = "" if config is None else config.payee
                charges.append(Charge.of_receipt(charged, payees[charged.channel_id]))
            return charges, f"the site's ledger ({ledger.location})"


def _line_json(line: StatementLine, by: str) -> dict[str, Any]:
    return {
        by: line.key,
        "asset": _asset_name(line.asset),
        "count": line.count,
        "total": line.total,
        "unverified": line.unverified,
    }


@click.command()
@click.option(
    "--by",
    type=click.Choice(GROUPINGS),
    default="site",
    show_default=True,
    help="one line per site, UTC day, resource (METHOD /path) or payer",
)
@click.option(
    "--format",
    "output",
    type=click.Choice(_FORMATS),
    default="table",
    show_default=True,
    help="a table to read, CSV or JSON for scripts",
)
@click.option(
    "--ledger",
    "ledger_url",
    default=None,
    help="the site's statement from this ledger (sqlite:///… or postgresql://…) "
    "instead of the reader's receipts",
)
@click.pass_obj
def statement(settings: Settings, by: Grouping, output: str, ledger_url: str | None) -> None:
    """What was paid, for what.

    Count and total per site, day or resource, per asset: the reader's from its receipts,
    or with --ledger the site's from its charges."""
    charges, whose = _charges(settings, ledger_url)
    lines = summarise(charges, by)
    rows = [_line_json(line, by) for line in lines]
    if output == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    if output == "csv":
        writer = csv.DictWriter(
            sys.stdout, fieldnames=[by, "asset", "count", "total", "unverified"]
        )
        writer.writeheader()
        writer.writerows(rows)
        return
    if not lines:
        console.print(f"no charges in {whose}")
        return
    table = Table(title=f"statement by {by}: {whose}")
    for name in (by, "asset"):
        table.add_column(name, overflow="fold")
    for name in ("count", "total", "unverified"):
        table.add_column(name, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(*(str(row[name]) for name in (by, "asset", "count", "total", "unverified")))
    console.print(table)


@click.group()
def receipt() -> None:
    """Site-signed receipts: check one."""


def _read_receipt(text: str) -> SignedReceipt:
    """RECEIPT: a ``PAYMENT-RESPONSE`` header value, or a file holding one, or one line of
    a receipts file (JSON)."""
    path = Path(text)
    try:
        is_file = len(text) < 4096 and path.is_file()
    except OSError:
        is_file = False
    if is_file:
        lines = [line for line in path.read_text(encoding="utf8").splitlines() if line.strip()]
        if len(lines) != 1:
            raise CliError(f"{path} holds {len(lines)} receipts; give a file with one")
        text = lines[0]
    text = text.strip()
    try:
        if text.startswith("{"):
            try:
                obj = json.loads(text)
            except ValueError:
                raise CliError("the receipt is not valid JSON") from None
            decoded = Receipt.from_json(obj.get("receipt", obj) if isinstance(obj, dict) else obj)
        else:
            decoded = Receipt.decode(text)
    except PaymentHeaderError as err:
        raise CliError(f"not a receipt: {err}") from None
    if decoded.signed is None:
        raise CliError("the receipt is not signed (a site from before signed receipts?)")
    return decoded.signed


@receipt.command("verify")
@click.argument("receipt_text", metavar="RECEIPT")
@click.option("--site", default=None, help="require this signer (the site's payee address)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_obj
def verify(settings: Settings, receipt_text: str, site: str | None, as_json: bool) -> None:
    """Check a receipt's signature; print who signed it, for what.

    RECEIPT is the PAYMENT-RESPONSE value, or a file of it."""
    signed = _read_receipt(receipt_text)
    required = None if site is None else address(site, "site address")
    signer = verify_receipt(signed, required)
    emit(
        {
            "signer": signer,
            "channel": "0x" + signed.channel_id.hex(),
            "payer": signed.payer,
            "resource": signed.resource,
            "amount": signed.amount,
            "cumulative_amount": signed.cumulative_amount,
            "asset": _asset_name(signed.asset),
            "issued_at": signed.issued_at,
            "receipt_id": "0x" + signed.receipt_id.hex(),
            "chain_id": signed.domain.chain_id,
            "contract": signed.domain.verifying_contract,
        },
        as_json,
        "receipt (signature valid)",
    )


COMMANDS = [statement, receipt]
