"""A generated corpus of hostile requests against a real uvicorn server on a real chain.

Every request carries something that must not pay: replayed, stale, skipped-ahead and
over-deposit vouchers; vouchers for other channels, chains and contracts; forged, bit-
flipped, high-s and malformed signatures; corrupted, truncated, re-typed, nested, giant,
duplicated and garbage headers. The server must answer every one with a 4xx (never a 5xx,
never content), and the book must hold exactly what the honest requests paid.
"""

from __future__ import annotations

import base64
import collections
import json
import random
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest
from paywall_helpers import Server, chain
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from micropay._x402 import PaymentPayload
from micropay.payee import Payee
from micropay.payer import Payer
from micropay.paywall import Paywall
from micropay.vouchers import (
    SECP256K1_N,
    ChannelConfig,
    Voucher,
    VoucherDomain,
    new_session_key,
    sign_voucher,
)

pytestmark = pytest.mark.standalone

PRICE = 1_000
SECRET = "the paid article text"
CORPUS_MINIMUM = 5_000


@dataclass(frozen=True)
class Case:
    kind: str
    path: str
    headers: tuple[tuple[str, str | bytes], ...]
    method: str = "GET"
    raw: bool = False  # sent over a plain socket, byte for byte


async def article(request: Request) -> PlainTextResponse:
    return PlainTextResponse(SECRET)


@pytest.fixture(scope="module")
def site() -> Iterator:
    with chain() as node:
        payee = Payee(node.channels, node.site)
        app = Starlette(routes=[Route("/articles/{slug}", article)])
        app.add_middleware(Paywall, payee=payee, prices={"GET /articles/{slug}": PRICE})
        with Server(app) as server:
            yield node, payee, server


class Channel:
    def __init__(self, node, reader, deposit, payee=None):
        self.node = node
        self.payer = Payer.open(
            node.channels, reader, payee or node.site.address, deposit, withdraw_delay=7200
        )
        self.key = bytes(self.payer.authorizer_key.key)

    def payload(
        self,
        cumulative,
        *,
        key=None,
        domain=None,
        config=None,
        network=None,
        price=PRICE,
        channel_id=None,
    ) -> dict:
        domain = domain or self.node.channels.domain
        config = config or self.payer.config
        voucher = sign_voucher(domain, channel_id or config.channel_id, cumulative, key or self.key)
        voucher = Voucher(config.channel_id, cumulative, voucher.signature)
        header = PaymentPayload(
            network or f"eip155:{self.node.channels.domain.chain_id}",
            price,
            config.token,
            config.payee,
            config,
            voucher,
        ).encode()
        return json.loads(base64.b64decode(header))


def b64(obj) -> str:
    return base64.b64encode(json.dumps(obj).encode()).decode()


def with_signature(obj: dict, signature: bytes) -> dict:
    obj = json.loads(json.dumps(obj))
    obj["payload"]["signature"] = "0x" + signature.hex()
    return obj


