"""``micropay node|deploy`` (and, as their modules land, ``watch``, ``serve`` and ``demo``)."""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
from pathlib import Path

import click

from micropay.cli._context import Settings, console, emit, signer
from micropay.deployments import deploy as deploy_contracts
from micropay.devnode import find_binary
from micropay.networks import connect


@click.command()
@click.argument("kind", type=click.Choice(["anvil", "hardhat"]), default="anvil")
@click.option("--port", default=8545, show_default=True)
def node(kind: str, port: int) -> None:
    """Run a local node on 127.0.0.1 until Ctrl-C (its test accounts are funded)."""
    with tempfile.TemporaryDirectory(prefix="micropay-node-") as folder:
        if kind == "anvil":
            command = [
                find_binary("anvil"),
                "--port",
                str(port),
                "--host",
                "127.0.0.1",
                "--hardfork",
                "cancun",
            ]
        else:
            config = Path(folder) / "hardhat.config.js"
            config.write_text(
                'module.exports = { networks: { hardhat: { hardfork: "cancun" } } };\n'
            )
            command = [
                find_binary("hardhat"),
                "--config",
                str(config),
                "node",
                "--hostname",
                "127.0.0.1",
                "--port",
                str(port),
            ]
        console.print(f"starting {kind} on http://127.0.0.1:{port} (Ctrl-C stops it)")
        with contextlib.suppress(KeyboardInterrupt):
            subprocess.run(command, check=False)


@click.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def deploy(settings: Settings, as_json: bool) -> None:
    """Deploy PaymentChannels and Streams (same address wherever the CREATE2 proxy exists)."""
    with connect(settings.network) as connection:
        deployment = deploy_contracts(connection.w3, signer(settings, connection))
        settings.registry.record(deployment)
        emit(
            {
                "network": connection.name,
                "chain id": deployment.chain_id,
                "PaymentChannels": deployment.channels,
                "Streams": deployment.streams,
                "deterministic (CREATE2)": deployment.deterministic,
                "recorded in": str(settings.registry.path),
            },
            as_json,
            "micropay deployment",
        )


COMMANDS: list[click.Command] = [node, deploy]
