"""The USDC-like test token: 6 decimals, EIP-2612 and EIP-3009 under USDC's domain shape.

x402's ``exact`` scheme pays with its ``transferWithAuthorization``; these pin that the
token enforces what the paywall relies on (one use per nonce, the window, the signer) and
that micropay's digest is the token's and eth-account's (an independent EIP-712 encoder).
"""

from __future__ import annotations

import os

import pytest
from eth_account import Account

from micropay._eip3009 import AuthorizationToken, authorize, sign_cancel
from micropay._keccak import keccak256
from micropay.errors import ContractRevertError
from micropay.tokens import TokenClient
from micropay.vouchers import sign_digest

FAR = 2**48


@pytest.fixture(scope="module")
def usdc(w3, actors):  # type: ignore[no-untyped-def]
    token = AuthorizationToken.deploy(w3, actors.deployer, "USD Coin", "USDC")
    token.mint(actors.payer.address, 10**12, actors.deployer)
    return token


def now(w3) -> int:  # type: ignore[no-untyped-def]
    return int(w3.eth.get_block("latest")["timestamp"])


def test_token_has_usdc_decimals_and_domain(w3, usdc):  # type: ignore[no-untyped-def]
    contract = usdc.contract.functions
    assert contract.decimals().call() == 6
    assert contract.version().call() == "2"
    domain = usdc.domain()
    assert (domain.name, domain.version, domain.chain_id) == ("USD Coin", "2", w3.eth.chain_id)
    assert bytes(contract.DOMAIN_SEPARATOR().call()) == domain.separator


def test_transfer_with_authorization_moves_funds_once(w3, usdc, actors):  # type: ignore[no-untyped-def]
    payer, payee, relayer = actors.payer, actors.payee, actors.relayer
    authorization, signature = authorize(usdc.domain(), payer, payee.address, 1_000, FAR)
    before = usdc.balance_of(payee.address), usdc.balance_of(payer.address)
    assert not usdc.authorization_used(payer.address, authorization.nonce)
    usdc.transfer_with_authorization(authorization, signature, relayer)
    assert usdc.balance_of(payee.address) == before[0] + 1_000
    assert usdc.balance_of(payer.address) == before[1] - 1_000
    assert usdc.authorization_used(payer.address, authorization.nonce)
    with pytest.raises(ContractRevertError) as replay:
        usdc.transfer_with_authorization(authorization, signature, relayer)
    assert replay.value.error_name == "MockUSDC_AuthorizationUsedOrCanceled"
    assert usdc.balance_of(payee.address) == before[0] + 1_000


def test_signature_from_eth_account_typed_data_is_accepted(w3, usdc, actors):  # type: ignore[no-untyped-def]
    # eth-account encodes EIP-712 on its own: its signature must pass the token and our digest.
    payer, payee = actors.payer, actors.payee
    nonce = os.urandom(32)
    domain = usdc.domain()
    message = {
        "from": payer.address,
        "to": payee.address,
        "value": 7,
        "validAfter": 0,
        "validBefore": FAR,
        "nonce": nonce,
    }
    signed = Account.sign_typed_data(
        payer.key,
        {
            "name": domain.name,
            "version": domain.version,
            "chainId": domain.chain_id,
            "verifyingContract": domain.verifying_contract,
        },
        {
            "TransferWithAuthorization": [
                {"name": "from", "type": "address"},
                {"name": "to", "type": "address"},
                {"name": "value", "type": "uint256"},
                {"name": "validAfter", "type": "uint256"},
                {"name": "validBefore", "type": "uint256"},
                {"name": "nonce", "type": "bytes32"},
            ]
        },
        message,
    )
    authorization, ours = authorize(domain, payer, payee.address, 7, FAR, nonce=nonce)
    assert authorization.digest(domain) == bytes(signed.message_hash)
    assert ours == bytes(signed.signature)
    assert authorization.signer(domain, bytes(signed.signature)) == payer.address
    usdc.transfer_with_authorization(authorization, bytes(signed.signature), actors.relayer)
    assert usdc.authorization_used(payer.address, nonce)


def test_cancelled_authorization_cannot_be_used(w3, usdc, actors):  # type: ignore[no-untyped-def]
    payer, payee = actors.payer, actors.payee
    domain = usdc.domain()
    authorization, signature = authorize(domain, payer, payee.address, 5, FAR)
    cancel = sign_cancel(domain, payer, authorization.nonce)
    usdc.cancel_authorization(payer.address, authorization.nonce, cancel, actors.relayer)
    assert usdc.authorization_used(payer.address, authorization.nonce)
    with pytest.raises(ContractRevertError) as used:
        usdc.transfer_with_authorization(authorization, signature, actors.relayer)
    assert used.value.error_name == "MockUSDC_AuthorizationUsedOrCanceled"
    with pytest.raises(ContractRevertError) as twice:
        usdc.cancel_authorization(payer.address, authorization.nonce, cancel, actors.relayer)
    assert twice.value.error_name == "MockUSDC_AuthorizationUsedOrCanceled"


