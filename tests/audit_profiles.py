"""Hypothesis profiles for the auditor kit's property tests, and a log of what they ran.

``default`` keeps ``make test`` fast; ``heavy`` is what ``make audit`` runs, chosen with
``MICROPAY_HYPOTHESIS_PROFILE=heavy`` (tests/test_streams_stateful.py uses them too).
Each property test counts the examples (and, for state machines, the steps) it actually ran
and appends one JSON line to the file named by ``MICROPAY_AUDIT_LOG`` when that is set,
which tools/audit.py turns into its report.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hypothesis import HealthCheck, settings

PROFILE = os.environ.get("MICROPAY_HYPOTHESIS_PROFILE", "default")

# Ape wraps every test in an autouse, function-scoped isolation fixture; these tests only
# read the chain or restore their own snapshot, so sharing it across examples is safe.
_COMMON = {
    "deadline": None,
    "suppress_health_check": [
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
    "print_blob": True,
}
# The default profile is derandomized and keeps no example database: every `make test` runs
# the same examples. The heavy one draws new ones each run (seeded by --hypothesis-seed).
settings.register_profile(
    "micropay-default",
    max_examples=8,
    stateful_step_count=20,
    derandomize=True,
    database=None,
    **_COMMON,
)
settings.register_profile("micropay-heavy", max_examples=100, stateful_step_count=50, **_COMMON)

if PROFILE not in ("default", "heavy"):
    raise RuntimeError(f"MICROPAY_HYPOTHESIS_PROFILE must be default or heavy, not {PROFILE!r}")


def profile_settings(*, scale: int = 1) -> settings:
    """The active profile's settings; ``scale`` multiplies its examples for cheap tests."""
    base = settings.get_profile(f"micropay-{PROFILE}")
    return settings(base, max_examples=base.max_examples * scale)


@dataclass
class ExampleLog:
    """Counts one property test's work and writes it to the audit log when done."""

    test: str
    examples: int = 0
    steps: int = 0
    started: float = field(default_factory=time.monotonic)
    notes: dict[str, int] = field(default_factory=dict)

    def example(self) -> None:
        self.examples += 1

    def step(self, rule: str | None = None) -> None:
        self.steps += 1
        if rule:
            self.notes[rule] = self.notes.get(rule, 0) + 1

    def write(self) -> None:
        path = os.environ.get("MICROPAY_AUDIT_LOG")
        if not path:
            return
        record = {
            **asdict(self),
            "profile": PROFILE,
            "network": _network(),
            "seconds": round(time.monotonic() - self.started, 1),
        }
        record.pop("started")
        with Path(path).open("a", encoding="utf8") as log:
            log.write(json.dumps(record, sort_keys=True) + "\n")


def _network() -> str:
    """The provider the test ran on: ape's in-process chain is "test"."""
    try:
        import ape

        return str(ape.chain.provider.name)
    except Exception:  # not connected: an offchain test
        return os.environ.get("MICROPAY_TEST_NETWORK", "none")
