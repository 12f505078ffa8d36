"""The `micropay` console script end to end against a real anvil: every command, every
user error one clear line with a non-zero exit."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from web3 import Web3

from micropay.devnode import anvil
from micropay.networks import dev_keys

pytestmark = pytest.mark.standalone

PAYEE = dev_keys(2)[1].address
MICROPAY = shutil.which("micropay", path=str(Path(sys.executable).parent))


@pytest.fixture(scope="module")
def node():
    with anvil() as w3:
        yield w3


@pytest.fixture(scope="module")
def tmp_path(tmp_path_factory):
    """One folder (and so one deployment registry) for the module: deploy runs once."""
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def run_env(node, tmp_path):
    env = {
        **os.environ,
        "MICROPAY_LOCAL_RPC": node.provider.endpoint_uri,
        "MICROPAY_HOME": str(tmp_path / "home"),
        "MICROPAY_NETWORK": "anvil",
        "NO_COLOR": "1",
        "COLUMNS": "200",
    }
    env.pop("MICROPAY_PRIVATE_KEY", None)
    return env


@pytest.fixture(scope="module")
def run(run_env, tmp_path):
    env = run_env

    def invoke(*args: str, ok: bool = True, extra_env: dict[str, str] | None = None):
        result = subprocess.run(
            [MICROPAY, *args],
            capture_output=True,
            text=True,
            env={**env, **(extra_env or {})},
            cwd=tmp_path,
            timeout=120,
        )
        if ok:
            assert result.returncode == 0, result.stderr
        return result

    invoke("deploy")
    return invoke


def advance(w3: Web3, seconds: int) -> None:
    w3.provider.make_request("evm_increaseTime", [seconds])
    w3.provider.make_request("evm_mine", [])


def channel_id_of(output: str) -> str:
    return re.search(r"0x[0-9a-f]{64}", output).group(0)


def test_deploy_records_the_same_addresses_again(run, tmp_path):
    first = json.loads(run("deploy", "--json").stdout)
    again = json.loads(run("deploy", "--json").stdout)
    assert first["PaymentChannels"] == again["PaymentChannels"]
    assert first["deterministic (CREATE2)"] is True
    registry = json.loads((tmp_path / "home" / "deployments.json").read_text())
    assert registry["31337"]["channels"] == first["PaymentChannels"]


def test_channel_open_pay_claim_close_adds_up(run, tmp_path, node):
    opened = run("channel", "open", "--payee", PAYEE, "--deposit", "0.25eth", "--delay", "3600")
    cid = channel_id_of(opened.stdout)
    run("channel", "pay", cid, "1000", "--times", "120", "--out", "pay.json")
    payment = json.loads((tmp_path / "pay.json").read_text())
    assert payment["voucher"]["cumulativeAmount"] == "120000"
    status = json.loads(run("channel", "status", cid, "--json").stdout)
    assert status["deposited"] == 25 * 10**16 and status["promised by this payer"] == 120000
    before = node.eth.get_balance(PAYEE)
    claimed = run("--dev-account", "2", "channel", "claim", "pay.json")  # a relayer claims
    assert "120000 wei" in claimed.stdout
    assert node.eth.get_balance(PAYEE) - before == 120000
    run("channel", "pay", cid, "5", "--out", "pay2.json")
    closed = run("--dev-account", "1", "channel", "close", "pay2.json")
    assert "120005 wei" in closed.stdout
    final = json.loads(run("channel", "status", cid, "--json").stdout)
    assert final["finished"] is True and final["claimed"] == 120005


def test_channel_withdraw_request_then_finish(run, node):
    cid = channel_id_of(
        run("channel", "open", "--payee", PAYEE, "--deposit", "1000", "--delay", "600").stdout
    )
    run("channel", "withdraw", cid)
    early = run("channel", "withdraw", cid, "--finish", ok=False)
    assert early.returncode == 1 and "WithdrawNotReady" in early.stderr
    advance(node, 600)
    assert "1000 wei" in run("channel", "withdraw", cid, "--finish").stdout


def test_stream_create_status_withdraw_cancel(run, node):
    created = run(
        "stream", "create", "--recipient", PAYEE, "--amount", "1000000", "--duration", "1000"
    )
    sid = channel_id_of(created.stdout)
    advance(node, 500)
    status = json.loads(run("stream", "status", sid, "--json").stdout)
    assert 0 < status["withdrawable"] < 1_000_000
    withdrew = run("--dev-account", "1", "stream", "withdraw", sid)
    assert "withdrew" in withdrew.stdout
    canceled = run("stream", "cancel", sid)
    assert "returned" in canceled.stdout
    after = json.loads(run("stream", "status", sid, "--json").stdout)
    assert after["status"] == "canceled"


@pytest.mark.parametrize(
    "args, env, message",
    [
        (("channel", "open", "--payee", "0x123", "--deposit", "1eth"), {}, "bad payee"),
        (("--network", "mars", "deploy"), {}, "unknown network 'mars'"),
        (("--network", "http://127.0.0.1:9", "deploy"), {}, "no node answers"),
        (("channel", "open", "--payee", PAYEE, "--deposit", "1000000eth"), {}, "cannot pay value"),
        (("channel", "open", "--payee", PAYEE, "--deposit", "1.5"), {}, "bad amount"),
        (("deploy",), {"MICROPAY_PRIVATE_KEY": "zz"}, "does not hold a valid private key"),
        (("--account", "nobody-here", "deploy"), {}, "no ape account named"),
        (("channel", "status", "0x12"), {}, "bad channel id"),
        (("channel", "pay", "0x" + "00" * 32, "5"), {}, "no stored channel"),
        (("channel", "claim", "missing.json"), {}, "missing.json"),
        (("stream", "status", "0x" + "00" * 32), {}, "no fixed stream"),
    ],
)
def test_user_errors_are_one_line_and_non_zero(run, args, env, message):
    result = run(*args, ok=False, extra_env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_missing_key_on_a_url_network_is_one_line(run, node):
    result = run("--network", node.provider.endpoint_uri, "deploy", ok=False)
    assert result.returncode == 1
    assert "missing key" in result.stderr and "Traceback" not in result.stderr


def test_unknown_command_is_a_usage_error(run):
    result = run("bogus", ok=False)
    assert result.returncode == 2 and "No such command" in result.stderr


def _spawn(run_env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [MICROPAY, *args], env=run_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_for(predicate, timeout: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_serve_answers_free_and_priced_pages_then_stops_on_sigterm(run, run_env):
    import signal

    import httpx

    from micropay.devnode import free_port

    port = free_port()
    server = _spawn(run_env, "--dev-account", "1", "serve", "--port", str(port))
    try:

        def up() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/").status_code == 200
            except httpx.TransportError:
                return False

        _wait_for(up)
        priced = httpx.get(f"http://127.0.0.1:{port}/articles/vouchers-explained")
        assert priced.status_code == 402 and "PAYMENT-REQUIRED" in priced.headers
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    assert server.returncode in (0, -signal.SIGTERM)


def test_watch_runs_rounds_and_stops_cleanly_on_sigterm(run, run_env, tmp_path):
    import signal

    ledger = tmp_path / "watch.db"
    tower = _spawn(
        run_env,
        "--dev-account",
        "1",
        "watch",
        "--ledger",
        f"sqlite:///{ledger}",
        "--confirmations",
        "0",
        "--poll",
        "0.2",
    )
    _wait_for(ledger.exists)
    import time

    time.sleep(1.0)  # a few rounds
    tower.send_signal(signal.SIGTERM)
    out, err = tower.communicate(timeout=30)
    assert tower.returncode == 0, err
    assert "watching 0 channel(s)" in out and "stopped" in out


def test_node_starts_anvil_on_the_port_asked(run_env):
    import signal

    from micropay.devnode import free_port

    port = free_port()
    node = _spawn(run_env, "node", "anvil", "--port", str(port))
    try:
        w3 = Web3(Web3.HTTPProvider(f"http://127.0.0.1:{port}"))
        _wait_for(w3.is_connected)
        assert w3.eth.chain_id == 31337
    finally:
        node.send_signal(signal.SIGINT)
        node.wait(timeout=30)


def test_demo_command_tells_the_story_and_balances_add_up(run_env):
    env = {**run_env, "MICROPAY_NETWORK": "embedded"}
    result = subprocess.run(
        [MICROPAY, "demo", "--articles", "30"], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    assert "nothing lost" in result.stdout and "stale_voucher" in result.stdout
