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

import httpx
import pytest
from eth_account import Account
from paywall_helpers import Server
from web3 import Web3

from micropay.channels import ChannelClient
from micropay.devnode import anvil
from micropay.example_site import create_site
from micropay.http_client import HttpPayer, PaymentPolicy, PaymentTransport
from micropay.networks import dev_keys
from micropay.payer import Payer
from micropay.vouchers import ChannelConfig, Voucher, recover_signer

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
    assert first["payment_channels"] == again["payment_channels"]
    assert first["deterministic_create2"] is True
    registry = json.loads((tmp_path / "home" / "deployments.json").read_text())
    [entry] = registry.values()
    assert (entry["chain_id"], entry["channels"]) == (31337, first["payment_channels"])


def test_channel_open_pay_claim_close_adds_up(run, tmp_path, node):
    opened = run("channel", "open", "--payee", PAYEE, "--deposit", "0.25eth", "--delay", "3600")
    cid = channel_id_of(opened.stdout)
    run("channel", "pay", cid, "1000", "--times", "120", "--out", "pay.json")
    payment = json.loads((tmp_path / "pay.json").read_text())
    assert payment["voucher"]["cumulativeAmount"] == "120000"
    status = json.loads(run("channel", "status", cid, "--json").stdout)
    assert status["deposited"] == 25 * 10**16 and status["promised_by_this_payer"] == 120000
    before = node.eth.get_balance(PAYEE)
    # Settling is the payee's act: another key cannot claim the voucher it holds.
    relayed = run("--dev-account", "2", "channel", "claim", "pay.json", ok=False)
    assert relayed.returncode == 1 and relayed.stderr.startswith("error: only the payee")
    assert node.eth.get_balance(PAYEE) == before
    claimed = run("--dev-account", "1", "channel", "claim", "pay.json")
    assert "120000 wei" in claimed.stdout
    assert json.loads(run("channel", "status", cid, "--json").stdout)["claimed"] == 120000
    run("channel", "pay", cid, "5", "--out", "pay2.json")
    closed = run("--dev-account", "1", "channel", "close", "pay2.json")
    assert "120005 wei" in closed.stdout
    final = json.loads(run("channel", "status", cid, "--json").stdout)
    assert (final["state"], final["claimed"], final["remaining"]) == ("finished", 120005, 0)
    assert final["returned_to_the_payer"] == 25 * 10**16 - 120005
    shown = run("channel", "status", cid, extra_env={"COLUMNS": "80"}).stdout
    assert cid in shown and "remaining" in shown  # piped in 80 columns: the id is whole


