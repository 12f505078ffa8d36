"""`micropay stream` end to end on its own anvil: open-ended streams in ETH and in a
6-decimal ERC-20 through every command, a fixed stream handed on, and every bad input
one `error: …` line with exit 1.

Money is checked to the wei: ETH on accounts that did not send the transaction (so gas
never blurs it) or with the gas of the transaction's receipt, tokens directly, and every
figure against the contract's own accounting.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from web3 import Web3

from micropay.deployments import DeploymentRegistry
from micropay.devnode import anvil
from micropay.networks import dev_keys
from micropay.stream_model import RATE_SCALE
from micropay.streams import FixedStreamConfig, OpenStreamConfig, StreamsClient
from micropay.tokens import TokenClient

pytestmark = pytest.mark.standalone

SENDER, RECIPIENT, OTHER, STRANGER = dev_keys(4)
MICROPAY = shutil.which("micropay", path=str(Path(sys.executable).parent))
GWEI = 10**9
MONTH = 30 * 86_400


@pytest.fixture(scope="module")
def streams_node():
    with anvil() as w3:
        yield w3


@pytest.fixture(scope="module")
def streams_cli(streams_node, tmp_path_factory):
    """Run `micropay …` against the module's anvil, after one `micropay deploy`."""
    folder = tmp_path_factory.mktemp("cli-streams")
    env = {
        **os.environ,
        "MICROPAY_LOCAL_RPC": streams_node.provider.endpoint_uri,
        "MICROPAY_HOME": str(folder / "home"),
        "MICROPAY_NETWORK": "anvil",
        "NO_COLOR": "1",
        "COLUMNS": "80",
    }
    env.pop("MICROPAY_PRIVATE_KEY", None)

    def invoke(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [MICROPAY, *args], capture_output=True, text=True, env=env, cwd=folder, timeout=120
        )
        if ok:
            assert result.returncode == 0, result.stderr
        return result

    invoke("deploy")
    invoke.home = folder / "home"  # type: ignore[attr-defined]
    return invoke


@pytest.fixture(scope="module")
def streams_sdk(streams_node, streams_cli) -> StreamsClient:
    """The SDK's view of the contract `micropay deploy` recorded, to check the CLI by."""
    deployment = DeploymentRegistry(streams_cli.home / "deployments.json").find(streams_node)
    return StreamsClient(streams_node, deployment.streams)


@pytest.fixture(scope="module")
def usdc(streams_node) -> TokenClient:
    """A USDC-like token (6 decimals) the sender holds 1,000,000 units of."""
    token = TokenClient.deploy(streams_node, SENDER, "USD Coin", "USDC", 6)
    token.mint(SENDER.address, 10**12, SENDER)
    return token


def advance(w3: Web3, seconds: int) -> None:
    w3.provider.make_request("evm_increaseTime", [seconds])
    w3.provider.make_request("evm_mine", [])


def stream_id_in(output: str) -> bytes:
    match = re.search(r"0x([0-9a-f]{64})", output)
    assert match, output
    return bytes.fromhex(match.group(1))


def last_gas(w3: Web3, sender: str) -> int:
    """What the latest block's transaction from ``sender`` cost it (anvil mines one a block)."""
    block = w3.eth.get_block("latest", full_transactions=True)
    [tx] = [t for t in block["transactions"] if t["from"] == sender]
    receipt = w3.eth.get_transaction_receipt(tx["hash"])
    return int(receipt["gasUsed"]) * int(receipt["effectiveGasPrice"])


def open_stream(cli: Any, *options: str) -> subprocess.CompletedProcess[str]:
    """`micropay stream open` as the sender, paying the recipient."""
    result: subprocess.CompletedProcess[str] = cli(
        "stream", "open", "--recipient", RECIPIENT.address, *options
    )
    return result


def one_error(result: subprocess.CompletedProcess[str], message: str) -> None:
    assert result.returncode == 1, result.stdout
    assert result.stderr.startswith("error: ") and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def status_json(cli: Any, stream_id: bytes) -> dict[str, Any]:
    status: dict[str, Any] = json.loads(
        cli("stream", "status", "0x" + stream_id.hex(), "--json").stdout
    )
    return status


