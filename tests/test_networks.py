"""Which networks get the test accounts, the demo on a loopback dev chain URL, the ape deploy
script, and the top-up error that names its command; against anvils these tests start."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_process import ROOT, checkout_env
from web3 import Web3

from micropay.channels import ChannelClient
from micropay.deployments import deploy
from micropay.devnode import anvil
from micropay.errors import PaymentRefusedError
from micropay.networks import connect, dev_keys, is_loopback_url
from micropay.payer import Payer

pytestmark = pytest.mark.standalone

BIN = Path(sys.executable).parent
MICROPAY = shutil.which("micropay", path=str(BIN))


@pytest.fixture(scope="module")
def dev_chain() -> Iterator[Web3]:
    with anvil() as w3:
        yield w3


@pytest.fixture(scope="module")
def other_chain() -> Iterator[Web3]:
    """A loopback node that is no dev chain of ours: another chain id."""
    with anvil("cancun", "--chain-id", "11155111") as w3:
        yield w3


@pytest.fixture(scope="module")
def net_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return checkout_env(tmp_path_factory.mktemp("networks") / "home")


def test_loopback_names_and_only_they_are_loopback():
    for url in (
        "http://127.0.0.1:8545",
        "http://localhost:8545/",
        "http://[::1]:8545",
        "http://127.1.2.3",
    ):
        assert is_loopback_url(url), url
    for url in (
        "http://10.0.0.1:8545",
        "https://rpc.sepolia.org",
        "http://127.0.0.1.example.com",
        "x",
    ):
        assert not is_loopback_url(url), url


def test_a_loopback_dev_chain_url_gets_the_test_accounts_and_no_other_url_does(
    dev_chain, other_chain
):
    url = dev_chain.provider.endpoint_uri
    for given in (url, url.replace("127.0.0.1", "localhost")):
        with connect(given) as connection:
            assert connection.dev_keys == dev_keys() and connection.is_local
            before = connection.w3.eth.get_block("latest")["timestamp"]
            connection.advance(100)
            assert connection.w3.eth.get_block("latest")["timestamp"] >= before + 100
    with connect(other_chain.provider.endpoint_uri) as connection:  # chain id 11155111
        assert connection.dev_keys == () and not connection.is_local


def test_demo_runs_on_a_loopback_dev_chain_url_and_keyless_commands_elsewhere_fail(
    dev_chain, other_chain, net_env
):
    demo = subprocess.run(
        [MICROPAY, "--network", dev_chain.provider.endpoint_uri, "demo", "--articles", "20"],
        capture_output=True,
        text=True,
        env=net_env,
        timeout=300,
    )
    assert demo.returncode == 0, demo.stderr
    assert "nothing lost" in demo.stdout
    refused = subprocess.run(
        [MICROPAY, "--network", other_chain.provider.endpoint_uri, "deploy"],
        capture_output=True,
        text=True,
        env=net_env,
        timeout=120,
    )
    assert refused.returncode == 1 and refused.stderr.startswith("error: missing key")
    assert "loopback dev chains" in refused.stderr and "Traceback" not in refused.stderr


def test_ape_deploy_script_deploys_payment_channels_and_streams(dev_chain, net_env):
    result = subprocess.run(
        [str(BIN / "ape"), "run", "deploy", "--network", "ethereum:local:foundry"],
        capture_output=True,
        text=True,
        # ape-foundry connects to a node already listening at its host instead of starting one
        env={**net_env, "APE_FOUNDRY_HOST": dev_chain.provider.endpoint_uri},
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    found = dict(
        re.findall(r"^(PaymentChannels|Streams)\s+(0x[0-9a-fA-F]{40})$", result.stdout, re.M)
    )
    assert set(found) == {"PaymentChannels", "Streams"}, result.stdout
    for address in found.values():
        assert len(dev_chain.eth.get_code(address)) > 100
    # the same addresses `micropay deploy` uses: the deterministic CREATE2 ones
    deployment = deploy(dev_chain, dev_keys(1)[0])
    assert (deployment.channels, deployment.streams) == (found["PaymentChannels"], found["Streams"])


def test_a_voucher_beyond_the_deposit_names_the_top_up_command(dev_chain):
    deployer, payer_key, payee = dev_keys(3)
    channels = ChannelClient(dev_chain, deploy(dev_chain, deployer).channels)
    payer = Payer.open(channels, payer_key, payee.address, 1_000)
    payer.pay(600)
    with pytest.raises(PaymentRefusedError) as refused:
        payer.pay(700)
    channel_id = "0x" + payer.config.channel_id.hex()
    assert f"top up first: micropay channel topup {channel_id} 300" in str(refused.value)
