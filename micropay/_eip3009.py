"""EIP-3009 transfer authorizations: the signed one-off payment x402's ``exact`` scheme moves.

A payer signs ``TransferWithAuthorization(from, to, value, validAfter, validBefore, nonce)``
under the token's own EIP-712 domain (USDC's shape: ``name``, ``version``, ``chainId``,
``verifyingContract``); anyone may then submit it to the token, which moves the funds and
marks the 32-byte random ``nonce`` used. The paywall recovers the signer here before it
spends gas submitting, and the client signs here; both use the one digest below, which is
the token's (``tests/test_eip3009_token.py`` checks it against the chain).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Final

from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address
from web3.types import TxReceipt

from micropay._contracts import ContractClient, Sender
from micropay._keccak import keccak256
from micropay.errors import VoucherError
from micropay.vouchers import recover_digest, sign_digest

_DOMAIN_TYPEHASH: Final = keccak256(
    b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
TRANSFER_WITH_AUTHORIZATION_TYPEHASH: Final = keccak256(
    b"TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,"
    b"uint256 validBefore,bytes32 nonce)"
)
CANCEL_AUTHORIZATION_TYPEHASH: Final = keccak256(
    b"CancelAuthorization(address authorizer,bytes32 nonce)"
)
_UINT256_MAX: Final = 2**256 - 1


def _word(value: int) -> bytes:
    return value.to_bytes(32, "big")


def _address_word(address: str) -> bytes:
    return bytes(12) + bytes.fromhex(address[2:])


@dataclass(frozen=True)
class TokenDomain:
    """A token's EIP-712 domain, which its authorizations are bound to."""

    name: str
    version: str
    chain_id: int
    verifying_contract: str
    separator: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "verifying_contract", to_checksum_address(self.verifying_contract))
        separator = keccak256(
            _DOMAIN_TYPEHASH
            + keccak256(self.name.encode())
            + keccak256(self.version.encode())
            + _word(self.chain_id)
            + _address_word(self.verifying_contract)
        )
        object.__setattr__(self, "separator", separator)

    def digest(self, struct_hash: bytes) -> bytes:
        return keccak256(b"\x19\x01" + self.separator + struct_hash)


@dataclass(frozen=True)
class Authorization:
    """The fields of one ``transferWithAuthorization``: who pays whom how much, and when."""

    payer: str
    pay_to: str
    value: int
    valid_after: int
    valid_before: int
    nonce: bytes

    def __post_init__(self) -> None:
        object.__setattr__(self, "payer", to_checksum_address(self.payer))
        object.__setattr__(self, "pay_to", to_checksum_address(self.pay_to))
        for name in ("value", "valid_after", "valid_before"):
            number = getattr(self, name)
            if type(number) is not int or not 0 <= number <= _UINT256_MAX:
                raise VoucherError(f"{name} must be a uint256: {number!r}")
        if not isinstance(self.nonce, bytes) or len(self.nonce) != 32:
            raise VoucherError("an authorization nonce is exactly 32 bytes")

    def digest(self, domain: TokenDomain) -> bytes:
        """The EIP-712 digest the payer signs and the token checks."""
        return domain.digest(
            keccak256(
                TRANSFER_WITH_AUTHORIZATION_TYPEHASH
                + _address_word(self.payer)
                + _address_word(self.pay_to)
                + _word(self.value)
                + _word(self.valid_after)
                + _word(self.valid_before)
                + self.nonce
            )
        )

    def signer(self, domain: TokenDomain, signature: bytes) -> ChecksumAddress:
        """Who signed it (raises :class:`~micropay.errors.InvalidSignatureError`)."""
        return to_checksum_address(recover_digest(self.digest(domain), signature))

    def to_json(self) -> dict[str, Any]:
        """x402's ``exact`` EVM ``payload.authorization`` object."""
        return {
            "from": self.payer,
            "to": self.pay_to,
            "value": str(self.value),
            "validAfter": str(self.valid_after),
            "validBefore": str(self.valid_before),
            "nonce": "0x" + self.nonce.hex(),
        }


def authorize(
    domain: TokenDomain,
    payer: LocalAccount,
    pay_to: str,
    value: int,
    valid_before: int,
    *,
    valid_after: int = 0,
    nonce: bytes | None = None,
) -> tuple[Authorization, bytes]:
    """Sign a transfer of ``value`` to ``pay_to``, with a fresh random nonce by default."""
    authorization = Authorization(
        payer.address, pay_to, value, valid_after, valid_before, nonce or os.urandom(32)
    )
    return authorization, sign_digest(authorization.digest(domain), payer)


def sign_cancel(domain: TokenDomain, authorizer: LocalAccount, nonce: bytes) -> bytes:
    """The authorizer's signature giving up ``nonce`` (``cancelAuthorization``)."""
    struct_hash = keccak256(
        CANCEL_AUTHORIZATION_TYPEHASH + _address_word(authorizer.address) + nonce
    )
    return sign_digest(domain.digest(struct_hash), authorizer)


class AuthorizationToken(ContractClient):
    """An ERC-20 with EIP-3009 (USDC, or the test token ``contracts/test/MockUSDC.sol``)."""

    ARTIFACT = "MockUSDC"

    def domain(self) -> TokenDomain:
        """The token's EIP-712 domain, read from the token (``name`` and ``version``)."""
        functions = self.contract.functions
        return TokenDomain(
            str(self._read(functions.name())),
            str(self._read(functions.version())),
            self.w3.eth.chain_id,
            self.address,
        )

    def balance_of(self, owner: str) -> int:
        return int(self._read(self.contract.functions.balanceOf(owner)))

    def mint(self, to: str, amount: int, sender: Sender) -> TxReceipt:
        """Mint on the test token (anyone may); real tokens have no such function."""
        return self._transact(self.contract.functions.mint(to, amount), sender)

    def authorization_used(self, authorizer: str, nonce: bytes) -> bool:
        """Whether ``nonce`` was used or cancelled: an authorization carrying it is void."""
        return bool(self._read(self.contract.functions.authorizationState(authorizer, nonce)))

    def transfer_with_authorization(
        self, authorization: Authorization, signature: bytes, sender: Sender
    ) -> TxReceipt:
        """Submit a signed transfer (``sender`` pays the gas); reverts decode to named errors."""
        a = authorization
        call = self.contract.functions.transferWithAuthorization(
            a.payer, a.pay_to, a.value, a.valid_after, a.valid_before, a.nonce,
            signature[64], signature[:32], signature[32:64],
        )  # fmt: skip
        return self._transact(call, sender)

    def cancel_authorization(
        self, authorizer: str, nonce: bytes, signature: bytes, sender: Sender
    ) -> TxReceipt:
        call = self.contract.functions.cancelAuthorization(
            authorizer, nonce, signature[64], signature[:32], signature[32:64]
        )
        return self._transact(call, sender)
