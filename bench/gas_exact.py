"""Gas per payment: x402's ``exact`` (one EIP-3009 transfer a request) against a channel.

Run with ``make bench`` (or ``python -m bench.gas_exact``). Both are measured from real
receipts on a throw-away anvil, in the same 6-decimal EIP-3009 token
(``contracts/test/MockUSDC.sol``), in the steady state a busy site is in: the site and the
reader already hold the token, so no transfer writes a balance slot from zero.

``exact`` costs one ``transferWithAuthorization`` per request, paid by whoever settles it
(the site, or its facilitator). A channel costs its opening deposit (the reader's) and one
claim (the site's) however many requests it pays; per payment that is their sum divided by
the number of requests. Our MockUSDC is a plain contract: Circle's USDC sits behind a proxy
and checks a blocklist, which adds a few thousand gas to every ``exact`` transfer.
"""

from __future__ import annotations

import os

from eth_account import Account
from web3 import Web3

from micropay._contracts import Sender, sender_address
from micropay._eip3009 import AuthorizationToken, authorize
from micropay.channels import ChannelClient
from micropay.devnode import anvil
from micropay.tokens import TokenClient
from micropay.vouchers import ChannelConfig, sign_voucher

REQUESTS = (1, 10, 100, 1_000)
PRICE = 10_000  # 0.01 of the token


def _gas(receipt: object) -> int:
    return int(receipt["gasUsed"])  # type: ignore[index]


def measure(w3: Web3, deployer: Sender, site: Sender, reader: Sender) -> tuple[int, int, int]:
    """(one exact transfer, opening an ERC-20 channel, claiming it), receipt gas each.

    ``reader`` opens the channel; the exact payments come from a fresh key of its own (a
    signer, not a sender: ``exact`` readers never send a transaction). The tests call this
    too, to guard the figures on every network.
    """
    site_address, reader_address = sender_address(site), sender_address(reader)
    signer = Account.from_key(os.urandom(32))
    token = AuthorizationToken.deploy(w3, deployer, "USD Coin", "USDC")
    for holder in (signer.address, site_address, reader_address):
        token.mint(holder, 10**12, deployer)
    far = int(w3.eth.get_block("latest")["timestamp"]) + 3_600
    authorization, signature = authorize(token.domain(), signer, site_address, PRICE, far)
    exact = _gas(token.transfer_with_authorization(authorization, signature, site))

    channels = ChannelClient.deploy(w3, deployer)
    TokenClient.attach(w3, token.address).approve(channels.address, 2**256 - 1, reader)
    session = Account.from_key(os.urandom(32))
    first, config = (
        ChannelConfig(
            reader_address, site_address, token.address, session.address, 3_600,
            salt.to_bytes(32, "big"),
        )
        for salt in (1, 2)
    )  # fmt: skip
    channels.deposit(first, PRICE, reader)  # the contract already holds the token
    total = PRICE * REQUESTS[-1]
    opened = _gas(channels.deposit(config, total, reader))
    voucher = sign_voucher(channels.domain, config.channel_id, total, session)
    claimed = _gas(channels.claim(config, voucher, site))
    return exact, opened, claimed


def render(exact: int, opened: int, claimed: int) -> str:
    lines = [
        f"exact: one transferWithAuthorization = {exact:,} gas per request (the settler's)",
        f"channel: opening deposit {opened:,} (the reader's) + one claim {claimed:,} (the site's)",
        "",
        "| requests | exact, total gas | channel, total gas | exact per request | "
        "channel per request |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    channel = opened + claimed
    for n in REQUESTS:
        lines.append(f"| {n:,} | {n * exact:,} | {channel:,} | {exact:,} | {channel / n:,.0f} |")
    lines.append("")
    lines.append(
        f"a channel costs less gas than exact from {-(-channel // exact)} requests on "
        f"({channel:,} / {exact:,})"
    )
    return "\n".join(lines)


def main() -> None:
    with anvil() as w3:
        exact, opened, claimed = measure(w3, *w3.eth.accounts[:3])
    print("Gas per payment, exact against channel, on anvil (6-decimal EIP-3009 token):\n")
    print(render(exact, opened, claimed))


if __name__ == "__main__":
    main()
