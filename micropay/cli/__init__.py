"""The ``micropay`` command line: nodes, deployment, channels, streams, a site's cash-out and
watchtower, paywall, demo.

Every command takes the global options before it (``micropay --network anvil channel
status 0x…``). Read commands print tables, or JSON with ``--json``. User errors are one
line on stderr and exit 1 (2 for bad usage); nothing prints a traceback unless
MICROPAY_DEBUG=1.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from micropay import __version__
from micropay.cli._context import CliError, Settings
from micropay.errors import ContractRevertError, MicropayError


@click.group()
@click.version_option(__version__, prog_name="micropay")
@click.option(
    "--network",
    default=lambda: os.environ.get("MICROPAY_NETWORK", "anvil"),
    show_default="anvil, or $MICROPAY_NETWORK",
    help="embedded, anvil, hardhat, or an http(s) RPC URL",
)
@click.option(
    "--key-env",
    default="MICROPAY_PRIVATE_KEY",
    show_default=True,
    help="environment variable holding the signing key",
)
@click.option("--account", default=None, help="ape account alias to sign with instead")
@click.option(
    "--dev-account",
    default=0,
    show_default=True,
    help="without a key, which test account signs: on embedded, anvil, hardhat, and a loopback"
    " RPC URL serving a dev chain (chain id 31337, test accounts funded); never elsewhere",
)
@click.option(
    "--home",
    default=lambda: os.environ.get("MICROPAY_HOME", ".micropay"),
    show_default=".micropay, or $MICROPAY_HOME",
    help="folder for deployments and the payer's channels",
)
@click.pass_context
def cli(
    ctx: click.Context, network: str, key_env: str, account: str | None, dev_account: int, home: str
) -> None:
    """micropay: Ethereum micropayments with channels, streams and HTTP 402."""
    given = ctx.get_parameter_source("network") != click.core.ParameterSource.DEFAULT
    ctx.obj = Settings(network, key_env, account, dev_account, Path(home), network_given=given)


def _register() -> None:
    from micropay.cli import channel, get, ops, site, statement, stream

    cli.add_command(channel.channel)
    cli.add_command(stream.stream)
    cli.add_command(get.get)
    for command in (*ops.COMMANDS, *site.COMMANDS, *statement.COMMANDS):
        cli.add_command(command)


_register()


def main() -> None:
    """Console-script entry: run the CLI, turning every expected failure into one line."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.UsageError as err:
        click.echo(f"error: {err.format_message()}", err=True)
        sys.exit(2)
    except click.ClickException as err:
        err.show()
        sys.exit(1)
    except ContractRevertError as err:
        if os.environ.get("MICROPAY_DEBUG"):
            raise
        # The contract's reason in words, its error's name after it for a search.
        name = f" ({err.error_name})" if err.error_name != "Unknown" else ""
        click.echo(f"error: {err.detail}{name}", err=True)
        sys.exit(1)
    except (MicropayError, CliError, OSError, ValueError) as err:
        if os.environ.get("MICROPAY_DEBUG"):
            raise
        click.echo(f"error: {err}", err=True)
        sys.exit(1)
    except Exception as err:  # a bug: still one line, with the way to see more
        if os.environ.get("MICROPAY_DEBUG"):
            raise
        click.echo(
            f"error: unexpected {type(err).__name__}: {err} (MICROPAY_DEBUG=1 shows the traceback)",
            err=True,
        )
        sys.exit(1)