def test_an_eth_open_ended_stream_through_every_command(streams_cli, streams_sdk, streams_node):
    w3, cli, sdk = streams_node, streams_cli, streams_sdk
    opened = open_stream(cli, "--rate", "1gwei/s", "--deposit", "0.001eth")
    assert "0.000000001 ETH/s = 0.0000864 ETH/day (1000000000 wei/s)" in opened.stdout
    sid = stream_id_in(opened.stdout)
    sid_text = "0x" + sid.hex()
    config = sdk.stream_config(sid)
    assert isinstance(config, OpenStreamConfig) and config.sender == SENDER.address
    assert sdk.open_state(config).deposited == 10**15

    advance(w3, 1000)
    cli("--dev-account", "3", "stream", "deposit", sid_text, "0.0005eth")  # anyone may
    assert sdk.open_state(config).deposited == 15 * 10**14

    assert "paused" in cli("stream", "pause", sid_text).stdout
    one_error(cli("stream", "pause", sid_text, ok=False), "is already paused")
    paused = sdk.open_state(config)
    advance(w3, 500)  # paused: nothing accrues
    resumed = cli("stream", "resume", sid_text)  # at the rate before the pause
    assert "(1000000000 wei/s)" in resumed.stdout
    assert sdk.open_state(config).streamed_at_snapshot == paused.streamed_at_snapshot
    one_error(
        cli("--dev-account", "1", "stream", "pause", sid_text, ok=False),
        f"only the stream's sender may do this, not {RECIPIENT.address}",
    )
    cli("stream", "adjust", sid_text, "--rate", "2gwei/s")
    assert sdk.open_state(config).rate_per_second == 2 * GWEI * RATE_SCALE

    advance(w3, 100)
    before = w3.eth.get_balance(OTHER.address)
    to_other = cli("--dev-account", "1", "stream", "withdraw", sid_text, "--to", OTHER.address)
    first = sdk.open_state(config).withdrawn
    assert first > 0 and w3.eth.get_balance(OTHER.address) - before == first
    assert f"({first} wei) to {OTHER.address}, as the recipient" in to_other.stdout

    advance(w3, 100)
    before = w3.eth.get_balance(RECIPIENT.address)
    by_sender = cli("stream", "withdraw", sid_text)
    second = sdk.open_state(config).withdrawn - first
    assert second > 0 and w3.eth.get_balance(RECIPIENT.address) - before == second
    assert f"({second} wei) to the recipient {RECIPIENT.address}" in by_sender.stdout

    one_error(cli("stream", "refund", sid_text, "0.01eth", ok=False), "is not yet owed")
    before = w3.eth.get_balance(SENDER.address)
    refunded = cli("stream", "refund", sid_text, "0.0001eth")
    assert "(100000000000000 wei) to the sender" in refunded.stdout
    gas = last_gas(w3, SENDER.address)
    assert w3.eth.get_balance(SENDER.address) - before == 10**14 - gas

    moved = cli("--dev-account", "1", "stream", "transfer", sid_text, "--to", OTHER.address)
    assert f"now pays {OTHER.address}" in moved.stdout
    status = status_json(cli, sid)
    state, amounts = sdk.open_state(config), sdk.open_amounts(config)
    assert status["stream"] == sid_text and status["kind"] == "open-ended"
    assert status["recipient"] == OTHER.address and status["status"] == "streaming"
    assert (status["deposited"], status["refunded"]) == (15 * 10**14, 10**14)
    assert status["withdrawn"] == first + second == state.withdrawn
    assert status["remaining"] == 15 * 10**14 - 10**14 - first - second
    assert (status["streamed"], status["withdrawable"], status["refundable"]) == (
        amounts.streamed,
        amounts.withdrawable,
        amounts.refundable,
    )
    assert status["rate_per_second"] == 2 * GWEI * RATE_SCALE
    assert status["rate_scale"] == RATE_SCALE and status["runs_dry_at"] == state.runs_dry_at()
    assert w3.eth.get_balance(sdk.address) == status["remaining"]  # solvency, to the wei


