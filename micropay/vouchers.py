"""Vouchers: what a payer signs off-chain and a payee verifies, byte-compatible with the contract.

A voucher is EIP-712 typed data ``Voucher(bytes32 channelId,uint256 cumulativeAmount)`` in
the domain ``{name: "micropay", version: "1", chainId, verifyingContract}``. Each one
authorises a *cumulative* ceiling, so a lost voucher is replaced by any later one and the
payee only ever needs the highest; the payee settles any total up to it.

Settling is the payee's act. A payee that lets someone else send its claim signs
``PayeeClaim(bytes32 channelId,uint256 totalClaimed)`` in the same domain
(:func:`sign_payee_claim`), and the relayer carries that signature beside the voucher.

The payee's verifier is the hot path of a paywalled site. :class:`VoucherVerifier`
precomputes the domain separator and type hash, hashes with a C keccak and recovers with
libsecp256k1 (coincurve), comparing raw address bytes; it accepts exactly the signatures the
contract accepts: 65 bytes, v of 27 or 28, s at most n/2, a non-zero signer. eth-account
alone would also accept the high-s twin of a valid signature, which the contract refuses.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import coincurve
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from eth_utils.address import is_address, to_checksum_address

from micropay._keccak import keccak256
from micropay.errors import InvalidSignatureError, VoucherError

ZERO_ADDRESS: ChecksumAddress = to_checksum_address("0x" + "00" * 20)
DOMAIN_NAME = "micropay"
DOMAIN_VERSION = "1"
VOUCHER_TYPE = "Voucher(bytes32 channelId,uint256 cumulativeAmount)"
VOUCHER_TYPEHASH = keccak256(VOUCHER_TYPE.encode())
PAYEE_CLAIM_TYPE = "PayeeClaim(bytes32 channelId,uint256 totalClaimed)"
PAYEE_CLAIM_TYPEHASH = keccak256(PAYEE_CLAIM_TYPE.encode())
_DOMAIN_TYPEHASH = keccak256(
    b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_HALF_N = SECP256K1_N // 2
_UINT256_MAX = 2**256 - 1
_UINT32_MAX = 2**32 - 1


EIP712_DOMAIN_TYPE: list[dict[str, str]] = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]
"""The EIP-712 domain's fields as ``eth_signTypedData_v4`` lists them, for every micropay
domain (vouchers and receipts): name, version, chain id, contract."""


def _address(value: str, what: str) -> ChecksumAddress:
    if not isinstance(value, str) or not is_address(value):
        raise VoucherError(f"{what} is not an address: {value!r}")
    return to_checksum_address(value)


def _word(value: int) -> bytes:
    return value.to_bytes(32, "big")


def _address_word(address: str) -> bytes:
    return bytes(12) + bytes.fromhex(address[2:])


def domain_separator(name: str, version: str, chain_id: int, verifying_contract: str) -> bytes:
    """The EIP-712 separator of ``EIP712Domain(string name,string version,uint256 chainId,
    address verifyingContract)``: vouchers and site receipts each have their own name."""
    return keccak256(
        _DOMAIN_TYPEHASH
        + keccak256(name.encode())
        + keccak256(version.encode())
        + _word(chain_id)
        + _address_word(verifying_contract)
    )


@dataclass(frozen=True)
class ChannelConfig:
    """The immutable configuration of a channel; :attr:`channel_id` is its hash.

    Addresses may be given in any case; they are stored checksummed.

    ``token`` is the ERC-20 address, or the zero address for native ETH. ``authorizer`` is
    the key whose signatures make vouchers valid: the payer itself or a session key.
    """

    payer: str
    payee: str
    token: str
    authorizer: str
    withdraw_delay: int
    salt: bytes
    channel_id: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("payer", "payee", "token", "authorizer"):
            object.__setattr__(self, name, _address(getattr(self, name), name))
        if type(self.withdraw_delay) is not int or not 0 <= self.withdraw_delay <= _UINT32_MAX:
            raise VoucherError(f"withdraw_delay must be seconds in uint32: {self.withdraw_delay!r}")
        if not isinstance(self.salt, bytes) or len(self.salt) != 32:
            raise VoucherError("salt must be exactly 32 bytes")
        encoded = b"".join(
            [
                _address_word(self.payer),
                _address_word(self.payee),
                _address_word(self.token),
                _address_word(self.authorizer),
                _word(self.withdraw_delay),
                self.salt,
            ]
        )
        object.__setattr__(self, "channel_id", keccak256(encoded))

    def as_tuple(self) -> tuple[str, str, str, str, int, bytes]:
        """The configuration as the contract's ``ChannelConfig`` struct, for web3 calls."""
        return (
            self.payer,
            self.payee,
            self.token,
            self.authorizer,
            self.withdraw_delay,
            self.salt,
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready form (hex strings and numbers), as carried in HTTP headers."""
        return {
            "payer": self.payer,
            "payee": self.payee,
            "token": self.token,
            "authorizer": self.authorizer,
            "withdrawDelay": self.withdraw_delay,
            "salt": "0x" + self.salt.hex(),
        }

    @classmethod
    def from_json(cls, data: Any) -> ChannelConfig:
        """Parse :meth:`to_json`'s form; any malformed field raises :class:`VoucherError`."""
        if not isinstance(data, dict):
            raise VoucherError("channel configuration must be a JSON object")
        try:
            salt = data["salt"]
            delay = data["withdrawDelay"]
            if not isinstance(salt, str) or not salt.startswith("0x"):
                raise VoucherError("salt must be a 0x-prefixed hex string")
            return cls(
                payer=data["payer"],
                payee=data["payee"],
                token=data["token"],
                authorizer=data["authorizer"],
                withdraw_delay=delay,
                salt=bytes.fromhex(salt[2:]),
            )
        except KeyError as err:
            raise VoucherError(f"channel configuration lacks {err.args[0]!r}") from None
        except ValueError as err:
            if isinstance(err, VoucherError):
                raise
            raise VoucherError(f"malformed channel configuration: {err}") from None


@dataclass(frozen=True)
class VoucherDomain:
    """The EIP-712 domain vouchers are bound to: one chain, one PaymentChannels contract."""

    chain_id: int
    verifying_contract: str
    separator: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if type(self.chain_id) is not int or not 0 < self.chain_id <= _UINT256_MAX:
            raise VoucherError(f"chain_id must be a positive integer: {self.chain_id!r}")
        contract = _address(self.verifying_contract, "verifying_contract")
        object.__setattr__(self, "verifying_contract", contract)
        separator = domain_separator(DOMAIN_NAME, DOMAIN_VERSION, self.chain_id, contract)
        object.__setattr__(self, "separator", separator)

    def digest(self, channel_id: bytes, cumulative_amount: int) -> bytes:
        """The 32-byte EIP-712 digest the authorizer signs (``voucherDigest`` on chain)."""
        return self._typed_digest(VOUCHER_TYPEHASH, channel_id, cumulative_amount)

    def payee_claim_digest(self, channel_id: bytes, total_claimed: int) -> bytes:
        """The digest a payee signs to have its claim of ``total_claimed`` relayed
        (``payeeClaimDigest`` on chain)."""
        return self._typed_digest(PAYEE_CLAIM_TYPEHASH, channel_id, total_claimed)

    def _typed_digest(self, typehash: bytes, channel_id: bytes, amount: int) -> bytes:
        _check_voucher_fields(channel_id, amount)
        struct_hash = keccak256(typehash + channel_id + _word(amount))
        return keccak256(b"\x19\x01" + self.separator + struct_hash)

    def typed_data(self, channel_id: bytes, cumulative_amount: int) -> dict[str, Any]:
        """The ``eth_signTypedData_v4`` JSON a browser wallet signs for this voucher."""
        _check_voucher_fields(channel_id, cumulative_amount)
        return {
            "types": {
                "EIP712Domain": EIP712_DOMAIN_TYPE,
                "Voucher": [
                    {"name": "channelId", "type": "bytes32"},
                    {"name": "cumulativeAmount", "type": "uint256"},
                ],
            },
            "primaryType": "Voucher",
            "domain": {
                "name": DOMAIN_NAME,
                "version": DOMAIN_VERSION,
                "chainId": self.chain_id,
                "verifyingContract": self.verifying_contract,
            },
            "message": {
                "channelId": "0x" + channel_id.hex(),
                # A decimal string: JSON numbers lose precision above 2**53 in browsers.
                "cumulativeAmount": str(cumulative_amount),
            },
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "name": DOMAIN_NAME,
            "version": DOMAIN_VERSION,
            "chainId": self.chain_id,
            "verifyingContract": self.verifying_contract,
        }


_LOW_255_BITS = (1 << 255) - 1


def full_signature(signature: bytes) -> bytes:
    """The 65-byte ``r ‖ s ‖ v`` form of a 65-byte or a 64-byte EIP-2098 signature.

    The contract takes both forms, so every entry point must too; comparing, storing and
    verifying happen on this one form. Whether the result is canonical (low s, v of 27 or
    28) is the verifier's question, not this function's.
    """
    if not isinstance(signature, bytes):
        raise InvalidSignatureError("a voucher signature must be bytes")
    if len(signature) == 65:
        return signature
    if len(signature) == 64:
        y_parity_and_s = int.from_bytes(signature[32:], "big")
        s = y_parity_and_s & _LOW_255_BITS
        return signature[:32] + s.to_bytes(32, "big") + bytes([27 + (y_parity_and_s >> 255)])
    raise InvalidSignatureError(
        f"a voucher signature is 65 bytes (r, s, v) or 64 (EIP-2098), not {len(signature)}"
    )


def _check_voucher_fields(channel_id: bytes, cumulative_amount: int) -> None:
    if not isinstance(channel_id, bytes) or len(channel_id) != 32:
        raise VoucherError("channel_id must be exactly 32 bytes")
    if type(cumulative_amount) is not int or not 0 <= cumulative_amount <= _UINT256_MAX:
        raise VoucherError(f"cumulative_amount must be a uint256: {cumulative_amount!r}")


@dataclass(frozen=True)
class Voucher:
    """The authorizer's signed ceiling: the channel's payee may settle up to
    ``cumulative_amount`` in total."""

    channel_id: bytes
    cumulative_amount: int
    signature: bytes

    def __post_init__(self) -> None:
        _check_voucher_fields(self.channel_id, self.cumulative_amount)
        # Normalised here, once: every later comparison, cache key and stored row sees one
        # form, so a signature sent once as 65 bytes and once as 64 is one signature.
        object.__setattr__(self, "signature", full_signature(self.signature))

    @property
    def compact_signature(self) -> bytes:
        """The EIP-2098 64-byte form ``r ‖ (yParity << 255 | s)``: one calldata word cheaper."""
        s = int.from_bytes(self.signature[32:64], "big") | ((self.signature[64] - 27) << 255)
        return self.signature[:32] + s.to_bytes(32, "big")

    def to_json(self) -> dict[str, Any]:
        return {
            "channelId": "0x" + self.channel_id.hex(),
            "cumulativeAmount": str(self.cumulative_amount),
            "signature": "0x" + self.signature.hex(),
        }

    @classmethod
    def from_json(cls, data: Any) -> Voucher:
        """Parse :meth:`to_json`'s form; anything malformed raises :class:`VoucherError`."""
        if not isinstance(data, dict):
            raise VoucherError("a voucher must be a JSON object")
        try:
            channel_id, amount, signature = (
                data["channelId"],
                data["cumulativeAmount"],
                data["signature"],
            )
        except KeyError as err:
            raise VoucherError(f"voucher lacks {err.args[0]!r}") from None
        if not isinstance(amount, str) or not amount.isdigit() or len(amount) > 78:
            raise VoucherError("cumulativeAmount must be a decimal string of a uint256")
        return cls(
            _hex_bytes(channel_id, "channelId"), int(amount), _hex_bytes(signature, "signature")
        )


def _hex_bytes(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x") or len(value) > 2 + 2 * 1024:
        raise VoucherError(f"{what} must be a 0x-prefixed hex string")
    try:
        return bytes.fromhex(value[2:])
    except ValueError:
        raise VoucherError(f"{what} is not valid hex") from None


@dataclass(frozen=True)
class PayeeClaim:
    """The payee's consent to settle ``channel_id`` at ``total_claimed``: with it anyone may
    send the claim (``claimFor``), and nobody can settle a total the payee did not choose.
    It is spent once the channel's claimed total reaches it (totals only grow)."""

    channel_id: bytes
    total_claimed: int
    signature: bytes

    def __post_init__(self) -> None:
        _check_voucher_fields(self.channel_id, self.total_claimed)
        object.__setattr__(self, "signature", full_signature(self.signature))


def sign_payee_claim(
    domain: VoucherDomain, channel_id: bytes, total_claimed: int, key: LocalAccount | bytes
) -> PayeeClaim:
    """Sign, with the payee's key, a claim of ``total_claimed`` for someone else to relay."""
    digest = domain.payee_claim_digest(channel_id, total_claimed)
    return PayeeClaim(channel_id, total_claimed, sign_digest(digest, key))


def sign_voucher(
    domain: VoucherDomain, channel_id: bytes, cumulative_amount: int, key: LocalAccount | bytes
) -> Voucher:
    """Sign a voucher with the authorizer's key (an eth-account account or 32 raw bytes).

    Signatures come out canonical (low s, v of 27 or 28), the only form the contract takes.
    """
    digest = domain.digest(channel_id, cumulative_amount)
    return Voucher(channel_id, cumulative_amount, sign_digest(digest, key))


class VoucherVerifier:
    """Recovers voucher signers at the speed of libsecp256k1 for one domain.

    Everything that does not change between vouchers (domain separator, type hash) is
    computed once; addresses are compared as raw 20-byte values, never as checksummed
    strings (checksumming costs another keccak).
    """

    __slots__ = ("_prefix", "domain")

    def __init__(self, domain: VoucherDomain) -> None:
        self.domain = domain
        self._prefix = b"\x19\x01" + domain.separator

    def digest(self, channel_id: bytes, cumulative_amount: int) -> bytes:
        struct_hash = keccak256(
            VOUCHER_TYPEHASH + channel_id + cumulative_amount.to_bytes(32, "big")
        )
        return keccak256(self._prefix + struct_hash)

    def recover(self, voucher: Voucher) -> bytes:
        """The signer's 20-byte address, or :class:`InvalidSignatureError`."""
        return recover_digest(
            self.digest(voucher.channel_id, voucher.cumulative_amount), voucher.signature
        )

    def verify(self, voucher: Voucher, authorizer: bytes) -> None:
        """Raise :class:`InvalidSignatureError` unless ``authorizer`` (20 bytes) signed it."""
        if self.recover(voucher) != authorizer:
            raise InvalidSignatureError("voucher is not signed by the channel's authorizer")


def sign_digest(digest: bytes, key: LocalAccount | bytes) -> bytes:
    """A canonical 65-byte signature (low s, v of 27 or 28) of a 32-byte digest."""
    secret = key if isinstance(key, bytes) else bytes(key.key)
    rsv = _signer(secret).sign_recoverable(digest, hasher=None)
    # libsecp256k1 always produces low-s signatures; v is the recovery id + 27.
    return rsv[:64] + bytes([rsv[64] + 27])


@functools.lru_cache(maxsize=8)
def _signer(secret: bytes) -> coincurve.PrivateKey:
    """The key object of ``secret``, kept: building one derives its public key and a keypair
    (two point multiplications, ~60 µs, more than the signature itself), and a site signs
    every receipt with the same payee key. Keys the process holds anyway; a few at most."""
    return coincurve.PrivateKey(secret)


def recover_digest(digest: bytes, signature: bytes) -> bytes:
    """The 20-byte address that signed ``digest``, accepting only what the contract accepts
    (65 bytes, v of 27 or 28, low s), or :class:`InvalidSignatureError`."""
    if len(signature) != 65:
        raise InvalidSignatureError(f"a signature is 65 bytes, not {len(signature)}")
    v = signature[64]
    if v != 27 and v != 28:
        raise InvalidSignatureError(f"signature v must be 27 or 28, not {v}")
    if int.from_bytes(signature[32:64], "big") > _HALF_N:
        raise InvalidSignatureError(
            "high-s signature (the malleable twin); the contract refuses it"
        )
    try:
        public_key = coincurve.PublicKey.from_signature_and_message(
            signature[:64] + bytes([v - 27]), digest, hasher=None
        )
    except Exception as err:  # coincurve raises bare Exception/ValueError on bad points
        raise InvalidSignatureError(f"signature does not recover a key: {err}") from None
    return keccak256(public_key.format(compressed=False)[1:])[12:]


def recover_signer(domain: VoucherDomain, voucher: Voucher) -> ChecksumAddress:
    """The checksummed address that signed ``voucher`` in ``domain``."""
    return to_checksum_address(VoucherVerifier(domain).recover(voucher))


def new_session_key() -> LocalAccount:
    """A fresh random key, to authorize a channel's vouchers without the payer's main key."""
    account: LocalAccount = Account.create()
    return account
