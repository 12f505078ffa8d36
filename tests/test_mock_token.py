"""The mock ERC-20 with EIP-2612 permit that later issues fund their actors with."""

from __future__ import annotations

import ape
import pytest
from eth_account import Account

from micropay.tokens import TokenClient

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
MAX_DEADLINE = 2**256 - 1
DOMAIN_TYPE = b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"


def sign_permit(token, owner, spender, value, deadline):  # type: ignore[no-untyped-def]
    """Sign an EIP-2612 permit with the SDK (eth-account's generic EIP-712 encoder)."""
    client = TokenClient(ape.chain.provider.web3, token.address)
    return client.sign_permit(Account.from_key(owner.private_key), spender.address, value, deadline)


def test_mint_and_transfer_move_balances(token, accounts):
    alice, bob = accounts[1], accounts[2]
    token.mint(alice, 1_000, sender=alice)
    token.transfer(bob, 400, sender=alice)
    assert token.balanceOf(alice) == 600
    assert token.balanceOf(bob) == 400
    assert token.totalSupply() == 1_000


def test_transfer_above_balance_reverts_with_named_error(token, accounts):
    alice, bob = accounts[1], accounts[2]
    token.mint(alice, 10, sender=alice)
    with ape.reverts(
        token.MockERC20Permit_InsufficientBalance, account=alice, balance=10, needed=11
    ):
        token.transfer(bob, 11, sender=alice)


def test_domain_separator_matches_eip712_of_name_version_chain_contract(token):
    from eth_abi import encode
    from eth_utils import keccak

    expected = keccak(
        encode(
            ["bytes32", "bytes32", "bytes32", "uint256", "address"],
            [
                keccak(DOMAIN_TYPE),
                keccak(b"Mock Token"),
                keccak(b"1"),
                ape.chain.chain_id,
                token.address,
            ],
        )
    )
    assert bytes(token.DOMAIN_SEPARATOR()) == expected


def test_permit_sets_allowance_and_lets_spender_pull(token, accounts):
    owner, spender = accounts[1], accounts[2]
    token.mint(owner, 500, sender=owner)
    v, r, s = sign_permit(token, owner, spender, 300, MAX_DEADLINE)
    # Anyone may submit the permit: here the spender pays the gas.
    token.permit(owner, spender, 300, MAX_DEADLINE, v, r, s, sender=spender)
    assert token.allowance(owner, spender) == 300
    assert token.nonces(owner) == 1
    token.transferFrom(owner, spender, 300, sender=spender)
    assert token.balanceOf(spender) == 300
    assert token.allowance(owner, spender) == 0


def test_permit_replay_is_refused(token, accounts):
    owner, spender = accounts[1], accounts[2]
    v, r, s = sign_permit(token, owner, spender, 1, MAX_DEADLINE)
    token.permit(owner, spender, 1, MAX_DEADLINE, v, r, s, sender=spender)
    with ape.reverts(token.MockERC20Permit_InvalidPermitSignature):
        token.permit(owner, spender, 1, MAX_DEADLINE, v, r, s, sender=spender)


def test_expired_permit_is_refused(token, accounts):
    owner, spender = accounts[1], accounts[2]
    deadline = ape.chain.pending_timestamp - 1
    v, r, s = sign_permit(token, owner, spender, 1, deadline)
    with ape.reverts(token.MockERC20Permit_PermitExpired):
        token.permit(owner, spender, 1, deadline, v, r, s, sender=spender)


def test_permit_signed_by_someone_else_is_refused(token, accounts):
    owner, spender, mallory = accounts[1], accounts[2], accounts[3]
    v, r, s = sign_permit(token, mallory, spender, 1, MAX_DEADLINE)
    with ape.reverts(token.MockERC20Permit_InvalidPermitSignature, owner=owner.address):
        token.permit(owner, spender, 1, MAX_DEADLINE, v, r, s, sender=spender)


def test_high_s_twin_of_a_valid_permit_is_refused(token, accounts):
    owner, spender = accounts[1], accounts[2]
    v, r, s = sign_permit(token, owner, spender, 1, MAX_DEADLINE)
    high_s = (SECP256K1_N - int.from_bytes(s, "big")).to_bytes(32, "big")
    with ape.reverts(token.MockERC20Permit_InvalidPermitSignature):
        token.permit(owner, spender, 1, MAX_DEADLINE, 55 - v, r, high_s, sender=spender)


@pytest.mark.parametrize("decimals", [6, 18])
def test_decimals_are_configurable(project, deployer, decimals):
    token = project.MockERC20Permit.deploy("T", "T", decimals, sender=deployer)
    assert token.decimals() == decimals
