"""``micropay node|deploy|serve|demo`` (a site's ``watch`` and ``settle`` are in ``site``)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from micropay.cli._context import CliError, Settings, console, emit, session, signer
from micropay.deployments import deploy as deploy_contracts
from micropay.devnode import node_command, port_is_free, run_until_stopped
from micropay.networks import connect


@click.command()
@click.argument("kind", type=click.Choice(["anvil", "hardhat"]), default="anvil")
@click.option("--port", default=8545, show_default=True)
def node(kind: str, port: int) -> None:
    """Run a local node on 127.0.0.1 until Ctrl-C, SIGTERM or SIGHUP (its test accounts are
    funded); the node stops with this command."""
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
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def deploy(settings: Settings, as_json: bool) -> None:
    """Deploy PaymentChannels and Streams (same address wherever the CREATE2 proxy exists)."""
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
    """The whole story: channel over HTTP 402, settlement, replay, watchtower, salary stream.

    Runs on the embedded chain unless --network names another (anvil and hardhat get a
    throw-away node of their own).
    """
    from micropay import demo as story

    network = settings.network if settings.network_given else "embedded"
    summary = story.main(network, articles)
    if not summary.conserved:
        raise CliError("the demo's balances do not add up")


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8402, show_default=True)
@click.option("--price", default=10**13, show_default=True, help="wei per article")
@click.option("--ledger", default=None, help="voucher ledger URL (default: in memory)")
@click.pass_obj
def serve(settings: Settings, host: str, port: int, price: int, ledger: str | None) -> None:
    """Serve the example paywalled content site (needs a deployment on --network)."""
    import uvicorn

    from micropay.example_site import create_site

    with session(settings) as (connection, deployment):
        site = create_site(
            connection.w3,
            site_key=signer(settings, connection),
            contract=deployment.channels,
            price=price,
            ledger_url=ledger,
        )
        console.print(
            f"micropay news on http://{host}:{port} (payee {site.payee.account.address},"
            f" {price} wei an article; Ctrl-C stops)"
        )
        uvicorn.run(site.app, host=host, port=port, log_level="warning")


COMMANDS: list[click.Command] = [node, deploy, demo, serve]
