"""The auditor kit in one command: run every check and write a Markdown report.

``make audit`` calls this. Checks, in order:

1. hostile tokens - the zoo in ``contracts/test/`` against both contracts
   (``tests/test_hostile_tokens.py``, plus the pinned findings), on each network asked;
2. property tests - the on-chain voucher digest differential and the channels-and-streams
   state machine, with the *heavy* Hypothesis profile and a reported seed;
3. stream machine - the streams suite's own state machine (``tests/test_streams_stateful.py``),
   heavy too unless ``--streams-profile default``;
4. forge - fuzz and invariant suites in ``forge-tests/`` (heavy profile, reported seed);
5. slither - static analysis of ``contracts/``; every High or Medium finding must be
   explained in ``slither.triage.json``;
6. mutation - ``tools/mutate.py``: broken copies of the contracts that tests must kill.

Each check records its parameters and result; the report (default ``.reports/audit.md``)
has a summary table and one section per check. Exit status is non-zero if any check fails.

Usage: ``python tools/audit.py [--quick] [--only CHECK,...] [--seed N] [--network NAME]``
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

# tools/ is on sys.path when these run as scripts
from compiler import is_solc_select_shim
from run_tests import NETWORKS, junit_counts

ROOT = Path(__file__).resolve().parent.parent
REPORTS = ROOT / ".reports"
BIN = Path(sys.executable).parent
NODE_BIN = ROOT / "node_modules" / ".bin"
HOSTILE_TESTS = ["tests/test_hostile_tokens.py", "tests/test_audit_findings.py"]
PROPERTY_TESTS = ["tests/test_digest_differential.py", "tests/test_invariants_stateful.py"]
# The streams issue's own state machine: a check of its own, so its (long) run shows apart.
STREAM_MACHINE = ["tests/test_streams_stateful.py"]
CHECKS = ("hostile-tokens", "property-tests", "stream-machine", "forge", "slither", "mutation")


@dataclass
class CheckResult:
    name: str
    title: str
    passed: bool = False
    summary: str = ""
    parameters: dict[str, object] = field(default_factory=dict)
    details: list[str] = field(default_factory=list)
    command: str = ""
    seconds: float = 0.0


def clean_path(path: str) -> str:
    """PATH without folders whose ``solc`` is solc-select's shim.

    slither-analyzer installs solc-select, whose ``solc`` downloads a compiler the first time
    it runs. Nothing here may download a compiler, and tools/compiler.py would try that
    ``solc`` as a native one, so child processes never see it (tools run by full path).
    """
    kept = []
    for folder in path.split(os.pathsep):
        candidate = Path(folder, "solc")
        if folder and not (candidate.is_file() and is_solc_select_shim(str(candidate))):
            kept.append(folder)
    return os.pathsep.join(kept)


def forge_binary() -> Path | None:
    """forge itself. npm's ``node_modules/.bin/forge`` is a node wrapper that exits 0 even
    when tests fail, so the platform package's binary is used wherever it is installed."""
    for found in sorted(ROOT.glob("node_modules/@foundry-rs/forge-*/bin/forge")):
        return found
    wrapper = NODE_BIN / "forge"
    return wrapper if wrapper.exists() else None


def tool_path(path: str) -> str:
    """PATH for child processes: forge's real binary and node tools first, no solc shim."""
    forge = forge_binary()
    front = [str(forge.parent)] if forge else []
    return clean_path(os.pathsep.join([*front, str(NODE_BIN), path]))


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["SOLCX_BINARY_PATH"] = str(ROOT / ".solcx")
    env["PATH"] = tool_path(env.get("PATH", ""))
    env.update(extra)
    return env


def _run(command: list[str], cwd: Path = ROOT, timeout: int = 7200, **env: str) -> tuple[int, str]:
    """Run a command, echoing its output, and return (exit code, output)."""
    print(f"$ {' '.join(command)}", flush=True)
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    for line in process.stdout:
        lines.append(line)
        print(line, end="", flush=True)
        if time.monotonic() > deadline:
            process.kill()
            lines.append(f"\n[audit] killed after {timeout} s\n")
            break
    return process.wait(), "".join(lines)