def test_authorization_outside_its_window_is_refused(w3, usdc, actors):  # type: ignore[no-untyped-def]
    payer, payee = actors.payer, actors.payee
    domain = usdc.domain()
    early, early_sig = authorize(domain, payer, payee.address, 5, FAR, valid_after=now(w3) + 3600)
    with pytest.raises(ContractRevertError) as not_yet:
        usdc.transfer_with_authorization(early, early_sig, actors.relayer)
    assert not_yet.value.error_name == "MockUSDC_AuthorizationNotYetValid"
    late, late_sig = authorize(domain, payer, payee.address, 5, now(w3) - 1)
    with pytest.raises(ContractRevertError) as expired:
        usdc.transfer_with_authorization(late, late_sig, actors.relayer)
    assert expired.value.error_name == "MockUSDC_AuthorizationExpired"
    assert not usdc.authorization_used(payer.address, early.nonce)


def test_authorization_signed_by_another_key_or_altered_is_refused(w3, usdc, actors):  # type: ignore[no-untyped-def]
    payer, payee, stranger = actors.payer, actors.payee, actors.stranger
    domain = usdc.domain()
    forged, forged_sig = authorize(domain, stranger, payee.address, 5, FAR)
    # The stranger signs a transfer out of the payer's balance.
    claimed = type(forged)(payer.address, payee.address, 5, 0, FAR, forged.nonce)
    with pytest.raises(ContractRevertError) as wrong_signer:
        usdc.transfer_with_authorization(claimed, forged_sig, actors.relayer)
    assert wrong_signer.value.error_name == "MockUSDC_InvalidSignature"
    honest, signature = authorize(domain, payer, payee.address, 5, FAR)
    redirected = type(honest)(payer.address, stranger.address, 5, 0, FAR, honest.nonce)
    with pytest.raises(ContractRevertError):
        usdc.transfer_with_authorization(redirected, signature, actors.relayer)
    # Another token's domain (same name, other address) does not accept it either.
    other = AuthorizationToken.deploy(w3, actors.deployer, "USD Coin", "USDC")
    other.mint(payer.address, 100, actors.deployer)
    with pytest.raises(ContractRevertError):
        other.transfer_with_authorization(honest, signature, actors.relayer)


def test_receive_with_authorization_only_by_the_payee(w3, usdc, actors):  # type: ignore[no-untyped-def]
    payer, payee = actors.payer, actors.payee
    domain = usdc.domain()
    nonce = os.urandom(32)
    typehash = keccak256(
        b"ReceiveWithAuthorization(address from,address to,uint256 value,uint256 validAfter,"
        b"uint256 validBefore,bytes32 nonce)"
    )
    struct = keccak256(
        typehash
        + bytes(12)
        + bytes.fromhex(payer.address[2:])
        + bytes(12)
        + bytes.fromhex(payee.address[2:])
        + (9).to_bytes(32, "big")
        + bytes(32)
        + FAR.to_bytes(32, "big")
        + nonce
    )
    sig = sign_digest(domain.digest(struct), payer)
    call = usdc.contract.functions.receiveWithAuthorization(
        payer.address, payee.address, 9, 0, FAR, nonce, sig
    )
    with pytest.raises(ContractRevertError) as by_relayer:
        usdc._transact(call, actors.relayer)
    assert by_relayer.value.error_name == "MockUSDC_CallerMustBePayee"
    before = usdc.balance_of(payee.address)
    usdc._transact(call, payee)
    assert usdc.balance_of(payee.address) == before + 9
    assert usdc.authorization_used(payer.address, nonce)


def test_permit_works_under_version_2(w3, usdc, actors):  # type: ignore[no-untyped-def]
    payer, spender = actors.payer, actors.relayer
    domain = usdc.domain()
    signed = Account.sign_typed_data(
        payer.key,
        {
            "name": domain.name,
            "version": "2",
            "chainId": domain.chain_id,
            "verifyingContract": domain.verifying_contract,
        },
        {
            "Permit": [
                {"name": "owner", "type": "address"},
                {"name": "spender", "type": "address"},
                {"name": "value", "type": "uint256"},
                {"name": "nonce", "type": "uint256"},
                {"name": "deadline", "type": "uint256"},
            ]
        },
        {
            "owner": payer.address,
            "spender": spender.address,
            "value": 42,
            "nonce": usdc.contract.functions.nonces(payer.address).call(),
            "deadline": FAR,
        },
    )
    token = TokenClient(w3, usdc.address)
    call = usdc.contract.functions.permit(
        payer.address,
        spender.address,
        42,
        FAR,
        signed.v,
        signed.r.to_bytes(32, "big"),
        signed.s.to_bytes(32, "big"),
    )
    usdc._transact(call, spender)
    assert token.allowance(payer.address, spender.address) == 42
