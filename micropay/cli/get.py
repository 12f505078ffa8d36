"""``micropay get URL``: the reader's side of a paywall from the command line.

It is the SDK's :class:`~micropay.http_client.HttpPayer` with the CLI's key and wallet
(``<home>/wallet.json``, the one ``micropay channel list`` shows), so a channel opened here
can be listed, topped up and withdrawn with ``micropay channel``. The policy caps come from
the options, and nothing is deposited or signed beyond them.
"""

from __future__ import annotations

import sys

import click
import httpx

from micropay._x402 import PAYMENT_RESPONSE, Receipt
from micropay.cli._context import (
    CliError,
    Settings,
    emit,
    parse_amount,
    show_amount,
    signer,
    token_address,
    token_units,
)
from micropay.cli.channel import _wallet
from micropay.errors import PaymentHeaderError
from micropay.http_client import DepositPolicy, HttpPayer, PaymentPolicy, PaymentTransport
from micropay.networks import connect


@click.command()
@click.argument("url")
@click.option(
    "--max-price",
    "max_price_text",
    required=True,
    help="the most one request may cost, e.g. 0.00001eth, 20gwei, 1000, 0.01units",
)
@click.option("--max-spend", "max_spend_text", default=None, help="the most paid to this site")
@click.option("--token", default=None, help="pay in this ERC-20 (default: ETH only)")
@click.option(
    "--max-deposit",
    "max_deposit_text",
    default=None,
    help="the most a new channel (or a top-up) locks; default: 1000 prices at most",
)
@click.option(
    "--deposit-requests",
    default=100,
    show_default=True,
    help="how many requests at the price a new channel's deposit covers",
)
@click.option("--json", "as_json", is_flag=True, help="print status, receipt and body as JSON")
@click.pass_obj
def get(
    settings: Settings,
    url: str,
    max_price_text: str,
    max_spend_text: str | None,
    token: str | None,
    max_deposit_text: str | None,
    deposit_requests: int,
    as_json: bool,
) -> None:
    """Fetch a URL, paying its HTTP 402.

    It pays from a channel of your key (opened on first contact), and prints the body. The
    receipt (what was charged, the channel's total) goes to stderr, the body to stdout.
    """
    if not url.startswith(("http://", "https://")):
        raise CliError(f"bad URL {url!r}: expected http:// or https://")
    if deposit_requests <= 0:
        raise CliError("--deposit-requests must be more than zero")
    with connect(settings.network) as connection:
        asset = token_address(token)
        decimals, symbol = token_units(connection.w3, asset)
        max_price = parse_amount(max_price_text, decimals)
        max_spend = parse_amount(max_spend_text, decimals) if max_spend_text else None
        max_deposit = parse_amount(max_deposit_text, decimals) if max_deposit_text else None
        policy = PaymentPolicy(
            max_price=max_price,
            max_spend_per_site=max_spend,
            assets=frozenset({asset}),
            deposit=DepositPolicy(requests=deposit_requests, maximum=max_deposit),
        )
        payer = HttpPayer(
            connection.w3, signer(settings, connection), policy, store=_wallet(settings)
        )
        try:
            with httpx.Client(transport=PaymentTransport(payer), timeout=60) as client:
                response = client.get(url)
        except httpx.HTTPError as err:
            raise CliError(f"cannot fetch {url}: {err}") from None
        receipt = _receipt(response)
        if as_json:
            emit(
                {
                    "status": response.status_code,
                    "channel_id": f"0x{receipt.channel_id.hex()}" if receipt else None,
                    "charged": receipt.amount if receipt else 0,
                    "channel_total": receipt.cumulative_amount if receipt else None,
                    "body": response.text,
                },
                True,
                "micropay get",
            )
        else:
            if receipt is not None:
                click.echo(
                    f"paid {show_amount(receipt.amount, decimals, symbol)} on channel "
                    f"0x{receipt.channel_id.hex()} (total {receipt.cumulative_amount})",
                    err=True,
                )
            text = response.text
            sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")
            sys.stdout.flush()
        if response.status_code >= 400:
            raise CliError(f"{url} answered HTTP {response.status_code}: {_reason(response)}")


def _receipt(response: httpx.Response) -> Receipt | None:
    value = response.headers.get(PAYMENT_RESPONSE)
    if value is None:
        return None
    try:
        return Receipt.decode(value)
    except PaymentHeaderError:  # HttpPayer checked it already; a free page has none
        return None


def _reason(response: httpx.Response) -> str:
    try:
        found = response.json().get("error")
    except ValueError:
        found = None
    return str(found) if found else response.reason_phrase