def _ape_test(name: str, tests: list[str], network: str, **env: str) -> tuple[int, str, Path]:
    junit = REPORTS / f"audit-{name}-{network}.xml"
    junit.unlink(missing_ok=True)
    command = [str(BIN / "ape"), "test", *tests, "--network", NETWORKS[network]]
    command += [f"--junitxml={junit}", "-p", "no:cacheprovider", "-q"]
    code, output = _run(command, MICROPAY_TEST_NETWORK=network, **env)
    return code, output, junit


# -- checks ----------------------------------------------------------------------------------


def check_hostile_tokens(args: argparse.Namespace) -> CheckResult:
    result = CheckResult("hostile-tokens", "Hostile tokens and receivers")
    networks = args.networks
    result.parameters = {"tests": ", ".join(HOSTILE_TESTS), "networks": ", ".join(networks)}
    rows, ok = [], True
    for network in networks:
        code, output, junit = _ape_test("hostile", HOSTILE_TESTS, network)
        passed, failed, skipped = junit_counts(junit)
        ok &= code == 0 and failed == 0 and passed > 0
        rows.append(f"| {network} | {passed} | {failed} | {skipped} |")
        xfails = [ln for ln in output.splitlines() if ln.startswith("XFAIL")]
        result.details += [f"- {network}: {ln}" for ln in xfails]
    result.details = [
        "| network | passed | failed | skipped/xfailed |",
        "| --- | --- | --- | --- |",
        *rows,
        "",
        *result.details,
    ]
    result.passed = ok
    result.summary = "all passed" if ok else "FAILURES"
    result.command = f"ape test {' '.join(HOSTILE_TESTS)} --network <each>"
    return result


def check_property_tests(args: argparse.Namespace) -> CheckResult:
    return _property_check(
        args,
        CheckResult("property-tests", "Property tests (Hypothesis)"),
        PROPERTY_TESTS,
        "default" if args.quick else "heavy",
    )


def check_stream_machine(args: argparse.Namespace) -> CheckResult:
    profile = args.streams_profile or ("default" if args.quick else "heavy")
    return _property_check(
        args,
        CheckResult("stream-machine", "Streams state machine (tests/test_streams_stateful.py)"),
        STREAM_MACHINE,
        profile,
    )


def _property_check(
    args: argparse.Namespace, result: CheckResult, wanted: list[str], profile: str
) -> CheckResult:
    tests = [t for t in wanted if (ROOT / t).is_file()]
    if not tests:
        result.summary = f"no such tests: {', '.join(wanted)}"
        return result
    log = REPORTS / f"audit-examples-{result.name}.jsonl"
    log.unlink(missing_ok=True)
    network = args.property_network
    result.parameters = {
        "profile": profile,
        "seed": args.seed,
        "network": network,
        "tests": ", ".join(tests),
    }
    code, output, junit = _ape_test(
        result.name,
        [*tests, f"--hypothesis-seed={args.seed}", "--hypothesis-show-statistics"],
        network,
        MICROPAY_HYPOTHESIS_PROFILE=profile,
        MICROPAY_AUDIT_LOG=str(log),
    )
    passed, failed, _skipped = junit_counts(junit)
    result.passed = code == 0 and failed == 0 and passed > 0
    records = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    result.details = [
        "| property | examples | steps | seconds |",
        "| --- | --- | --- | --- |",
        *(
            f"| {r['test']} | {r['examples']} | {r['steps'] or '-'} | {r['seconds']} |"
            for r in records
        ),
    ]
    for r in records:
        if r.get("notes"):
            rules = ", ".join(f"{k} {v}" for k, v in sorted(r["notes"].items()))
            result.details.append(f"\nSteps by rule in *{r['test']}*: {rules}.")
    stats = _hypothesis_statistics(output)
    if stats:
        result.details += ["", "Hypothesis statistics (all property tests run):", "", *stats]
    examples = sum(r["examples"] for r in records)
    steps = sum(r["steps"] for r in records)
    result.summary = f"{passed} passed, {failed} failed" + (
        f"; {examples} examples, {steps} state-machine steps" if records else ""
    )
    failures = failure_lines(output)
    if failures:
        result.details += ["", "Failures:", "", "```", *failures[:40], "```"]
    result.command = (
        f"MICROPAY_HYPOTHESIS_PROFILE={profile} ape test {' '.join(tests)} "
        f"--network {NETWORKS[network]} --hypothesis-seed={args.seed}"
    )
    return result


