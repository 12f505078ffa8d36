"""On-chain differential test of the voucher digest: three independent encoders must agree.

1. the contract's ``voucherDigest`` (hand-written assembly over its cached domain separator);
2. eth-account's generic EIP-712 encoder, fed the domain the contract *reports* through
   EIP-5267 ``eip712Domain()`` and a type written out here, so it shares no constant
   with the SDK;
3. the SDK's fast paths, ``VoucherDomain.digest`` and ``VoucherVerifier.digest`` (plus the
   wallet JSON of ``VoucherDomain.typed_data`` through eth-account).

A second property closes the loop on signatures: what eth-account signs over that typed
data, the contract accepts (simulated ``claim``), the SDK verifier recovers to the signer,
and the high-s twin of the same signature is refused by both.
"""

from __future__ import annotations

import pytest
from audit_profiles import ExampleLog, profile_settings
from channel_helpers import make_config
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak
from hypothesis import given
from hypothesis import strategies as st

from micropay.channels import ChannelClient, VoucherSignatureRejectedError
from micropay.errors import InvalidSignatureError
from micropay.vouchers import SECP256K1_N, Voucher, VoucherDomain, VoucherVerifier

VOUCHER_TYPES = {
    "Voucher": [
        {"name": "channelId", "type": "bytes32"},
        {"name": "cumulativeAmount", "type": "uint256"},
    ]
}
DEPOSIT = 2**112 - 1

channel_ids = st.one_of(
    st.binary(min_size=32, max_size=32),
    st.sampled_from([b"\x00" * 32, b"\xff" * 32, b"\x00" * 31 + b"\x01"]),
)
amounts = st.one_of(
    st.integers(min_value=0, max_value=2**256 - 1),
    st.sampled_from([0, 1, 2**112 - 1, 2**112, 2**255, 2**256 - 1]),
)


@pytest.fixture(scope="module")
def deployments(w3, actors, channels):  # type: ignore[no-untyped-def]
    """The session deployment and two more: three verifying contracts, three domains."""
    return [channels] + [ChannelClient.deploy(w3, actors.deployer) for _ in range(2)]


def eth_account_digest(contract: ChannelClient, channel_id: bytes, amount: int) -> bytes:
    fields, name, version, chain_id, verifying_contract, salt, extensions = (
        contract.contract.functions.eip712Domain().call()
    )
    assert (fields, salt, extensions) == (b"\x0f", b"\x00" * 32, [])
    signable = encode_typed_data(
        domain_data={
            "name": name,
            "version": version,
            "chainId": chain_id,
            "verifyingContract": verifying_contract,
        },
        message_types=VOUCHER_TYPES,
        message_data={"channelId": channel_id, "cumulativeAmount": amount},
    )
    return keccak(b"\x19" + signable.version + signable.header + signable.body)


def wallet_json_digest(domain: VoucherDomain, channel_id: bytes, amount: int) -> bytes:
    typed = domain.typed_data(channel_id, amount)
    typed["message"]["cumulativeAmount"] = amount
    signable = encode_typed_data(full_message=typed)
    return keccak(b"\x19" + signable.version + signable.header + signable.body)


def test_contract_digest_equals_eth_account_and_sdk(w3, deployments):  # type: ignore[no-untyped-def]
    log = ExampleLog("digest: contract = eth-account = SDK")

    @profile_settings(scale=25)
    @given(st.integers(min_value=0, max_value=len(deployments) - 1), channel_ids, amounts)
    def check(which: int, channel_id: bytes, amount: int) -> None:
        log.example()
        contract = deployments[which]
        domain = VoucherDomain(w3.eth.chain_id, contract.address)
        on_chain = contract.voucher_digest(channel_id, amount)
        assert on_chain == eth_account_digest(contract, channel_id, amount)
        assert on_chain == domain.digest(channel_id, amount)
        assert on_chain == VoucherVerifier(domain).digest(channel_id, amount)
        assert on_chain == wallet_json_digest(domain, channel_id, amount)

    try:
        check()
    finally:
        log.write()


@pytest.fixture(scope="module")
def open_channel(actors, channels, usd):  # type: ignore[no-untyped-def]
    """A channel holding 2**112 - 1 so any voucher up to that can be simulated."""
    authorizer = Account.from_key(b"\x42" * 32)
    usd.mint(actors.payer.address, DEPOSIT, actors.deployer)
    config = make_config(actors.payer, actors.payee, authorizer, token=usd.address)
    channels.deposit(config, DEPOSIT, actors.payer)
    return config, authorizer


def test_eth_account_signatures_are_accepted_and_their_high_s_twins_refused(
    channels, actors, open_channel
):  # type: ignore[no-untyped-def]
    config, authorizer = open_channel
    verifier = VoucherVerifier(channels.domain)
    log = ExampleLog("signatures: eth-account signed, contract and SDK agree")

    @profile_settings(scale=3)
    @given(st.integers(min_value=1, max_value=DEPOSIT))
    def check(amount: int) -> None:
        log.example()
        signed = Account.sign_typed_data(
            authorizer.key,
            channels.domain.to_json(),
            VOUCHER_TYPES,
            {"channelId": config.channel_id, "cumulativeAmount": amount},
        )
        signature = signed.r.to_bytes(32, "big") + signed.s.to_bytes(32, "big") + bytes([signed.v])
        voucher = Voucher(config.channel_id, amount, signature)
        assert verifier.recover(voucher) == bytes.fromhex(authorizer.address[2:])
        claim = channels.contract.functions.claim(config.as_tuple(), amount, amount, signature)
        assert claim.call({"from": config.payee}) == amount
        twin_s = SECP256K1_N - signed.s
        twin = signed.r.to_bytes(32, "big") + twin_s.to_bytes(32, "big") + bytes([55 - signed.v])
        # The twin is a valid ECDSA signature (eth-account recovers it) that both refuse.
        assert Account._recover_hash(signed.message_hash, signature=twin) == authorizer.address
        with pytest.raises(InvalidSignatureError):
            verifier.recover(Voucher(config.channel_id, amount, twin))
        # Refused while estimating gas, so nothing is mined.
        with pytest.raises(VoucherSignatureRejectedError):
            channels._transact(
                channels.contract.functions.claim(config.as_tuple(), amount, amount, twin),
                actors.payee,
            )

    try:
        check()
    finally:
        log.write()