def test_a_payment_file_with_a_compact_signature_is_claimed(run, tmp_path, node):
    """EIP-2098: the 64-byte form of the voucher's signature claims the same total."""
    cid = channel_id_of(
        run("channel", "open", "--payee", PAYEE, "--deposit", "1000", "--delay", "600").stdout
    )
    run("channel", "pay", cid, "7", "--out", "pay.json")
    payment = json.loads((tmp_path / "pay.json").read_text())
    rsv = bytes.fromhex(payment["voucher"]["signature"][2:])
    compact = rsv[:32] + (int.from_bytes(rsv[32:64], "big") | (rsv[64] - 27) << 255).to_bytes(
        32, "big"
    )
    payment["voucher"]["signature"] = "0x" + compact.hex()
    (tmp_path / "compact.json").write_text(json.dumps(payment))
    assert "7 wei" in run("--dev-account", "1", "channel", "claim", "compact.json").stdout
    assert json.loads(run("channel", "status", cid, "--json").stdout)["claimed"] == 7


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
        (("stream", "status", "0x" + "00" * 32), {}, "no stream 0x"),
    ],
)
def test_user_errors_are_one_line_and_non_zero(run, args, env, message):
    result = run(*args, ok=False, extra_env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_loopback_dev_chain_url_signs_with_a_test_account(run, node):
    # (a URL that is no loopback dev chain gets no test account: tests/test_networks.py)
    result = run("--network", node.provider.endpoint_uri, "deploy", "--json")
    assert json.loads(result.stdout)["payment_channels"]


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


# -- money never goes to an address without the right code -----------------------------------

PAYER = dev_keys(1)[0]
NOWHERE = "0x" + "5e" * 20  # no code on any test chain


def _cli(w3: Web3, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "MICROPAY_LOCAL_RPC": w3.provider.endpoint_uri,
        "MICROPAY_HOME": str(home),
        "MICROPAY_NETWORK": "anvil",
        "NO_COLOR": "1",
        "COLUMNS": "200",
    }
    env.pop("MICROPAY_PRIVATE_KEY", None)
    return subprocess.run(
        [MICROPAY, *args], capture_output=True, text=True, env=env, cwd=home.parent, timeout=120
    )


def _refused_and_sent_nothing(w3: Web3, result, message: str, spent_before) -> None:
    assert result.returncode == 1, result.stdout
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert (w3.eth.get_balance(PAYER.address), w3.eth.get_transaction_count(PAYER.address)) == (
        spent_before
    )


@pytest.fixture(scope="module")
def restarted(tmp_path_factory):
    """A deployments.json written by `micropay deploy` on an earlier node, and a new node of
    the same chain id where nothing is deployed (a restarted `micropay node`)."""
    home = tmp_path_factory.mktemp("restarted") / "home"
    with anvil() as earlier:
        assert _cli(earlier, home, "deploy").returncode == 0
        chain_id = earlier.eth.chain_id
    with anvil() as now:
        assert now.eth.chain_id == chain_id
        yield now, home


@pytest.mark.parametrize(
    "command",
    [
        ("stream", "create", "--recipient", PAYEE, "--amount", "1eth", "--duration", "1000"),
        ("channel", "open", "--payee", PAYEE, "--deposit", "0.1eth"),
    ],
)
def test_a_registry_from_an_earlier_node_sends_nothing(restarted, command):
    w3, home = restarted
    before = (w3.eth.get_balance(PAYER.address), w3.eth.get_transaction_count(PAYER.address))
    result = _cli(w3, home, *command)
    _refused_and_sent_nothing(w3, result, "is from another node", before)
    assert "run `micropay deploy`" in result.stderr


def test_a_recorded_deployment_without_code_on_this_chain_sends_nothing(restarted, tmp_path):
    """Even with this chain's genesis (a hand-copied or reset registry) the code is checked."""
    w3, home = restarted
    genesis = "0x" + bytes(w3.eth.get_block(0)["hash"]).hex()
    [entry] = json.loads((home / "deployments.json").read_text()).values()
    copied = tmp_path / "copied" / "home"
    copied.mkdir(parents=True)
    (copied / "deployments.json").write_text(
        json.dumps({f"31337:{genesis}": {**entry, "genesis": genesis}})
    )
    before = (w3.eth.get_balance(PAYER.address), w3.eth.get_transaction_count(PAYER.address))
    result = _cli(
        w3,
        copied,
        "stream",
        "create",
        "--recipient",
        PAYEE,
        "--amount",
        "1eth",
        "--duration",
        "1000",
    )
    _refused_and_sent_nothing(w3, result, "no micropay PaymentChannels code at", before)
    assert "is not on this chain; run `micropay deploy`" in result.stderr


@pytest.mark.parametrize(
    "command",
    [
        ("stream", "create", "--recipient", PAYEE, "--amount", "1000", "--duration", "1000"),
        ("channel", "open", "--payee", PAYEE, "--deposit", "1000"),
    ],
)
def test_a_token_without_code_sends_nothing(run, node, command):
    before = (node.eth.get_balance(PAYER.address), node.eth.get_transaction_count(PAYER.address))
    result = run(*command, "--token", NOWHERE, ok=False)
    _refused_and_sent_nothing(node, result, "is not an ERC-20 token: the address holds no", before)


def test_an_embedded_deploy_records_nothing(tmp_path_factory):
    home = tmp_path_factory.mktemp("embedded") / "home"
    env = {**os.environ, "MICROPAY_HOME": str(home), "NO_COLOR": "1"}
    result = subprocess.run(
        [MICROPAY, "--network", "embedded", "deploy", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "embedded chain ends" in json.loads(result.stdout)["recorded_in"]
    assert not (home / "deployments.json").exists()


# -- the payer's main key is never written ---------------------------------------------------


def _files_holding(folder: Path, secret: str) -> list[Path]:
    return [
        path
        for path in folder.rglob("*")
        if path.is_file() and secret.lower() in path.read_text(errors="replace").lower()
    ]


def test_open_without_a_session_key_never_writes_the_payers_key(run, tmp_path):
    secret = bytes(PAYER.key).hex()
    cid = channel_id_of(
        run("channel", "open", "--payee", PAYEE, "--deposit", "1000", "--no-session-key").stdout
    )
    home = tmp_path / "home"
    assert _files_holding(home, secret) == []
    [stored] = [
        c
        for c in _wallet(tmp_path)["channels"]
        if "0x" + ChannelConfig.from_json(c["config"]).channel_id.hex() == cid
    ]
    assert stored["config"]["authorizer"] == PAYER.address and "legacySessionKey" not in stored
    paid = json.loads(run("channel", "pay", cid, "7").stdout)
    assert paid["voucher"]["cumulativeAmount"] == "7"
    assert paid["config"]["authorizer"] == PAYER.address
    assert _files_holding(home, secret) == []


def _wallet(tmp_path) -> dict:
    return json.loads((tmp_path / "home" / "wallet.json").read_text())


def _legacy_file(tmp_path, payer, *, authorizer_key: str | None) -> Path:
    """The channel file micropay 0.1's CLI wrote for ``payer``'s channel, in its folder."""
    record = {
        "chainId": payer.client.domain.chain_id,
        "contract": payer.client.address,
        "config": payer.config.to_json(),
        "cumulative": "0",
        "deposited": str(payer.deposited),
        "lastVoucher": None,
    }
    if authorizer_key is None:
        record["authorizer"] = "payer"
    else:
        record["authorizerKey"] = authorizer_key
    path = tmp_path / "home" / "channels" / f"{payer.config.channel_id.hex()}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(record))
    return path


def _listed(run, cid: str) -> dict:
    """``channel list --json``'s entry for one channel."""
    entries = json.loads(run("channel", "list", "--json").stdout)
    [entry] = [c for c in entries if c["channel"] == cid]
    return entry


def _opened_elsewhere(run, node, session_key):
    """A channel opened on chain as micropay 0.1 did (its own random session key)."""
    contracts = json.loads(run("deploy", "--json").stdout)
    client = ChannelClient(node, contracts["payment_channels"])
    return Payer.open(client, PAYER, PAYEE, 1000, withdraw_delay=600, session_key=session_key)


def test_an_old_channel_file_with_the_payers_key_is_imported_without_it(run, node, tmp_path):
    secret = bytes(PAYER.key).hex()
    payer = _opened_elsewhere(run, node, PAYER)  # 0.1 with --no-session-key
    path = _legacy_file(tmp_path, payer, authorizer_key="0x" + secret)  # as 0.1 wrote it
    cid = "0x" + payer.config.channel_id.hex()
    assert json.loads(run("channel", "pay", cid, "3").stdout)["voucher"]["cumulativeAmount"] == "3"
    assert not path.exists() and _files_holding(tmp_path / "home", secret) == []


def test_an_old_channel_file_with_a_session_key_is_imported_and_still_signs(run, node, tmp_path):
    session_key = Account.create()
    payer = _opened_elsewhere(run, node, session_key)
    path = _legacy_file(tmp_path, payer, authorizer_key="0x" + bytes(session_key.key).hex())
    cid = "0x" + payer.config.channel_id.hex()
    paid = json.loads(run("channel", "pay", cid, "9").stdout)
    voucher = Voucher.from_json(paid["voucher"])
    assert recover_signer(payer.client.domain, voucher) == session_key.address
    assert not path.exists()  # imported once; the wallet is the one copy, owner-only
    wallet = tmp_path / "home" / "wallet.json"
    assert wallet.stat().st_mode & 0o077 == 0
    listed = _listed(run, cid)
    assert (listed["state"], listed["spent"], listed["unspent"]) == ("open", 9, 991)


def test_channel_list_and_topup_follow_a_channel_to_the_wei(run, node):
    cid = channel_id_of(
        run("channel", "open", "--payee", PAYEE, "--deposit", "1000", "--delay", "600").stdout
    )

    def listed() -> dict:
        return _listed(run, cid)

    run("channel", "pay", cid, "300")
    assert (listed()["spent"], listed()["unspent"], listed()["deposited"]) == (300, 700, 1000)
    assert "topped up" in run("channel", "topup", cid, "500").stdout
    assert json.loads(run("channel", "status", cid, "--json").stdout)["deposited"] == 1500
    assert (listed()["spent"], listed()["unspent"], listed()["deposited"]) == (300, 1200, 1500)
    assert cid in run("channel", "list").stdout  # the whole id, even in a table
    refused = run("channel", "topup", cid, "0", ok=False)
    assert refused.returncode == 1 and "more than zero" in refused.stderr
    run("channel", "withdraw", cid)
    entry = listed()
    assert entry["state"] == "withdrawing" and entry["withdraw_at"] > 0
    advance(node, 600)
    run("channel", "withdraw", cid, "--finish")
    assert (listed()["state"], listed()["unspent"]) == ("finished", 0)
    refused = run("channel", "topup", cid, "5", ok=False)
    assert refused.returncode == 1 and "is finished" in refused.stderr


def test_a_channel_paid_over_http_is_seen_and_withdrawn_from_the_cli(run, node, tmp_path):
    """One wallet: the HTTP client's channels are the CLI's, and the SDK withdraws them too."""
    contracts = json.loads(run("deploy", "--json").stdout)
    site_key = dev_keys(3)[2]
    site = create_site(node, site_key=site_key, contract=contracts["payment_channels"], price=1000)
    wallet = tmp_path / "home" / "wallet.json"
    with Server(site.app) as server:
        reader = HttpPayer(node, PAYER, PaymentPolicy(max_price=1000), store=wallet)
        with httpx.Client(base_url=server.url, transport=PaymentTransport(reader)) as client:
            for _ in range(2):
                assert client.get("/articles/vouchers-explained").status_code == 200
        [entry] = [
            c
            for c in json.loads(run("channel", "list", "--json").stdout)
            if c["payee"] == site_key.address
        ]
        assert entry["sites"] == [server.url.rstrip("/")] and entry["spent"] == 2000
        cid = entry["channel"]
        assert "withdraw requested" in run("channel", "withdraw", cid).stdout
        advance(node, 86_400)
        held = node.eth.get_balance(contracts["payment_channels"])
        again = HttpPayer(node, PAYER, PaymentPolicy(max_price=1000), store=wallet)
        [status] = again.withdraw(server.url + "/any/page")
        assert status.state == "finished" and status.unspent == 0
        # The site never claimed: the whole deposit goes back to the reader, to the wei.
        assert held - node.eth.get_balance(contracts["payment_channels"]) == entry["deposited"]
        assert again.withdraw(server.url) == []  # nothing left to withdraw
        assert [s.state for s in again.channels() if s.channel.sites] == ["finished"]


# -- a finished channel signs nothing --------------------------------------------------------


def test_pay_on_a_withdrawn_channel_is_refused(run, node, tmp_path):
    cid = channel_id_of(
        run("channel", "open", "--payee", PAYEE, "--deposit", "1000", "--delay", "600").stdout
    )
    run("channel", "withdraw", cid)
    advance(node, 600)
    run("channel", "withdraw", cid, "--finish")
    path = tmp_path / "home" / "wallet.json"
    before = path.read_text()
    refused = run("channel", "pay", cid, "5", ok=False)
    assert refused.returncode == 1 and "is finished (closed or withdrawn)" in refused.stderr
    assert refused.stdout == "" and path.read_text() == before


def test_pay_on_a_closed_channel_is_refused(run):
    cid = channel_id_of(run("channel", "open", "--payee", PAYEE, "--deposit", "1000").stdout)
    run("channel", "pay", cid, "10", "--out", "closing.json")
    run("--dev-account", "1", "channel", "close", "closing.json")
    refused = run("channel", "pay", cid, "5", ok=False)
    assert refused.returncode == 1 and "is finished (closed or withdrawn)" in refused.stderr


# -- `micropay node` ---------------------------------------------------------------------------


def _descendants(pid: int) -> set[int]:
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").iterdir():
            children = (task / "children").read_text().split()
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_node_on_a_busy_port_fails_with_one_line(run_env):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [MICROPAY, "node", "anvil", "--port", str(port)],
            capture_output=True,
            text=True,
            env=run_env,
            timeout=60,
        )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: 127.0.0.1:{port} is already in use (another node?): stop it or pass --port"
    )


@pytest.mark.parametrize("signum", ["SIGTERM", "SIGHUP"])
def test_node_stops_its_anvil_on_sigterm_and_sighup(run_env, signum):
    import signal

    from micropay.devnode import free_port

    port = free_port()
    node = _spawn(run_env, "node", "anvil", "--port", str(port))
    children: set[int] = set()
    try:
        w3 = Web3(Web3.HTTPProvider(f"http://127.0.0.1:{port}"))
        _wait_for(w3.is_connected)
        children = _descendants(node.pid)  # the npm wrapper and the anvil binary
        assert children
        node.send_signal(getattr(signal, signum))
        node.communicate(timeout=30)
        assert node.returncode == 0
        _wait_for(lambda: not any(_alive(pid) for pid in children), timeout=15)
        assert not w3.is_connected()
    finally:  # whatever failed, leave nothing running
        for pid in [node.pid, *children]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        node.wait()
