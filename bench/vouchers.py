"""Vouchers verified (and signed) per second on one core, in one run.

Three verifiers over the same signed vouchers:
- the payee fast path (``VoucherVerifier.verify``: precomputed domain, C keccak, coincurve);
- eth-account's generic path (``encode_typed_data`` + ``Account.recover_message``);
- raw coincurve: keccak of the message and recovery of the key, with nothing around it —
  the floor any Python verifier pays (goal: fast path at least 0.9 times this, and twice generic).

Beside them, the rest of what a paid request costs a site in the SDK's own code: signing its
receipt (``sign_receipt``) and decoding the ``PAYMENT-SIGNATURE`` header (one channel, as a
reader's requests are: its configuration is parsed once).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import coincurve
from eth_account import Account
from eth_account.messages import encode_typed_data

from micropay._keccak import keccak256
from micropay._x402 import PaymentPayload
from micropay.receipts import sign_receipt
from micropay.vouchers import ChannelConfig, VoucherDomain, VoucherVerifier, sign_voucher

N = 20_000
DOMAIN = VoucherDomain(1, "0x5FbDB2315678afecb367f032d93F642f64180aa3")


def rate(label: str, count: int, work: Callable[[], None]) -> float:
    work()  # warm up caches and imports outside the timed run
    start = time.perf_counter()
    work()
    per_second = count / (time.perf_counter() - start)
    print(f"{label:<48}{per_second:>12,.0f} /s")
    return per_second


def main() -> None:
    signer = Account.from_key(os.urandom(32))
    channel_id = os.urandom(32)
    vouchers = [sign_voucher(DOMAIN, channel_id, 10**12 + i, signer) for i in range(N)]
    authorizer = bytes.fromhex(signer.address[2:])
    verifier = VoucherVerifier(DOMAIN)
    generic_messages = []
    for v in vouchers[: N // 10]:
        typed = DOMAIN.typed_data(v.channel_id, v.cumulative_amount)
        typed["message"]["cumulativeAmount"] = v.cumulative_amount
        generic_messages.append((typed, v.signature))
    # The raw floor: the same 66-byte EIP-712 preimages, hashed and recovered, no checks.
    struct_hash = keccak256(b"x" * 96)
    preimages = [
        (
            b"\x19\x01" + DOMAIN.separator + struct_hash,
            v.signature[:64] + bytes([v.signature[64] - 27]),
        )
        for v in vouchers
    ]

    def fast() -> None:
        for v in vouchers:
            verifier.verify(v, authorizer)

    def generic() -> None:
        for typed, signature in generic_messages:
            signable = encode_typed_data(full_message=typed)
            if Account.recover_message(signable, signature=signature) != signer.address:
                raise AssertionError("generic path disagrees")

    def raw() -> None:
        for preimage, rsv in preimages:
            coincurve.PublicKey.from_signature_and_message(rsv, keccak256(preimage), hasher=None)

    def sign() -> None:
        secret = bytes(signer.key)
        for i in range(N // 4):
            sign_voucher(DOMAIN, channel_id, i, secret)

    site = Account.from_key(os.urandom(32))
    receipt_ids = [os.urandom(32) for _ in range(N // 4)]

    def receipts() -> None:
        for i, receipt_id in enumerate(receipt_ids):
            sign_receipt(
                DOMAIN,
                site,
                receipt_id=receipt_id,
                channel_id=channel_id,
                payer=signer.address,
                asset=DOMAIN.verifying_contract,
                resource="GET /articles/1",
                amount=1000,
                cumulative_amount=1000 * (i + 1),
                issued_at=1_800_000_000,
            )

    config = ChannelConfig(
        payer=signer.address,
        payee=site.address,
        token=DOMAIN.verifying_contract,
        authorizer=signer.address,
        withdraw_delay=3600,
        salt=os.urandom(32),
    )
    headers = [
        PaymentPayload("eip155:1", 1000, config.token, site.address, config, v).encode().encode()
        for v in vouchers[: N // 4]
    ]

    def decode() -> None:
        for header in headers:
            PaymentPayload.decode(header)

    print(f"Voucher verification, one core, {N:,} vouchers (generic path: {N // 10:,}):\n")
    fast_rate = rate("payee fast path (VoucherVerifier.verify)", N, fast)
    generic_rate = rate("eth-account generic (encode_typed_data+recover)", N // 10, generic)
    raw_rate = rate("raw coincurve keccak + recover", N, raw)
    rate("vouchers signed (sign_voucher)", N // 4, sign)
    rate("receipts signed (sign_receipt)", N // 4, receipts)
    rate("PAYMENT-SIGNATURE headers decoded", N // 4, decode)
    print()
    print(f"fast / raw coincurve  = {fast_rate / raw_rate:.2f}  (goal ≥ 0.90)")
    print(f"fast / generic        = {fast_rate / generic_rate:.1f}  (goal ≥ 2)")


if __name__ == "__main__":
    main()
