"""keccak-256 at C speed: the voucher hot path hashes three times per verification.

safe-pysha3 hashes a 66-byte message in about 0.7 µs here, pycryptodome (which eth-hash
uses by default) in about 4.5 µs; at 40 µs per signature recovery that difference alone
decides whether a payee verifies at the speed of the curve. pycryptodome remains the
fallback where safe-pysha3 cannot be installed.
"""

from __future__ import annotations

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