# An exception line as pytest and Hypothesis print it, also inside an exception group's
# "|" frame: "micropay.errors.TransactionFailedError: transaction ... failed (status 0)".
_EXCEPTION = re.compile(r"^[\s|+-]*((?:\w+\.)*\w*(?:Error|Exception|Failure|Flaky\w*)\b:? .*)$")


def failure_lines(output: str) -> list[str]:
    """What a failing pytest run says went wrong: failed tests, assertion lines, the
    exceptions (also those Hypothesis groups when a replay is flaky) and any falsifying
    example's steps, each once, in order."""
    lines: list[str] = []
    in_example = False
    for raw in output.splitlines():
        line = raw.rstrip()
        text = line.lstrip(" |+-")
        if text.startswith("Falsifying example"):
            in_example = True
        elif in_example and not text.startswith(("state", "Falsifying")):
            in_example = False
        keep = (
            in_example
            or line.startswith(("FAILED", "E   "))
            or (_EXCEPTION.match(line) is not None and "Traceback" not in line)
        )
        if keep and text and text not in lines:
            lines.append(text if not line.startswith(("FAILED", "E   ")) else line)
    return lines[:60]


def _hypothesis_statistics(output: str) -> list[str]:
    """The per-test lines of ``--hypothesis-show-statistics`` (passing/failing counts)."""
    lines, current = [], ""
    for line in output.splitlines():
        if line.startswith("tests/") and "::" in line and "statistics" not in line:
            current = line.strip().rstrip(":")
        match = re.search(r"(\d+) passing examples, (\d+) failing examples", line)
        if match and current:
            lines.append(f"- `{current}`: {line.strip().lstrip('- ')}")
    return lines


def check_forge(args: argparse.Namespace) -> CheckResult:
    result = CheckResult("forge", "Forge fuzz and invariant tests")
    profile = "default" if args.quick else "heavy"
    forge = forge_binary()
    seed = hex(args.seed)
    result.parameters = {"profile": profile, "fuzz seed": seed, "suites": "forge-tests/test"}
    result.command = f"cd forge-tests && FOUNDRY_PROFILE={profile} forge test --fuzz-seed {seed}"
    if forge is None:
        result.summary = "forge is not installed (npm @foundry-rs/forge)"
        return result
    code, output = _run(
        [str(forge), "test", "--fuzz-seed", seed], ROOT / "forge-tests", FOUNDRY_PROFILE=profile
    )
    rows = []
    for line in output.splitlines():
        match = re.match(r"\[(PASS|FAIL[^\]]*)\] (\S+?)\(.*?\) \((.*)\)$", line.strip())
        if match:
            verdict, name, figures = match.groups()
            rows.append(f"| {name} | {'PASS' if verdict == 'PASS' else 'FAIL'} | {figures} |")
    total = re.search(r"(\d+) tests passed, (\d+) failed, (\d+) skipped", output)
    result.details = ["| test | result | runs |", "| --- | --- | --- |", *rows]
    fails = [ln.strip() for ln in output.splitlines() if ln.strip().startswith("[FAIL")]
    if fails:
        result.details += ["", "Failures:", "", *(f"- `{f[:400]}`" for f in fails)]
    result.passed = code == 0 and bool(total) and total is not None and total.group(2) == "0"
    result.summary = total.group(0) if total else f"forge exited {code}"
    return result


