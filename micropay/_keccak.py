"""keccak-256 at C speed: the voucher hot path hashes three times per verification.

safe-pysha3 hashes a 66-byte message in about 0.7 µs here, pycryptodome (which eth-hash
uses by default) in about 4.5 µs; at 40 µs per signature recovery that difference alone
decides whether a payee verifies at the speed of the curve. pycryptodome remains the
fallback where safe-pysha3 cannot be installed.
"""

from __future__ import annotations

import re
from collections.abc import Callable

keccak256: Callable[[bytes], bytes]

try:
    from sha3 import keccak_256 as _pysha3_keccak

    def keccak256(data: bytes) -> bytes:
        """keccak-256 (not SHA3-256) of ``data``."""
        return _pysha3_keccak(data).digest()  # type: ignore[no-any-return]

except ImportError:  # pragma: no cover - exercised only where safe-pysha3 is missing
    from Crypto.Hash import keccak as _pycryptodome_keccak

    def keccak256(data: bytes) -> bytes:
        """keccak-256 (not SHA3-256) of ``data``."""
        return _pycryptodome_keccak.new(data=data, digest_bits=256).digest()


_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_REMEMBERED = 8192
_checksummed: dict[str, str | None] = {}


def checksum_address(text: str) -> str | None:
    """The EIP-55 form of a 0x address, or None if it is not one (or its mixed case is a
    wrong checksum). eth-utils takes ~45 µs per address; this takes ~5, and a site sees the
    same few addresses (asset, payee, payers) in every header and receipt, so they are
    remembered (up to a bound: strangers cannot grow it)."""
    if text in _checksummed:
        return _checksummed[text]
    if not _ADDRESS.fullmatch(text):
        return None
    lower = text[2:].lower()
    digest = keccak256(lower.encode("ascii")).hex()
    checksummed = "0x" + "".join(
        char.upper() if nibble in "89abcdef" else char
        for char, nibble in zip(lower, digest, strict=False)
    )
    body = text[2:]
    result = None if body not in (lower, body.upper()) and text != checksummed else checksummed
    if len(_checksummed) < _REMEMBERED:
        _checksummed[text] = result
    return result