def generate(
    node,
    rng: random.Random,
    honest: Channel,
    spare: Channel,
    small: Channel,
    foreign: Channel,
    replays: list[str],
) -> list[Case]:
    """At least CORPUS_MINIMUM hostile requests, each labelled with what it tries."""
    cases: list[Case] = []
    best = 20 * PRICE  # what the honest channel holds after the warm-up

    def add(kind, value, count=1, path=None):
        for _ in range(count):
            slug = rng.randrange(10**6)
            cases.append(
                Case(
                    kind,
                    path or f"/articles/{slug}",
                    (("PAYMENT-SIGNATURE", value),),
                    raw=path is not None or isinstance(value, bytes),
                )
            )

    for header in replays:  # every accepted voucher, sent again
        add("replayed voucher", header, 15)
    for _ in range(250):
        add("stale voucher", b64(honest.payload(rng.randrange(1, best + 1))))
    for _ in range(250):
        skip = best + PRICE * rng.randrange(2, 50)
        add("skip-ahead voucher", b64(honest.payload(skip)))
    for _ in range(200):  # a channel whose 10-price deposit is spent, asked for more
        add("amount above deposit", b64(small.payload(11 * PRICE)))
    other_id = spare.payer.config.channel_id
    for _ in range(200):
        add("voucher for another channel", b64(honest.payload(best + PRICE, channel_id=other_id)))
    for _ in range(200):
        add("another channel's config", b64(spare.payload(best + PRICE, key=honest.key)))
    chain_id, contract = node.channels.domain.chain_id, node.channels.address
    for domain in (VoucherDomain(1, contract), VoucherDomain(chain_id + 1, contract)):
        for _ in range(150):
            add("voucher for another chain", b64(honest.payload(best + PRICE, domain=domain)))
    for _ in range(100):
        add(
            "declared on another network",
            b64(honest.payload(best + PRICE, network=f"eip155:{rng.randrange(1, 10**6)}")),
        )
    for _ in range(200):
        domain = VoucherDomain(chain_id, "0x" + rng.randbytes(20).hex())
        add("voucher for another contract", b64(honest.payload(best + PRICE, domain=domain)))
    for _ in range(200):
        add("signed by a stranger", b64(honest.payload(best + PRICE, key=rng.randbytes(32))))
    valid_next = honest.payload(best + PRICE)
    signature = bytes.fromhex(valid_next["payload"]["signature"][2:])
    for _ in range(300):
        flipped = bytearray(signature)
        flipped[rng.randrange(64)] ^= 1 << rng.randrange(8)
        add("bit-flipped signature", b64(with_signature(valid_next, bytes(flipped))))
    s = int.from_bytes(signature[32:64], "big")
    high_s = signature[:32] + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - signature[64]])
    add("high-s twin signature", b64(with_signature(valid_next, high_s)), 100)
    for v in (0, 1, 26, 29, 255):
        add("bad v", b64(with_signature(valid_next, signature[:64] + bytes([v]))), 20)
    add("zero signature", b64(with_signature(valid_next, bytes(65))), 50)
    for _ in range(100):
        obj = honest.payload(best + PRICE, price=rng.choice([1, PRICE - 1, PRICE + 1, 10**30]))
        add("price mismatch", b64(obj))
    for field in ("payTo", "asset"):
        obj = json.loads(json.dumps(valid_next))
        obj["accepted"][field] = "0x" + rng.randbytes(20).hex()
        add(f"wrong {field}", b64(obj), 50)
    add("channel paying someone else", b64(foreign.payload(PRICE)), 100)
    for _ in range(200):
        authorizer = new_session_key()
        config = ChannelConfig(
            honest.payer.account.address,
            node.site.address,
            honest.payer.config.token,
            authorizer.address,
            7200,
            rng.randbytes(32),
        )
        add(
            "unopened channel", b64(honest.payload(PRICE, config=config, key=bytes(authorizer.key)))
        )
    # Byte-level damage to replayed (already spent) headers.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_.!~ "
    for _ in range(600):
        header = list(rng.choice(replays))
        for _ in range(rng.randrange(1, 4)):
            header[rng.randrange(len(header))] = rng.choice(alphabet)
        add("corrupted base64", "".join(header))
    for _ in range(500):
        header = rng.choice(replays)
        add("truncated header", header[: rng.randrange(len(header))])
    # JSON-level damage: a field of a spent voucher replaced by a random JSON value.
    spent = json.loads(base64.b64decode(replays[0]))
    paths = [
        ("x402Version",),
        ("accepted",),
        ("accepted", "scheme"),
        ("accepted", "network"),
        ("accepted", "amount"),
        ("payload",),
        ("payload", "channel"),
        ("payload", "cumulativeAmount"),
        ("payload", "signature"),
        ("payload", "channel", "salt"),
        ("payload", "channel", "payer"),
        ("payload", "channel", "withdrawDelay"),
        ("payload", "channel", "authorizer"),
    ]
    values = [
        None,
        True,
        False,
        0,
        -1,
        1.5,
        2**300,
        "",
        "0x",
        "x" * 300,
        [],
        {},
        [[[[]]]],
        {"a": {"b": {}}},
        "0x" + "ff" * 32,
        "1e999",
        "NaN",
        "\u0000",
        "\ud7ff" * 10,
    ]
    for _ in range(800):
        obj = json.loads(json.dumps(spent))
        path = rng.choice(paths)
        holder = obj
        for key in path[:-1]:
            holder = holder[key]
        if rng.random() < 0.15:
            holder.pop(path[-1], None)
        else:
            holder[path[-1]] = rng.choice(values)
        add("re-typed field", b64(obj))
    for _ in range(200):
        junk = rng.randbytes(rng.randrange(1, 400)).replace(b"\r", b"").replace(b"\n", b"")
        add("random bytes", junk.replace(b"\x00", b"") or b"x")
    for _ in range(100):
        add("random JSON", b64(rng.choice(values)))
    for depth in (100, 500, 1000, 3000):
        add("deeply nested JSON", base64.b64encode(b"[" * depth + b"]" * depth).decode(), 5)
    for size in (4_097, 16_384, 65_536, 1_048_576):
        add("giant header", "A" * size, 5)
        add("giant header", b64({"x402Version": 2, "pad": "x" * size}), 5)
    for v, scheme in ((1, "channel"), (3, "channel"), (2, "exact"), (2, "upto")):
        obj = json.loads(json.dumps(valid_next))
        obj["x402Version"], obj["accepted"]["scheme"] = v, scheme
        add("wrong version or scheme", b64(obj), 25)
    for _ in range(50):
        slug = rng.randrange(10**6)
        headers = (
            ("PAYMENT-SIGNATURE", rng.choice(replays)),
            ("payment-signature", b64(valid_next)),
        )
        cases.append(Case("duplicate headers", f"/articles/{slug}", headers))
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        for _ in range(10):
            cases.append(
                Case(
                    "other method", "/articles/x", (("PAYMENT-SIGNATURE", b64(valid_next)),), method
                )
            )
    for path in (
        "/articles/x/",
        "//articles/x",
        "/articles//x",
        "/articles/x?free=1",
        "/articles/%78",
        "/%61rticles/x",
    ):
        add("path spelling", rng.choice(replays), 10, path)
    for _ in range(100):
        cases.append(Case("no header", f"/articles/{rng.randrange(10**6)}", ()))
    rng.shuffle(cases)
    return cases