def check_slither(args: argparse.Namespace) -> CheckResult:
    result = CheckResult("slither", "Static analysis (slither)")
    slither = BIN / "slither"
    out = REPORTS / "slither.json"
    out.unlink(missing_ok=True)
    triage = json.loads((ROOT / "slither.triage.json").read_text())["accepted"]
    result.parameters = {
        "target": "contracts/ (built by forge-tests/foundry.toml)",
        "config": "slither.config.json",
        "triage": f"slither.triage.json ({len(triage)} accepted entries)",
    }
    result.command = "slither forge-tests --json .reports/slither.json"
    if not slither.exists():
        result.summary = "slither is not installed (PyPI slither-analyzer)"
        return result
    _run([str(slither), "forge-tests", "--json", str(out)])
    if not out.is_file():
        result.summary = "slither produced no JSON"
        return result
    data = json.loads(out.read_text())
    if not data.get("success"):
        result.summary = f"slither failed: {data.get('error')}"
        return result
    findings = data["results"].get("detectors", [])
    unexplained: list[str] = []
    counts: dict[str, int] = {}
    groups: dict[tuple[str, str, str], list[str]] = {}
    for finding in findings:
        impact, check = finding["impact"], finding["check"]
        counts[impact] = counts.get(impact, 0) + 1
        reason = _triage_reason(finding, triage)
        where = finding["description"].splitlines()[0].strip()
        where = re.sub(r"\s*\(contracts/[^)]*\)", "", where).rstrip(":")
        if reason is None and impact in ("High", "Medium"):
            unexplained.append(f"- **{impact} {check}**: {where}")
        if impact in ("High", "Medium", "Low"):
            groups.setdefault((impact, check, reason or "UNEXPLAINED"), []).append(where)
    order = {"High": 0, "Medium": 1, "Low": 2}
    result.details = [
        "Findings by impact: "
        + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if k)
        + ". Informational and optimization findings are in .reports/slither.json.",
        "",
        "| impact | check | findings | triage |",
        "| --- | --- | --- | --- |",
    ]
    for (impact, check, reason), wheres in sorted(groups.items(), key=lambda g: order[g[0][0]]):
        listed = "<br>".join(w.replace("|", "/")[:160] for w in wheres)
        result.details.append(f"| {impact} | {check} ({len(wheres)}) | {listed} | {reason} |")
    if unexplained:
        result.details += ["", "Unexplained High/Medium findings:", "", *unexplained]
    result.passed = not unexplained
    high_medium = counts.get("High", 0) + counts.get("Medium", 0)
    result.summary = (
        f"{high_medium} High/Medium findings, {len(unexplained)} unexplained; "
        f"{counts.get('Low', 0)} Low"
    )
    return result


def _triage_reason(finding: dict[str, object], triage: list[dict[str, str]]) -> str | None:
    for entry in triage:
        if entry["check"] != finding["check"]:
            continue
        if "match" not in entry or entry["match"] in str(finding["description"]):
            return entry["reason"]
    return None


def check_mutation(args: argparse.Namespace) -> CheckResult:
    result = CheckResult("mutation", "Mutation check")
    out = REPORTS / "mutation.json"
    out.unlink(missing_ok=True)
    command = [sys.executable, "tools/mutate.py", "--json", str(out)]
    if args.mutants:
        command += ["--only", args.mutants]
    result.command = " ".join(["python", *command[1:]])
    code, _output = _run(command)
    if not out.is_file():
        result.summary = f"tools/mutate.py exited {code} without a report"
        return result
    outcomes = json.loads(out.read_text())["outcomes"]
    killed = [o for o in outcomes if o["status"] == "killed"]
    counted = [o for o in outcomes if o["status"] in ("killed", "survived")]
    files = sorted({o["file"] for o in outcomes})
    result.parameters = {"mutants": len(outcomes), "files": ", ".join(files)}
    result.details = [
        "| mutant | file | kind | mistake | result | caught by |",
        "| --- | --- | --- | --- | --- | --- |",
        *(
            f"| {o['id']} | {Path(o['file']).name} | {o['kind']} | {o['description']} | "
            f"{o['status']} | {o['killed_by'].replace('|', '/')} |"
            for o in outcomes
        ),
    ]
    result.passed = code == 0 and len(killed) == len(outcomes) > 0
    result.summary = f"{len(killed)}/{len(counted)} killed" + (
        f", {len(outcomes) - len(counted)} stale or stillborn"
        if len(outcomes) != len(counted)
        else ""
    )
    return result


