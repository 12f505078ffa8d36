"""``micropay node|deploy|serve|demo`` (a site's ``watch`` and ``settle`` are in ``site``,
the reader's ``get`` in ``get``)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import click
from eth_account import Account

from micropay._contracts import RawCall, send_transaction
from micropay.cli._context import (
    CliError,
    Settings,
    console,
    emit,
    parse_amount,
    show_amount,
    signer,
    token_address,
    token_units,
)
from micropay.deployments import deploy as deploy_contracts
from micropay.devnode import node_command, port_is_free, run_until_stopped
from micropay.networks import connect, is_loopback_url
from micropay.vouchers import ZERO_ADDRESS


@click.command()
@click.argument("kind", type=click.Choice(["anvil", "hardhat"]), default="anvil")
@click.option("--port", default=8545, show_default=True, help="port on 127.0.0.1 to listen on")
def node(kind: str, port: int) -> None:
    """Run a local dev node until Ctrl-C.

    The node (anvil or hardhat) listens on 127.0.0.1 with its test accounts funded, and
    stops with this command on Ctrl-C, SIGTERM or SIGHUP."""
    if not port_is_free(port):
        raise CliError(
            f"127.0.0.1:{port} is already in use (another node?): stop it or pass --port"
        )
    with tempfile.TemporaryDirectory(prefix="micropay-node-") as folder:
        command = node_command(kind, port, Path(folder))
        if kind == "anvil":
            command.remove("--silent")  # show the accounts and the requests
        console.print(f"starting {kind} on http://127.0.0.1:{port} (Ctrl-C stops it)")
        status = run_until_stopped(command)
    if status is not None:
        raise CliError(f"{kind} stopped by itself with exit status {status} (see its output above)")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="print the addresses as JSON")
@click.pass_obj
def deploy(settings: Settings, as_json: bool) -> None:
    """Deploy PaymentChannels and Streams.

    Both land at the same addresses on every chain where the CREATE2 proxy exists."""
    with connect(settings.network) as connection:
        deployment = deploy_contracts(connection.w3, signer(settings, connection))
        if connection.name == "embedded":  # the chain ends with this process: keep no record
            recorded = "nothing (the embedded chain ends with this command)"
        else:
            settings.registry.record(deployment)
            recorded = str(settings.registry.path)
        emit(
            {
                "network": connection.name,
                "chain id": deployment.chain_id,
                "PaymentChannels": deployment.channels,
                "Streams": deployment.streams,
                "deterministic (CREATE2)": deployment.deterministic,
                "recorded in": recorded,
            },
            as_json,
            "micropay deployment",
        )


@click.command()
@click.option("--articles", default=1_000, show_default=True, help="paid articles to read")
@click.pass_obj
def demo(settings: Settings, articles: int) -> None:
    """Tell the whole story, from deposit to summary.

    A channel paid over HTTP 402, one settlement, a replay refused, the watchtower, a salary
    stream. Runs on the embedded chain unless --network names another (anvil and hardhat
    get a throw-away node of their own; a loopback URL must serve a dev chain).
    """
    from micropay import demo as story

    network = settings.network if settings.network_given else "embedded"
    summary = story.main(network, articles)
    if not summary.conserved:
        raise CliError("the demo's balances do not add up")


READER_FUNDING = 10**18  # what serve's reader key gets on the embedded chain: 1 ETH


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on")
@click.option("--port", default=8402, show_default=True, help="port to listen on")
@click.option(
    "--price",
    "price_text",
    default="0.00001eth",
    show_default=True,
    help="per article: 0.00001eth, 20gwei, 1000 (base units), 0.01units (with --token)",
)
@click.option("--token", default=None, help="ERC-20 address the price is in (default: ETH)")
@click.option("--ledger", default=None, help="voucher ledger URL (default: in memory)")
@click.pass_obj
def serve(
    settings: Settings,
    host: str,
    port: int,
    price_text: str,
    token: str | None,
    ledger: str | None,
) -> None:
    """Serve the example paywalled content site until Ctrl-C.

    On the embedded chain it deploys the contracts, funds a reader key and serves the
    chain's JSON-RPC at /rpc (loopback only), then prints the command that pays from that
    reader. Elsewhere it needs a deployment on --network (``micropay deploy``).
    """
    import uvicorn

    from micropay.example_site import ARTICLES, create_site

    embedded = settings.network == "embedded"
    if embedded and not is_loopback_host(host):
        raise CliError(
            f"--host {host} is not loopback: the embedded chain's RPC (its test keys' chain) "
            "is served on 127.0.0.1, ::1 or localhost only; run a node for a public site"
        )
    with connect(settings.network) as connection:
        w3 = connection.w3
        site_key = signer(settings, connection)
        asset = token_address(token)
        if embedded and asset != ZERO_ADDRESS:
            raise CliError("the embedded chain starts empty, with no ERC-20 on it: price in ETH")
        decimals, symbol = token_units(w3, asset)
        price = parse_amount(price_text, decimals)
        if price <= 0:
            raise CliError("--price must be more than zero")
        if embedded:
            contract = deploy_contracts(w3, site_key).channels
        else:
            contract = settings.registry.find(w3).channels
        site = create_site(
            w3, site_key=site_key, contract=contract, price=price, asset=asset, ledger_url=ledger
        )
        base = f"http://{_url_host(host)}:{port}"
        app: Any = site.app
        console.print(
            f"micropay news on {base} (payee {site.payee.account.address}, "
            f"{show_amount(price, decimals, symbol)} an article, PaymentChannels {contract})"
        )
        article = f"{base}/articles/{next(iter(ARTICLES))}"
        token_option = f" --token {asset}" if asset != ZERO_ADDRESS else ""
        if embedded:
            from micropay._chain_rpc import RPC_PATH, ChainRpc, with_rpc

            reader = Account.create()
            send_transaction(w3, RawCall(w3, reader.address), site_key, value=READER_FUNDING)
            app = with_rpc(site.app, ChainRpc(w3))
            console.print(
                f"the embedded chain's JSON-RPC: {base}{RPC_PATH} (lives as long as this "
                f"process)\na reader key funded with {show_amount(READER_FUNDING)}; "
                "pay for an article from it with:\n"
            )
            reader_env, network = (
                f"MICROPAY_PRIVATE_KEY=0x{bytes(reader.key).hex()} ",
                base + RPC_PATH,
            )
        else:
            console.print("pay for an article with a funded key of yours:\n")
            reader_env, network = "MICROPAY_PRIVATE_KEY=0x… ", settings.network
        click.echo(
            f"  {reader_env}micropay --network {network} get --max-price {price}"
            f"{token_option} {article}\n"
        )
        console.print("Ctrl-C stops")
        uvicorn.run(app, host=host, port=port, log_level="warning")


def is_loopback_host(host: str) -> bool:
    """Whether listening on ``host`` keeps a server to this machine."""
    return is_loopback_url(f"http://{_url_host(host)}/")


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


COMMANDS: list[click.Command] = [node, deploy, demo, serve]
