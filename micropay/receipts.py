"""Site-signed receipts: evidence of what a reader was charged, for what, and when.

Each paid request's ``PAYMENT-RESPONSE`` carries a receipt signed by the site's (the
channel payee's) key, as EIP-712 typed data, so that a reader can later prove a charge to
anyone (a dispute, an auditor) and a site can recognise its own receipt again (access
receipts, :mod:`micropay.paywall`). The domain is that of vouchers with another name, so
no receipt signature can ever pass for a voucher and the reverse::

    EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)
      name "micropay receipt", version "1", the chain, the PaymentChannels contract
    Receipt(bytes32 receiptId,bytes32 channelId,address payer,address asset,
            string resource,uint256 amount,uint256 cumulativeAmount,uint64 issuedAt)

An *access proof* is what a reader presenting an earlier receipt signs with the channel's
session key (its authorizer), over a nonce the site issued, so that a copied receipt is
worthless to anyone without that key::

    Access(bytes32 receiptId,bytes32 nonce,string resource)

Signing and checking live here only: the paywall signs, the client, the CLI and the
tests verify with :func:`verify_receipt`. docs/protocol.md spells out every byte.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address

from micropay._keccak import checksum_address, keccak256
from micropay.errors import InvalidSignatureError, ReceiptError
from micropay.vouchers import (
    EIP712_DOMAIN_TYPE,
    VoucherDomain,
    _address_word,
    _word,
    domain_separator,
    recover_digest,
    sign_digest,
)

__all__ = [
    "ACCESS_TYPE",
    "RECEIPT_DOMAIN_NAME",
    "RECEIPT_DOMAIN_VERSION",
    "RECEIPT_TYPE",
    "SignedReceipt",
    "access_digest",
    "receipt_problem",
    "recover_access",
    "sign_access",
    "sign_receipt",
    "verify_receipt",
]

RECEIPT_DOMAIN_NAME = "micropay receipt"
RECEIPT_DOMAIN_VERSION = "1"
RECEIPT_TYPE = (
    "Receipt(bytes32 receiptId,bytes32 channelId,address payer,address asset,"
    "string resource,uint256 amount,uint256 cumulativeAmount,uint64 issuedAt)"
)
ACCESS_TYPE = "Access(bytes32 receiptId,bytes32 nonce,string resource)"
_RECEIPT_TYPEHASH = keccak256(RECEIPT_TYPE.encode())
_ACCESS_TYPEHASH = keccak256(ACCESS_TYPE.encode())
_UINT256_MAX = 2**256 - 1
_UINT64_MAX = 2**64 - 1
MAX_RESOURCE = 2048
"""Longest ``resource`` (``METHOD /path``) a receipt names, in UTF-8 bytes."""


@functools.lru_cache(maxsize=64)
def _separator(domain: VoucherDomain) -> bytes:
    return domain_separator(
        RECEIPT_DOMAIN_NAME, RECEIPT_DOMAIN_VERSION, domain.chain_id, domain.verifying_contract
    )


@dataclass(frozen=True)
class SignedReceipt:
    """One charge as the site signed it. ``domain`` is the channels deployment (chain and
    PaymentChannels contract) the charged channel lives on; the signer is its payee.

    ``resource`` is ``"METHOD /path"`` as the reader requested it (no query string);
    ``issued_at`` is the site's clock in Unix seconds; ``receipt_id`` is random, unique per
    charge (the site's ledger keys its charges by it).
    """

    domain: VoucherDomain
    receipt_id: bytes
    channel_id: bytes
    payer: str
    asset: str
    resource: str
    amount: int
    cumulative_amount: int
    issued_at: int
    signature: bytes

    def __post_init__(self) -> None:
        for name in ("receipt_id", "channel_id"):
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != 32:
                raise ReceiptError(f"a receipt's {name} is 32 bytes")
        for name in ("payer", "asset"):
            object.__setattr__(self, name, _checksum(getattr(self, name), name))
        if not isinstance(self.resource, str) or len(self.resource.encode()) > MAX_RESOURCE:
            raise ReceiptError(f"a receipt's resource is text of at most {MAX_RESOURCE} bytes")
        for name, top in (
            ("amount", _UINT256_MAX),
            ("cumulative_amount", _UINT256_MAX),
            ("issued_at", _UINT64_MAX),
        ):
            value = getattr(self, name)
            if type(value) is not int or not 0 <= value <= top:
                raise ReceiptError(f"a receipt's {name} is out of range: {value!r}")
        if not isinstance(self.signature, bytes):
            raise ReceiptError("a receipt's signature is bytes")

    @property
    def digest(self) -> bytes:
        """The 32-byte EIP-712 digest the site signs."""
        return receipt_digest(
            self.domain,
            receipt_id=self.receipt_id,
            channel_id=self.channel_id,
            payer=self.payer,
            asset=self.asset,
            resource=self.resource,
            amount=self.amount,
            cumulative_amount=self.cumulative_amount,
            issued_at=self.issued_at,
        )

    def typed_data(self) -> dict[str, object]:
        """The ``eth_signTypedData_v4`` form, for wallets and independent checkers."""
        return {
            "types": {
                "EIP712Domain": EIP712_DOMAIN_TYPE,
                "Receipt": [
                    {"name": "receiptId", "type": "bytes32"},
                    {"name": "channelId", "type": "bytes32"},
                    {"name": "payer", "type": "address"},
                    {"name": "asset", "type": "address"},
                    {"name": "resource", "type": "string"},
                    {"name": "amount", "type": "uint256"},
                    {"name": "cumulativeAmount", "type": "uint256"},
                    {"name": "issuedAt", "type": "uint64"},
                ],
            },
            "primaryType": "Receipt",
            "domain": {
                "name": RECEIPT_DOMAIN_NAME,
                "version": RECEIPT_DOMAIN_VERSION,
                "chainId": self.domain.chain_id,
                "verifyingContract": self.domain.verifying_contract,
            },
            "message": {
                "receiptId": "0x" + self.receipt_id.hex(),
                "channelId": "0x" + self.channel_id.hex(),
                "payer": self.payer,
                "asset": self.asset,
                "resource": self.resource,
                "amount": str(self.amount),
                "cumulativeAmount": str(self.cumulative_amount),
                "issuedAt": self.issued_at,
            },
        }


def _checksum(value: object, what: str) -> str:
    try:
        if not isinstance(value, str):
            raise ValueError
        # The fast, remembering form first (a site signs for the same few addresses).
        return checksum_address(value) or to_checksum_address(value)
    except ValueError:
        raise ReceiptError(f"a receipt's {what} is not an address: {value!r}") from None


def receipt_digest(
    domain: VoucherDomain,
    *,
    receipt_id: bytes,
    channel_id: bytes,
    payer: str,
    asset: str,
    resource: str,
    amount: int,
    cumulative_amount: int,
    issued_at: int,
) -> bytes:
    """``keccak256(0x1901 ‖ separator ‖ hashStruct(Receipt))`` for these fields."""
    struct_hash = keccak256(
        _RECEIPT_TYPEHASH
        + receipt_id
        + channel_id
        + _address_word(payer)
        + _address_word(asset)
        + keccak256(resource.encode())
        + _word(amount)
        + _word(cumulative_amount)
        + _word(issued_at)
    )
    return keccak256(b"\x19\x01" + _separator(domain) + struct_hash)


def sign_receipt(
    domain: VoucherDomain,
    key: LocalAccount | bytes,
    *,
    receipt_id: bytes,
    channel_id: bytes,
    payer: str,
    asset: str,
    resource: str,
    amount: int,
    cumulative_amount: int,
    issued_at: int,
) -> SignedReceipt:
    """The site's receipt for one charge, signed with its payee key."""
    receipt = SignedReceipt(
        domain,
        receipt_id,
        channel_id,
        payer,
        asset,
        resource,
        amount,
        cumulative_amount,
        issued_at,
        b"",
    )
    # The checks ran on the receipt unsigned, and the signature covers exactly those fields:
    # fill it in place rather than build and check the receipt a second time (a signed
    # receipt per paid request). It is new here, so nobody else holds it yet.
    object.__setattr__(receipt, "signature", sign_digest(receipt.digest, key))
    return receipt


def verify_receipt(receipt: SignedReceipt, signer: str | None = None) -> ChecksumAddress:
    """The address that signed the receipt (checksummed); with ``signer``, raise
    :class:`~micropay.errors.ReceiptError` unless it is that address. A malformed or
    non-canonical signature raises ReceiptError too."""
    try:
        recovered = to_checksum_address(recover_digest(receipt.digest, receipt.signature))
    except InvalidSignatureError as err:
        raise ReceiptError(f"the receipt's signature is invalid: {err}") from None
    if signer is not None and recovered != _checksum(signer, "signer"):
        raise ReceiptError(f"the receipt is signed by {recovered}, not by {signer}")
    return recovered


def receipt_problem(receipt: SignedReceipt | None, payee: str, domain: VoucherDomain) -> str | None:
    """What makes a receipt no evidence of a charge by ``payee`` on ``domain``'s contract
    (unsigned, another deployment, another signer), or None if it is."""
    if receipt is None:
        return "the receipt is not signed"
    if receipt.domain != domain:
        return "the receipt is for another chain or contract"
    try:
        verify_receipt(receipt, payee)
    except ReceiptError as err:
        return str(err)
    return None


def access_digest(domain: VoucherDomain, receipt_id: bytes, nonce: bytes, resource: str) -> bytes:
    """The digest of ``Access(receiptId, nonce, resource)`` in the receipt domain."""
    if len(receipt_id) != 32 or len(nonce) != 32:
        raise ReceiptError("an access proof names a 32-byte receipt id and a 32-byte nonce")
    struct_hash = keccak256(_ACCESS_TYPEHASH + receipt_id + nonce + keccak256(resource.encode()))
    return keccak256(b"\x19\x01" + _separator(domain) + struct_hash)


def sign_access(
    domain: VoucherDomain,
    key: LocalAccount | bytes,
    receipt_id: bytes,
    nonce: bytes,
    resource: str,
) -> bytes:
    """The reader's proof that it holds the channel's session key, for one nonce."""
    return sign_digest(access_digest(domain, receipt_id, nonce, resource), key)


def recover_access(
    domain: VoucherDomain, receipt_id: bytes, nonce: bytes, resource: str, signature: bytes
) -> bytes:
    """The 20-byte address that signed an access proof, or ReceiptError."""
    try:
        return recover_digest(access_digest(domain, receipt_id, nonce, resource), signature)
    except InvalidSignatureError as err:
        raise ReceiptError(f"the access proof's signature is invalid: {err}") from None
