"""Clients refuse addresses that do not hold what they need, before anything is sent; the
deployment registry names a chain by its id and genesis hash."""

from __future__ import annotations

import json

import pytest
from eth_utils.address import to_checksum_address

from micropay.channels import ChannelClient
from micropay.deployments import Deployment, DeploymentError, DeploymentRegistry, genesis_hash
from micropay.errors import ContractCodeError
from micropay.streams import StreamsClient
from micropay.tokens import TokenClient

NOWHERE = to_checksum_address("0x" + "5e" * 20)  # no code on any test chain


def test_channel_client_refuses_an_address_without_code(w3):
    with pytest.raises(ContractCodeError, match=r"no micropay PaymentChannels code at .*no code"):
        ChannelClient(w3, NOWHERE)


def test_streams_client_refuses_other_code(w3, channels):
    with pytest.raises(ContractCodeError, match=r"no micropay Streams code at .*other code"):
        StreamsClient(w3, channels.address)


def test_channel_client_accepts_its_deployment_with_immutables_filled(w3, channels, actors):
    again = ChannelClient.attach(w3, channels.address)
    assert again.domain == channels.domain
    streams = StreamsClient.deploy(w3, actors.deployer)
    assert StreamsClient(w3, streams.address).address == streams.address


def test_token_client_refuses_an_address_without_code(w3):
    with pytest.raises(ContractCodeError, match="is not an ERC-20 token: the address holds no"):
        TokenClient(w3, NOWHERE)


def test_token_client_refuses_a_contract_that_is_no_token(w3, channels):
    with pytest.raises(ContractCodeError, match=r"is not an ERC-20 token: totalSupply\(\)"):
        TokenClient(w3, channels.address)


def test_token_client_accepts_an_erc20(w3, usd):
    assert TokenClient(w3, usd.address).decimals() == 6


def _deployment(w3, channels, streams: str) -> Deployment:
    return Deployment(w3.eth.chain_id, genesis_hash(w3), channels.address, streams, False)


@pytest.mark.offchain
def test_registry_keys_a_chain_by_id_and_genesis(tmp_path):
    registry = DeploymentRegistry(tmp_path / "deployments.json")
    here = Deployment(31337, "0x" + "aa" * 32, NOWHERE, NOWHERE, True)
    registry.record(here)
    assert registry.get(31337, here.genesis) == here
    with pytest.raises(DeploymentError, match="is from another node"):
        registry.get(31337, "0x" + "bb" * 32)


@pytest.mark.offchain
def test_registry_ignores_and_replaces_entries_without_a_genesis(tmp_path):
    path = tmp_path / "deployments.json"
    old = {"chain_id": 31337, "channels": NOWHERE, "streams": NOWHERE, "deterministic": True}
    path.write_text(json.dumps({"31337": old}))
    registry = DeploymentRegistry(path)
    with pytest.raises(DeploymentError, match="or from an older micropay; run `micropay deploy`"):
        registry.get(31337, "0x" + "aa" * 32)
    registry.record(Deployment(31337, "0x" + "aa" * 32, NOWHERE, NOWHERE, True))
    assert list(json.loads(path.read_text())) == ["31337:0x" + "aa" * 32]


def test_registry_find_refuses_a_recorded_address_without_the_code(w3, channels, tmp_path):
    registry = DeploymentRegistry(tmp_path / "deployments.json")
    registry.record(_deployment(w3, channels, NOWHERE))
    with pytest.raises(DeploymentError, match=r"no micropay Streams code at .*`micropay deploy`"):
        registry.find(w3)


def test_registry_find_returns_a_deployment_that_is_there(w3, channels, actors, tmp_path):
    registry = DeploymentRegistry(tmp_path / "deployments.json")
    streams = StreamsClient.deploy(w3, actors.deployer)
    registry.record(_deployment(w3, channels, streams.address))
    assert registry.find(w3).streams == streams.address
