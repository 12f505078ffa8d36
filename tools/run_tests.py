"""Run the test suite once per network and print one summary for all of them.

``make test`` calls this. Each pass is a separate ``ape test --network …`` (ape starts and
stops anvil and hardhat itself); tests marked ``offchain`` (no chain) or ``standalone``
(they start their own node or service) run only in the first pass. A pass that runs no
test at all counts as a failure, so a broken collection can never look green. A node
(anvil, hardhat) that the run started and that is still alive when it ends fails the run too,
listed by pid and command line: every test must stop what it starts.

Usage: ``python tools/run_tests.py [--networks in-process,anvil,hardhat] [pytest args…]``
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REPORTS = ROOT / ".reports"
NETWORKS = {
    "in-process": "ethereum:local:test",
    "anvil": "ethereum:local:foundry",
    "hardhat": "ethereum:local:hardhat",
}


RUN_MARKER = "MICROPAY_TEST_RUN"
"""Set in every pass's environment: processes the run starts inherit it, orphans included."""
LEFTOVER_GRACE = 10.0  # seconds a node may take to exit after the pass that stopped it


@dataclass(frozen=True)
class NodeProcess:
    """A live anvil or hardhat node, as /proc shows it."""

    pid: int
    cmdline: str


def _proc(pid: int, name: str) -> bytes:
    return (Path("/proc") / str(pid) / name).read_bytes()


def _is_node(argv: list[str]) -> bool:
    # anvil itself, or npm's node wrapper around it; `hardhat node` runs under node.
    names = [Path(arg).name for arg in argv]
    return "anvil" in names[:2] or ("hardhat" in names and "node" in names[1:])


def _parent(pid: int) -> int:
    # /proc/<pid>/stat: "pid (comm) state ppid ..."; comm may hold spaces and parentheses.
    return int(_proc(pid, "stat").rsplit(b")", 1)[1].split()[1])


def _descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        pid = _parent(pid)
    return False


def node_processes(marker: str | None = None) -> list[NodeProcess]:
    """Live (not zombie) anvil and hardhat processes; with ``marker``, only the ones this run
    started: they carry ``RUN_MARKER=marker`` in their environment or descend from us."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            argv = [a.decode(errors="replace") for a in _proc(pid, "cmdline").split(b"\0") if a]
            if not _is_node(argv) or _proc(pid, "stat").rsplit(b")", 1)[1].split()[0] == b"Z":
                continue
            if marker is not None:
                environ = _proc(pid, "environ").split(b"\0")
                ours = f"{RUN_MARKER}={marker}".encode() in environ
                if not ours and not _descends_from(pid, os.getpid()):
                    continue
        except (OSError, IndexError, ValueError):  # gone meanwhile, or not ours to read
            continue
        found.append(NodeProcess(pid, " ".join(argv)))
    return found


def leftover_nodes(before: set[int], marker: str, grace: float) -> list[NodeProcess]:
    """Nodes this run started that are still alive ``grace`` seconds after it ended."""
    deadline = time.monotonic() + grace
    while True:
        left = [p for p in node_processes(marker) if p.pid not in before]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.2)


@dataclass(frozen=True)
class PassResult:
    network: str
    exit_code: int
    passed: int
    failed: int
    skipped: int
    seconds: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.failed == 0 and self.passed > 0


def junit_counts(junit: Path) -> tuple[int, int, int]:
    """(passed, failed, skipped) in a JUnit XML report; zeros if the run wrote none."""
    if not junit.is_file():
        return 0, 0, 0
    tests = failed = skipped = 0
    for suite in ET.parse(junit).getroot().iter("testsuite"):
        tests += int(suite.get("tests", 0))
        failed += int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        skipped += int(suite.get("skipped", 0))
    return tests - failed - skipped, failed, skipped


def run_pass(name: str, first: bool, pytest_args: list[str], marker: str) -> PassResult:
    REPORTS.mkdir(exist_ok=True)
    junit = REPORTS / f"junit-{name}-{os.getpid()}.xml"  # concurrent runs must not share it
    junit.unlink(missing_ok=True)
    command = [
        str(Path(sys.executable).with_name("ape")),
        "test",
        "--network",
        NETWORKS[name],
        f"--junitxml={junit}",
        "-p",
        "no:cacheprovider",
    ]
    if not first:
        command += ["-m", "not offchain and not standalone"]
    command += pytest_args
    print(f"\n===== {name} ({NETWORKS[name]}) =====", flush=True)
    started = time.monotonic()
    env = {**os.environ, "MICROPAY_TEST_NETWORK": name, RUN_MARKER: marker}
    exit_code = subprocess.call(command, cwd=ROOT, env=env)
    passed, failed, skipped = junit_counts(junit)
    return PassResult(name, exit_code, passed, failed, skipped, time.monotonic() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", default=",".join(NETWORKS), help="comma-separated passes")
    args, pytest_args = parser.parse_known_args()
    names = [n.strip() for n in args.networks.split(",") if n.strip()]
    unknown = [n for n in names if n not in NETWORKS]
    if unknown or not names:
        parser.error(f"unknown network(s) {unknown}; choose from {', '.join(NETWORKS)}")

    marker = f"{os.getpid()}-{time.time_ns()}"
    before = {p.pid for p in node_processes()}
    results = [run_pass(name, i == 0, pytest_args, marker) for i, name in enumerate(names)]
    left = leftover_nodes(before, marker, LEFTOVER_GRACE)

    print("\n===== micropay test summary =====")
    print(f"{'network':<12}{'passed':>8}{'failed':>8}{'skipped':>9}{'seconds':>9}  result")
    for r in results:
        verdict = "ok" if r.ok else ("NO TESTS RAN" if r.passed + r.failed == 0 else "FAILED")
        print(
            f"{r.network:<12}{r.passed:>8}{r.failed:>8}{r.skipped:>9}{r.seconds:>9.1f}  {verdict}"
        )
    passed = sum(r.passed for r in results)
    failed = sum(r.failed for r in results) + sum(1 for r in results if not r.ok and r.failed == 0)
    skipped = sum(r.skipped for r in results)
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    if left:
        print(f"FAILED: {len(left)} node(s) started by this run are still running:")
        for process in left:
            print(f"  pid {process.pid}: {process.cmdline}")
    return 0 if all(r.ok for r in results) and not left else 1


if __name__ == "__main__":
    sys.exit(main())