RUNNERS: dict[str, Callable[[argparse.Namespace], CheckResult]] = {
    "hostile-tokens": check_hostile_tokens,
    "property-tests": check_property_tests,
    "stream-machine": check_stream_machine,
    "forge": check_forge,
    "slither": check_slither,
    "mutation": check_mutation,
}


# -- report ----------------------------------------------------------------------------------


def write_report(results: list[CheckResult], args: argparse.Namespace, path: Path) -> None:
    lines = [
        "# micropay audit report",
        "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M:%S %Z')} by `python tools/audit.py"
        + (" --quick" if args.quick else "")
        + (f" --streams-profile {args.streams_profile}" if args.streams_profile else "")
        + f" --seed {args.seed}`. Commit `{_git_head()}`"
        + (" (with uncommitted changes)" if _git_dirty() else "")
        + ".",
        "",
        "| check | result | summary | seconds |",
        "| --- | --- | --- | --- |",
        *(
            f"| {r.title} | {'PASS' if r.passed else 'FAIL'} | {r.summary} | {r.seconds:.0f} |"
            for r in results
        ),
        "",
    ]
    for r in results:
        lines += [f"## {r.title}: {'PASS' if r.passed else 'FAIL'}", "", f"`{r.command}`", ""]
        if r.parameters:
            lines += [f"- {k}: {v}" for k, v in r.parameters.items()] + [""]
        lines += [f"Result: {r.summary}", "", *r.details, ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf8")


def _git_head() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    )
    return done.stdout.strip() or "unknown"


def _git_dirty() -> bool:
    done = subprocess.run(
        ["git", "status", "--porcelain", "--", "contracts", "tests", "forge-tests"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    return bool(done.stdout.strip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="quick profiles (a trial run)")
    parser.add_argument("--only", help=f"comma-separated checks among {', '.join(CHECKS)}")
    parser.add_argument("--seed", type=int, help="Hypothesis and forge fuzz seed (random)")
    parser.add_argument(
        "--networks", default="in-process,anvil", help="networks for the hostile-token tests"
    )
    parser.add_argument(
        "--property-network", default="anvil", choices=NETWORKS, help="network for properties"
    )
    parser.add_argument(
        "--streams-profile",
        choices=("default", "heavy"),
        help="profile for the streams state machine (default: as the other property tests)",
    )
    parser.add_argument("--mutants", help="only these mutant ids (tools/mutate.py --list)")
    parser.add_argument("--report", type=Path, default=REPORTS / "audit.md")
    args = parser.parse_args()
    args.seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    args.networks = [n.strip() for n in args.networks.split(",") if n.strip()]
    if unknown := [n for n in args.networks if n not in NETWORKS]:
        parser.error(f"unknown networks {unknown}; choose from {', '.join(NETWORKS)}")
    chosen = list(CHECKS) if not args.only else [c.strip() for c in args.only.split(",")]
    if unknown := [c for c in chosen if c not in CHECKS]:
        parser.error(f"unknown checks {unknown}; choose from {', '.join(CHECKS)}")
    if not shutil.which("node"):
        parser.error("node is needed (the compiler bridge, anvil, forge)")
    REPORTS.mkdir(exist_ok=True)

    results = []
    for name in chosen:
        print(f"\n===== audit: {name} =====", flush=True)
        started = time.monotonic()
        try:
            result = RUNNERS[name](args)
        except Exception as err:  # a crashed check is a failed check, with the reason
            result = CheckResult(name, name, summary=f"crashed: {err!r}")
        result.seconds = time.monotonic() - started
        results.append(result)
        write_report(results, args, args.report)  # keep a partial report if later ones hang

    print("\n===== audit summary =====")
    for r in results:
        print(f"{r.title:<36} {'PASS' if r.passed else 'FAIL':<5} {r.summary}")
    print(f"report: {args.report}")
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
