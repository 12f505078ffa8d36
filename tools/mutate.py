"""Mutation check: deliberately broken copies of the contracts must each fail a test.

Each mutant below is one small, plausible mistake (a removed check, a flipped comparison,
an off-by-one, a wrong variable) in PaymentChannels, the libraries or Streams. For each,
this script copies the project into a temporary folder (the real ``contracts/`` is never
touched), applies the one edit, rebuilds the shipped artifacts there (the SDK deploys those,
so the tests exercise the mutant) and runs the relevant fast tests with ``-x``. A mutant is
*killed* when a test fails, *survives* when all pass, and is *stillborn* if it does not
compile. An unmutated copy runs first: if that fails, nothing is measured.

Mutants that survive the Python tests get a second chance at dying under forge's fuzz and
invariant suites (``forge-tests/``), since those test the same contracts from Solidity.

Usage: ``python tools/mutate.py [--only ID[,ID...]] [--json FILE] [--no-forge] [--list]``
Exit status 0 only if every mutant was killed and none is stale (its snippet no longer in
the source, which means the list needs updating, not that the code is safe).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from audit import forge_binary, tool_path  # tools/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent

CHANNEL_TESTS = [
    "tests/test_channels.py",
    "tests/test_channel_ceilings.py",
    "tests/test_hostile_tokens.py",
    "tests/test_digest_differential.py",
    "tests/test_voucher_replay.py",
    "tests/test_invariants_stateful.py",
    "tests/test_chain_follower_refunds.py",
]
STREAM_TESTS = [
    "tests/test_streams_fixed.py",
    "tests/test_streams_open.py",
    "tests/test_streams_precision.py",
    "tests/test_hostile_tokens.py",
    "tests/test_invariants_stateful.py",
    "tests/test_streams_stateful.py",
]
LIBRARY_TESTS = ["tests/test_hostile_tokens.py", *CHANNEL_TESTS, *STREAM_TESTS]


@dataclass(frozen=True)
class Mutant:
    id: str
    file: str
    kind: str
    description: str
    original: str
    replacement: str

    @property
    def tests(self) -> list[str]:
        if self.file.endswith("Streams.sol"):
            chosen = STREAM_TESTS
        elif self.file.endswith("PaymentChannels.sol"):
            chosen = CHANNEL_TESTS
        else:
            chosen = LIBRARY_TESTS
        return list(dict.fromkeys(chosen))


PC = "contracts/PaymentChannels.sol"
TT = "contracts/libraries/TokenTransfers.sol"
RL = "contracts/libraries/ReentrancyLock.sol"
ST = "contracts/Streams.sol"

MUTANTS = [
    # -- PaymentChannels -------------------------------------------------------------------
    Mutant(
        "pc-stale-claim",
        PC,
        "removed check",
        "claim of a total at or below what was claimed is not refused",
        "        if (totalClaimed <= claimed) revert PaymentChannels_NothingToClaim"
        "(id, totalClaimed, claimed);\n",
        "",
    ),
    Mutant(
        "pc-deposit-bound-off-by-one",
        PC,
        "off-by-one",
        "a total of exactly the deposit is refused (> became >=)",
        "        if (totalClaimed > deposited) revert",
        "        if (totalClaimed >= deposited) revert",
    ),
    Mutant(
        "pc-no-deposit-bound",
        PC,
        "removed check",
        "a total above the deposit is accepted",
        "        if (totalClaimed > deposited) revert",
        "        if (false) revert",
    ),
    Mutant(
        "pc-no-ceiling",
        PC,
        "removed check",
        "a total above the voucher's ceiling is accepted",
        "        if (totalClaimed > ceiling) revert",
        "        if (false) revert",
    ),
    Mutant(
        "pc-ceiling-off-by-one",
        PC,
        "off-by-one",
        "a total of exactly the voucher's ceiling is refused (> became >=)",
        "        if (totalClaimed > ceiling) revert",
        "        if (totalClaimed >= ceiling) revert",
    ),
    Mutant(
        "pc-voucher-signs-total",
        PC,
        "wrong variable",
        "the voucher signature is checked over the claimed total, not the ceiling",
        "voucherDigest(id, ceiling), signature)",
        "voucherDigest(id, totalClaimed), signature)",
    ),
    Mutant(
        "pc-anyone-claims",
        PC,
        "removed check",
        "anyone who saw a voucher may settle it",
        "        if (msg.sender != config.payee) revert PaymentChannels_NotPayee(id, msg.sender);"
        "\n        amount = _settle(",
        "        amount = _settle(",
    ),
    Mutant(
        "pc-anyone-claims-many",
        PC,
        "removed check",
        "anyone who saw vouchers may settle them in a claimMany",
        "            if (msg.sender != config.payee) revert "
        "PaymentChannels_NotPayee(id, msg.sender);\n",
        "",
    ),
    Mutant(
        "pc-relay-without-consent",
        PC,
        "removed check",
        "a relayed claim needs no payee signature",
        "        _checkPayeeClaim(id, config.payee, totalClaimed, payeeSignature);\n",
        "",
    ),
    Mutant(
        "pc-relay-many-without-consent",
        PC,
        "removed check",
        "a relayed claimManyFor needs no payee signatures",
        "            _checkPayeeClaim(id, config.payee, item.totalClaimed, payeeSignatures[i]);\n",
        "",
    ),
    Mutant(
        "pc-consent-by-authorizer",
        PC,
        "wrong variable",
        "a relayed claim is authorised by the voucher's signer instead of the payee",
        "        _checkPayeeClaim(id, config.payee, totalClaimed, payeeSignature);",
        "        _checkPayeeClaim(id, config.authorizer, totalClaimed, payeeSignature);",
    ),
    Mutant(
        "pc-consent-any-total",
        PC,
        "wrong variable",
        "the payee's PayeeClaim signature is checked over 0, so one consent fits every total",
        "        if (!_isValidSignature(payee, payeeClaimDigest(id, totalClaimed), "
        "payeeSignature))",
        "        if (!_isValidSignature(payee, payeeClaimDigest(id, 0), payeeSignature))",
    ),
    Mutant(
        "pc-consent-typehash",
        PC,
        "wrong constant",
        "a PayeeClaim is hashed as a Voucher, so a payer's voucher doubles as the payee's consent",
        "        return _typedDigest(PAYEE_CLAIM_TYPEHASH, id, totalClaimed);",
        "        return _typedDigest(VOUCHER_TYPEHASH, id, totalClaimed);",
    ),
    Mutant(
        "pc-consent-count",
        PC,
        "flipped comparison",
        "claimManyFor accepts more payee signatures than claims",
        "        if (payeeSignatures.length != claims.length) {",
        "        if (payeeSignatures.length < claims.length) {",
    ),
    Mutant(
        "pc-anyone-refunds",
        PC,
        "removed check",
        "anyone may refund the payee's channel",
        "        if (msg.sender != config.payee) revert PaymentChannels_NotPayee(id, msg.sender);"
        "\n        (uint256 deposited, uint256 claimed, uint256 closesAt) = _load(id);",
        "        (uint256 deposited, uint256 claimed, uint256 closesAt) = _load(id);",
    ),
    Mutant(
        "pc-refund-claimed-money",
        PC,
        "removed check",
        "a refund may take money already claimed",
        "        if (amount > unspent) revert",
        "        if (amount > deposited) revert",
    ),
    Mutant(
        "pc-refund-after-finish",
        PC,
        "removed check",
        "a finished channel refunds again",
        "        if (closesAt == _FINISHED) revert PaymentChannels_ChannelFinished(id);\n"
        "        if (amount == 0)",
        "        if (amount == 0)",
    ),
    Mutant(
        "pc-refund-all-unspent-refused",
        PC,
        "off-by-one",
        "a refund of exactly the unspent deposit is refused (> became >=)",
        "        if (amount > unspent) revert",
        "        if (amount >= unspent) revert",
    ),
    Mutant(
        "pc-refund-zero",
        PC,
        "removed check",
        "a refund of nothing is accepted",
        "        if (amount == 0) revert PaymentChannels_ZeroRefund(id);\n",
        "",
    ),
    Mutant(
        "pc-refund-keeps-deposit",
        PC,
        "removed statement",
        "a refund pays the payer but leaves the deposit as it was",
        "            deposited -= amount;\n",
        "",
    ),
    Mutant(
        "pc-refund-to-payee",
        PC,
        "wrong variable",
        "a refund pays the payee instead of the payer",
        "        TokenTransfers.push(token, config.payer, amount);",
        "        TokenTransfers.push(token, config.payee, amount);",
    ),
    Mutant(
        "pc-refunded-event-amount",
        PC,
        "wrong variable",
        "the Refunded event carries the amount refunded, not the new total",
        "        emit Refunded(id, deposited);",
        "        emit Refunded(id, amount);",
    ),
    Mutant(
        "pc-close-unchecked-voucher",
        PC,
        "removed check",
        "close settles any total without checking the voucher",
        "            _checkVoucher(id, deposited, config.authorizer, totalClaimed, ceiling, "
        "signature);\n            // unchecked: totalClaimed > claimed was just checked.",
        "            // unchecked: totalClaimed > claimed was just checked.",
    ),
    Mutant(
        "pc-high-s",
        PC,
        "removed check",
        "high-s (malleable) signatures are accepted",
        "            if (uint256(s) <= _HALF_CURVE_ORDER) {",
        "            if (true) {",
    ),
    Mutant(
        "pc-compact-parity",
        PC,
        "flipped constant",
        "the compact signature's y-parity is read inverted",
        "                v = uint8(uint256(s) >> 255) + 27;",
        "                v = 28 - uint8(uint256(s) >> 255);",
    ),
    Mutant(
        "pc-anyone-requests-withdraw",
        PC,
        "removed check",
        "anyone may start the payer's withdraw",
        "        if (msg.sender != config.payer) revert PaymentChannels_NotPayer(id, msg.sender);"
        "\n",
        "",
    ),
    Mutant(
        "pc-withdraw-early",
        PC,
        "off-by-one",
        "the withdraw finishes one second before the delay ends",
        "        if (block.timestamp < closesAt) revert",
        "        if (block.timestamp + 1 < closesAt) revert",
    ),
    Mutant(
        "pc-anyone-closes",
        PC,
        "removed check",
        "anyone may close the payee's channel",
        "        if (msg.sender != config.payee) revert PaymentChannels_NotPayee(id, msg.sender);"
        "\n        (uint256 deposited, uint256 claimed,) = _loadLive(id);",
        "        (uint256 deposited, uint256 claimed,) = _loadLive(id);",
    ),
    Mutant(
        "pc-close-refunds-claimed",
        PC,
        "wrong variable",
        "close refunds as if the closing voucher had not been claimed",
        "            claimed = totalClaimed;\n            emit Claimed(id, claimed);",
        "            emit Claimed(id, totalClaimed);",
    ),
    Mutant(
        "pc-credit-asked-amount",
        PC,
        "wrong variable",
        "a deposit is credited with the amount asked for, not what arrived",
        "        deposited += received;",
        "        deposited += amount;",
    ),
    Mutant(
        "pc-revive-finished",
        PC,
        "removed check",
        "a finished channel accepts deposits again",
        "        if (closesAt == _FINISHED) revert PaymentChannels_ChannelFinished(id);\n"
        "        // Interactions first",
        "        // Interactions first",
    ),
    Mutant(
        "pc-packing",
        PC,
        "off-by-one",
        "the claimed field is read one bit off",
        "        claimed = (word >> 112) & _MAX_AMOUNT;",
        "        claimed = (word >> 113) & _MAX_AMOUNT;",
    ),
    Mutant(
        "pc-batch-token-switch",
        PC,
        "removed condition",
        "claimManyFor keeps paying in the first token after the token changes",
        "            if (config.payee != payee || config.token != token) {",
        "            if (config.payee != payee) {",
    ),
    Mutant(
        "pc-batch-token-switch-payee",
        PC,
        "removed condition",
        "the payee's claimMany keeps paying in the first token after the token changes",
        "            if (config.token != token) {",
        "            if (false) {",
    ),
    Mutant(
        "pc-domain-contract",
        PC,
        "wrong variable",
        "the domain separator omits the verifying contract",
        "block.chainid, address(this)));",
        "block.chainid, address(0)));",
    ),
    Mutant(
        "pc-stale-domain-after-fork",
        PC,
        "removed condition",
        "the cached domain separator is used even after the chain id changed",
        "        return block.chainid == _cachedChainId ? _cachedDomainSeparator : "
        "_buildDomainSeparator();",
        "        return _cachedDomainSeparator;",
    ),
    # -- libraries ---------------------------------------------------------------------------
    Mutant(
        "rl-no-lock",
        RL,
        "removed statement",
        "the reentrancy lock is never taken",
        "        _locked = true;\n",
        "",
    ),
    Mutant(
        "tt-accept-false",
        TT,
        "removed check",
        "a token returning false counts as a successful transfer",
        "token.code.length == 0 : !abi.decode(returned, (bool))",
        "token.code.length == 0 : false",
    ),
    Mutant(
        "tt-trust-amount",
        TT,
        "wrong variable",
        "pullExact reports the amount asked for instead of measuring",
        "        received = _balanceOfThis(token) - before;",
        "        received = amount + (_balanceOfThis(token) - before) * 0;",
    ),
    Mutant(
        "tt-ignore-eth-failure",
        TT,
        "removed check",
        "a failed ETH payout is ignored",
        "            if (!ok) revert TokenTransfers_TransferFailed(token, to, amount);\n",
        "",
    ),
    Mutant(
        "tt-eth-value",
        TT,
        "removed check",
        "an ETH deposit is credited whatever msg.value was",
        "            if (msg.value != amount) revert "
        "TokenTransfers_WrongValue(msg.value, amount);\n",
        "",
    ),
    # -- Streams -----------------------------------------------------------------------------
    Mutant(
        "st-ignore-cliff",
        ST,
        "removed condition",
        "fixed streams ignore their cliff",
        "        if (time < start || time < stream.cliff) return 0;",
        "        if (time < start) return 0;",
    ),
    Mutant(
        "st-duration-off-by-one",
        ST,
        "off-by-one",
        "the linear release divides by duration + 1",
        "(uint256(stream.amount) * (time - start)) / (end - start)",
        "(uint256(stream.amount) * (time - start)) / (end - start + 1)",
    ),
    Mutant(
        "st-withdrawn-records-amount",
        ST,
        "wrong variable",
        "withdrawFixed records the payment instead of the running total",
        "        stored.withdrawn = streamed;",
        "        stored.withdrawn = amount;",
    ),
    Mutant(
        "st-cancel-any",
        ST,
        "removed check",
        "non-cancelable streams can be canceled",
        "        if (!stream.cancelable) revert Streams_NotCancelable(streamId);\n",
        "",
    ),
    Mutant(
        "st-cancel-refund-plus-one",
        ST,
        "off-by-one",
        "cancel refunds one unit too many",
        "        refunded = stream.amount - streamed;",
        "        refunded = stream.amount - streamed + 1;",
    ),
    Mutant(
        "st-withdraw-uncovered",
        ST,
        "wrong variable",
        "open-ended withdrawals pay debt the balance does not cover",
        "        uint128 covered = streamed < funded ? streamed : funded;",
        "        uint128 covered = streamed;",
    ),
    Mutant(
        "st-refund-owed",
        ST,
        "wrong variable",
        "the sender may refund money already owed to the recipient",
        "        uint128 refundable = streamed < funded ? funded - streamed : 0;\n"
        "        if (amount > refundable)",
        "        uint128 refundable = funded;\n        if (amount > refundable)",
    ),
    Mutant(
        "st-drop-remainder",
        ST,
        "removed statement",
        "a rate change drops the fraction of a unit accrued so far",
        "        stored.snapshotRemainder = uint64(accrued % RATE_SCALE);",
        "        stored.snapshotRemainder = 0;",
    ),
    Mutant(
        "st-withdraw-anywhere",
        ST,
        "removed check",
        "anyone may withdraw a stream to any address",
        "        if (msg.sender != recipient && to != recipient) {",
        "        if (false) {",
    ),
]

# What the copy needs: sources, the package (its artifacts are rebuilt), tests, the tools
# that compile, the docs some tests compare with the contract (docs/protocol.md), and the
# configuration ape and pytest read. Tools and the venv are used from the real project.
_COPY = [
    "contracts",
    "docs",
    "micropay",
    "tests",
    "tools",
    "forge-tests",
    "ape-config.yaml",
    "pyproject.toml",
]
_IGNORE = shutil.ignore_patterns("__pycache__", ".hypothesis", "*.pyc")


@dataclass
class Outcome:
    id: str
    file: str
    kind: str
    description: str
    status: str  # killed, survived, stillborn, stale, baseline-failed
    killed_by: str
    seconds: float


def _env(workspace: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "PYTHONPATH": str(workspace),  # the copy's micropay, ahead of the editable install
            "SOLCX_BINARY_PATH": str(workspace / ".solcx"),
            "PATH": tool_path(env.get("PATH", "")),
            "MICROPAY_HYPOTHESIS_PROFILE": "default",
            "MICROPAY_TEST_NETWORK": "in-process",
        }
    )
    env.pop("MICROPAY_AUDIT_LOG", None)
    return env


def _make_workspace() -> Path:
    workspace = Path(tempfile.mkdtemp(prefix="micropay-mutants-"))
    for name in _COPY:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, workspace / name, ignore=_IGNORE)
        elif source.is_file():
            shutil.copy2(source, workspace / name)
    # The node tools are only read: link them. The copy's tools/compiler.py writes its own
    # .solcx launcher (pointing into the copy), so the real one is never rewritten.
    (workspace / "node_modules").symlink_to(ROOT / "node_modules", target_is_directory=True)
    return workspace


def _run(command: list[str], workspace: Path, timeout: int) -> tuple[int, str]:
    try:
        done = subprocess.run(
            command,
            cwd=workspace,
            env=_env(workspace),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return 124, "timed out"
    return done.returncode, done.stdout + done.stderr


def _existing(tests: list[str], workspace: Path) -> list[str]:
    return [t for t in tests if glob.glob(str(workspace / t))]


def _build(workspace: Path) -> tuple[bool, str]:
    code, output = _run([sys.executable, "tools/build_artifacts.py"], workspace, 600)
    return code == 0, output


def _pytest(tests: list[str], workspace: Path, stop_first: bool = True) -> tuple[int, str]:
    command = [str(VENV_BIN / "ape"), "test", *tests, "-q", "-p", "no:cacheprovider"]
    command += ["-x"] if stop_first else []
    command += ["-m", "not standalone"]
    return _run(command, workspace, 1800)


def _first_failure(output: str) -> str:
    for line in output.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            return line.split(" - ")[0].split(" ", 1)[1]
    return "a test (see log)"


def _forge(workspace: Path) -> tuple[int, str]:
    forge = forge_binary()
    if forge is None:
        return 0, "forge is not installed"
    return _run([str(forge), "test", "--fuzz-seed", "0x1"], workspace / "forge-tests", 1800)


def run(mutants: list[Mutant], use_forge: bool, log: list[str]) -> list[Outcome]:
    workspace = _make_workspace()
    outcomes: list[Outcome] = []
    try:
        sources = {m.file: (workspace / m.file).read_text() for m in mutants}
        ok, output = _build(workspace)
        every_test = list(dict.fromkeys(t for m in mutants for t in m.tests))
        baseline_tests = _existing(every_test, workspace)
        code, test_output = _pytest(baseline_tests, workspace, stop_first=False) if ok else (1, "")
        log.append(f"baseline: build {'ok' if ok else 'FAILED'}, tests exit {code}")
        if not ok or code != 0:
            log.append(output[-3000:] + test_output[-5000:])
            return [
                Outcome(m.id, m.file, m.kind, m.description, "baseline-failed", "", 0.0)
                for m in mutants
            ]
        for mutant in mutants:
            started = time.monotonic()
            source = sources[mutant.file]
            count = source.count(mutant.original)
            if count != 1:
                status, by = "stale", f"snippet found {count} times"
            else:
                path = workspace / mutant.file
                path.write_text(source.replace(mutant.original, mutant.replacement))
                try:
                    status, by = _judge(mutant, workspace, use_forge, log)
                finally:
                    path.write_text(source)
            outcome = Outcome(
                mutant.id,
                mutant.file,
                mutant.kind,
                mutant.description,
                status,
                by,
                round(time.monotonic() - started, 1),
            )
            outcomes.append(outcome)
            print(f"  {mutant.id:<30} {status:<10} {by}", flush=True)
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
    return outcomes


def _judge(mutant: Mutant, workspace: Path, use_forge: bool, log: list[str]) -> tuple[str, str]:
    ok, output = _build(workspace)
    if not ok:
        log.append(f"{mutant.id}: did not compile\n{output[-2000:]}")
        return "stillborn", "compiler error"
    code, output = _pytest(_existing(mutant.tests, workspace), workspace)
    if code != 0:
        return "killed", _first_failure(output)
    if use_forge:
        code, output = _forge(workspace)
        if code != 0:
            failing = [ln for ln in output.splitlines() if ln.startswith("[FAIL")]
            return "killed", "forge: " + (failing[0][:120] if failing else "a forge test")
    return "survived", ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated mutant ids")
    parser.add_argument("--json", type=Path, help="write the outcomes here as JSON")
    parser.add_argument("--no-forge", action="store_true", help="do not retry survivors in forge")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    args = parser.parse_args()
    mutants = MUTANTS
    if args.only:
        wanted = set(args.only.split(","))
        mutants = [m for m in MUTANTS if m.id in wanted]
        if unknown := wanted - {m.id for m in mutants}:
            parser.error(f"unknown mutants: {', '.join(sorted(unknown))}")
    if args.list:
        for m in mutants:
            print(f"{m.id:<30} {m.file:<40} {m.kind:<18} {m.description}")
        return 0
    print(f"mutation check: {len(mutants)} mutants", flush=True)
    log: list[str] = []
    outcomes = run(mutants, not args.no_forge, log)
    killed = sum(o.status == "killed" for o in outcomes)
    counted = sum(o.status in ("killed", "survived") for o in outcomes)
    print(f"mutants killed: {killed}/{counted}", flush=True)
    for line in log:
        print(line)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"outcomes": [asdict(o) for o in outcomes], "log": log}, indent=1)
        )
    return 0 if outcomes and all(o.status == "killed" for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