def send_raw(port: int, case: Case) -> tuple[int, str, str]:
    """Bytes h11 will not put on the wire (control characters, high bytes) go by socket."""
    head = f"{case.method} {case.path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    raw = (
        head.encode()
        + b"".join(
            name.encode()
            + b": "
            + (value if isinstance(value, bytes) else value.encode())
            + b"\r\n"
            for name, value in case.headers
        )
        + b"\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(raw)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    if not received:
        return 0, "", ""
    header_block, _, body = received.partition(b"\r\n\r\n")
    status = int(header_block.split(b" ", 2)[1])
    reason = ""
    if b"content-type: application/json" in header_block.lower():
        reason = json.loads(body).get("error", "")
    return status, reason, body.decode("latin-1")


def send(client: httpx.Client, case: Case) -> tuple[int, str, str]:
    if case.raw:
        return send_raw(client.base_url.port or 80, case)
    request = client.build_request(case.method, case.path, headers=list(case.headers))
    try:
        response = client.send(request)
    except httpx.RemoteProtocolError:
        return 0, "", ""  # the HTTP server itself dropped the request: no content served
    reason = ""
    if response.headers.get("content-type") == "application/json":
        reason = response.json().get("error", "")
    return response.status_code, reason, response.text


def test_hostile_corpus_gets_4xx_never_5xx_never_content(site):
    node, payee, server = site
    honest = Channel(node, node.readers[0], 100 * PRICE)
    spare = Channel(node, node.readers[1], 100 * PRICE)
    small = Channel(node, node.readers[2], 10 * PRICE)
    foreign = Channel(node, node.readers[3], 100 * PRICE, payee=node.deployer.address)
    replays = []
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for n in range(1, 21):  # honest warm-up: 20 paid reads
            header = b64(honest.payload(n * PRICE))
            response = client.get(f"/articles/{n}", headers={"PAYMENT-SIGNATURE": header})
            assert response.status_code == 200
            replays.append(header)
        for n in range(1, 11):  # the small channel spends its whole deposit
            header = b64(small.payload(n * PRICE))
            response = client.get("/articles/s", headers={"PAYMENT-SIGNATURE": header})
            assert response.status_code == 200
    held_before = {cid: payee.book.best(cid).cumulative_amount for cid in payee.book.channel_ids()}

    cases = generate(node, random.Random(402), honest, spare, small, foreign, replays)
    assert len(cases) >= CORPUS_MINIMUM

    def run(chunk: list[Case]) -> list[tuple[Case, int, str, str]]:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            return [(case, *send(client, case)) for case in chunk]

    chunks = [cases[i::4] for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        results = [r for part in pool.map(run, chunks) for r in part]

    by_status = collections.Counter(status for _, status, _, _ in results)
    by_kind = collections.defaultdict(collections.Counter)
    for case, status, reason, _ in results:
        by_kind[case.kind][f"{status} {reason}".strip()] += 1
    print(f"\nhostile corpus: {len(results)} requests; statuses {dict(sorted(by_status.items()))}")
    for kind, outcomes in sorted(by_kind.items()):
        print(f"  {kind:<32} {dict(outcomes.most_common())}")

    server_errors = [(c.kind, s) for c, s, _, _ in results if s >= 500]
    served = [(c.kind, s) for c, s, _, text in results if 200 <= s < 300 or SECRET in text]
    assert server_errors == []
    assert served == []
    assert all(400 <= s < 500 for _, s, _, _ in results if s != 0)
    # Every refusal names its reason, except requests the HTTP parser itself turned away.
    unexplained = [
        c.kind
        for c, s, reason, text in results
        if s in (400, 402, 409, 431) and not reason and text != "Invalid HTTP request received."
    ]
    assert unexplained == []
    held_after = {cid: payee.book.best(cid).cumulative_amount for cid in payee.book.channel_ids()}
    assert held_after == held_before

    # The server is still healthy and honest payments still go through.
    with httpx.Client(base_url=server.url) as client:
        header = b64(honest.payload(21 * PRICE))
        response = client.get("/articles/after", headers={"PAYMENT-SIGNATURE": header})
        assert (response.status_code, response.text) == (200, SECRET)