def test_an_erc20_open_ended_stream_approves_and_adds_up(
    streams_cli, streams_sdk, streams_node, usdc
):
    w3, cli, sdk = streams_node, streams_cli, streams_sdk
    opened = open_stream(
        cli, "--token", usdc.address, "--rate", "1000units/month", "--deposit", "100units"
    )
    assert "33.3333333333 USDC/day (385.802469135802469135 base units/s)" in opened.stdout
    sid = stream_id_in(opened.stdout)
    sid_text, config = "0x" + sid.hex(), sdk.stream_config(sid)
    assert isinstance(config, OpenStreamConfig) and config.token == usdc.address
    assert sdk.open_state(config).rate_per_second == 1000 * 10**6 * RATE_SCALE // MONTH
    cli("stream", "deposit", sid_text, "50units")  # the allowance was used up: approved again
    assert usdc.balance_of(sdk.address) == 150 * 10**6
    assert usdc.balance_of(SENDER.address) == 10**12 - 150 * 10**6

    cli("stream", "pause", sid_text)
    cli("stream", "resume", sid_text, "--rate", "2000units/month")
    cli("stream", "adjust", sid_text, "--rate", "0.01units/s")
    assert sdk.open_state(config).rate_per_second == 10**4 * RATE_SCALE

    advance(w3, 3600)
    cli("--dev-account", "1", "stream", "withdraw", sid_text)
    first = sdk.open_state(config).withdrawn
    assert first > 36 * 10**6 and usdc.balance_of(RECIPIENT.address) == first
    advance(w3, 60)
    by_sender = cli("stream", "withdraw", sid_text)
    second = sdk.open_state(config).withdrawn - first
    assert usdc.balance_of(RECIPIENT.address) == first + second
    assert f"USDC ({second} base units) to the recipient {RECIPIENT.address}" in by_sender.stdout

    cli("stream", "refund", sid_text, "10units")
    assert usdc.balance_of(SENDER.address) == 10**12 - 140 * 10**6
    cli("--dev-account", "1", "stream", "transfer", sid_text, "--to", OTHER.address)
    status = status_json(cli, sid)
    assert status["recipient"] == OTHER.address and status["token"] == usdc.address
    assert (status["deposited"], status["refunded"]) == (150 * 10**6, 10 * 10**6)
    assert status["remaining"] == 140 * 10**6 - first - second == usdc.balance_of(sdk.address)


def test_a_fixed_stream_is_transferred_and_a_finished_one_shows_nothing_remaining(
    streams_cli, streams_sdk, streams_node
):
    w3, cli, sdk = streams_node, streams_cli, streams_sdk
    now = int(w3.eth.get_block("latest")["timestamp"])
    config = FixedStreamConfig(
        SENDER.address, RECIPIENT.address, "0x" + "00" * 20, 10**6, now + 1, now + 1001, salt=7
    )
    sdk.create_fixed(config, SENDER)
    sid_text = "0x" + config.stream_id.hex()
    moved = cli("--dev-account", "1", "stream", "transfer", sid_text, "--to", OTHER.address)
    assert f"now pays {OTHER.address}" in moved.stdout
    assert sdk.recipient_of(config) == OTHER.address
    advance(w3, 400)
    refunded = sdk.cancel(config, SENDER).amount
    earned = sdk.fixed_amounts(config).streamed
    assert sdk.withdraw(config, OTHER).amount == earned == 10**6 - refunded
    status = status_json(cli, config.stream_id)
    assert status["kind"] == "fixed" and status["recipient"] == OTHER.address
    assert status["status"] == "depleted" and status["withdrawn"] == earned
    assert (status["withdrawable"], status["to_stream"], status["remaining"]) == (0, 0, 0)
    assert status["refunded"] == refunded and status["canceled_at"] > 0


@pytest.mark.parametrize(
    "args, message",
    [
        (("stream", "status", "0x" + "ab" * 32), "no stream 0x" + "ab" * 32 + " on this"),
        (
            ("stream", "open", "--recipient", RECIPIENT.address, "--rate", "0"),
            "bad rate '0': a stream must stream something",
        ),
    ],
)
def test_bad_stream_input_is_one_line(streams_cli, args, message):
    one_error(streams_cli(*args, ok=False), message)
