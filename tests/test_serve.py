"""`micropay serve` on the embedded chain, paid by the command it prints, and the example of a
site's own app (examples/token_site.py) run for real under uvicorn against anvil."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cli_process import ROOT, checkout_env, stop_group

from micropay.channels import ChannelClient
from micropay.deployments import deploy
from micropay.devnode import anvil, free_port
from micropay.http_client import DepositPolicy, HttpPayer, PaymentPolicy, PaymentTransport
from micropay.networks import dev_keys
from micropay.tokens import TokenClient

pytestmark = pytest.mark.standalone

MICROPAY = shutil.which("micropay", path=str(Path(sys.executable).parent))


@pytest.fixture(scope="module")
def serve_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return checkout_env(tmp_path_factory.mktemp("serve") / "home", columns=80)


def _wait_for_line(process: subprocess.Popen[str], pattern: str, timeout: float = 60) -> list[str]:
    """Read stdout until a line matches ``pattern``; return every line read."""
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            raise AssertionError(f"exited before {pattern!r}: {lines}")
        lines.append(line)
        if re.search(pattern, line):
            return lines
    raise AssertionError(f"no {pattern!r} in {lines}")


def test_embedded_serve_prints_a_command_that_pays_from_its_reader(serve_env):
    port = free_port()
    refused = subprocess.run(
        [MICROPAY, "--network", "embedded", "serve", "--host", "0.0.0.0", "--port", str(port)],
        capture_output=True,
        text=True,
        env=serve_env,
        timeout=60,
    )
    assert refused.returncode == 1 and "not loopback" in refused.stderr
    assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    bad_price = subprocess.run(
        [MICROPAY, "--network", "embedded", "serve", "--port", str(port), "--price", "1.5"],
        capture_output=True,
        text=True,
        env=serve_env,
        timeout=60,
    )
    assert bad_price.returncode == 1 and "plain numbers are base units" in bad_price.stderr

    server = subprocess.Popen(
        [MICROPAY, "--network", "embedded", "serve", "--port", str(port), "--price", "20gwei"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=serve_env,
        start_new_session=True,
    )
    try:
        lines = _wait_for_line(server, "Ctrl-C stops")
        [command] = [line for line in lines if "MICROPAY_PRIVATE_KEY=" in line]
        assert f"http://127.0.0.1:{port}/rpc" in command and "20000000000 wei" in "".join(lines)
        words = shlex.split(command)
        key = words[0].split("=", 1)[1]
        assert words[1] == "micropay" and words[2:4] == [
            "--network",
            f"http://127.0.0.1:{port}/rpc",
        ]
        env = {**serve_env, "MICROPAY_PRIVATE_KEY": key}
        for charged_total in (20_000_000_000, 40_000_000_000):  # a new channel, then reused
            paid = subprocess.run(
                [MICROPAY, *words[2:]], capture_output=True, text=True, env=env, timeout=60
            )
            assert paid.returncode == 0, paid.stderr
            assert "Paid 20000000000 by" in paid.stdout
            assert f"(total {charged_total})" in paid.stderr
        # a reader who caps the price below the site's pays nothing and is told why
        capped = [*words[2:5], "--max-price", "1gwei", words[-1]]
        refused = subprocess.run(
            [MICROPAY, *capped], capture_output=True, text=True, env=env, timeout=60
        )
        assert refused.returncode == 1 and "error:" in refused.stderr
        assert "Traceback" not in refused.stderr
        # the channel get opened is in the CLI's wallet, beside the channel commands' own
        listed = subprocess.run(
            [MICROPAY, *words[2:4], "channel", "list"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert listed.returncode == 0, listed.stderr
        assert "open" in listed.stdout and "40000000000" in listed.stdout
    finally:
        _, err = stop_group(server)
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def chain() -> Iterator[object]:
    with anvil() as w3:
        yield w3


def test_token_site_example_takes_token_payments_and_its_watchtower_claims(
    chain, serve_env, tmp_path
):
    w3 = chain
    deployer, site, reader = dev_keys(3)
    deployment = deploy(w3, deployer)
    usdc = TokenClient.deploy(w3, deployer, "USD Coin (test)", "USDC", 6)
    usdc.mint(reader.address, 100 * 10**6, deployer)
    port = free_port()
    env = {
        **serve_env,
        "MICROPAY_PRIVATE_KEY": "0x" + bytes(site.key).hex(),
        "MICROPAY_RPC": w3.provider.endpoint_uri,
        "MICROPAY_TOKEN": usdc.address,
        "MICROPAY_PRICE": "0.01",
        "MICROPAY_LEDGER": f"sqlite:///{tmp_path / 'site.db'}",
        "MICROPAY_CONFIRMATIONS": "0",
        "MICROPAY_POLL": "0.2",
    }
    app = subprocess.Popen(
        [
            sys.executable, "-m", "uvicorn", "--factory", "--app-dir", str(ROOT / "examples"),
            "token_site:create_app", "--host", "127.0.0.1", "--port", str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert app.poll() is None and time.monotonic() < deadline, "the app did not start"
            time.sleep(0.2)
        offer = httpx.get(url + "/reports/q3-outlook")
        assert offer.status_code == 402

        price = 10_000  # 0.01 of a 6-decimal token
        policy = PaymentPolicy(
            max_price=price,
            assets=frozenset({usdc.address}),
            withdraw_delay=3_600,
            deposit=DepositPolicy(requests=50),
        )
        payer = HttpPayer(w3, reader, policy, store=tmp_path / "reader.json")
        with httpx.Client(transport=PaymentTransport(payer)) as client:
            for _ in range(3):
                answer = client.get(url + "/reports/q3-outlook")
                assert answer.status_code == 200, answer.text
                assert answer.json()["paid"] == price
        [status] = payer.channels()
        assert status.channel.config.token == usdc.address
        assert usdc.balance_of(reader.address) == 100 * 10**6 - 50 * price

        # The reader asks for the rest back: the watchtower beside the app claims at once.
        payer.withdraw(url)
        client_state = status.channel.config
        deadline = time.monotonic() + 30
        channels = ChannelClient(w3, deployment.channels)
        while channels.state(client_state).claimed < 3 * price:
            assert time.monotonic() < deadline, "the watchtower did not claim"
            time.sleep(0.2)
        assert usdc.balance_of(site.address) == 3 * price
    finally:
        _, err = stop_group(app)
    assert "watchtower started" in err and "watchtower stopped" in err, err
    assert "Traceback" not in err
