"""``make bench``: every benchmark in one run, each printing its own figures.

Benchmarks are scripts, not tests: they print what they measure and assert nothing about
time. Gas figures come from real receipts on a throw-away anvil; the paywall's figures from a
real uvicorn server, with SQLite and PostgreSQL ledgers (a throw-away cluster, stopped after).
"""

from __future__ import annotations

import importlib
import sys

# Each module has a main() that prints a section.
BENCHMARKS = [
    "bench.vouchers",
    "bench.gas_channels",
    "bench.gas_streams",
    "bench.gas_exact",
    "bench.http_paywall",
    "bench.http_stream",
]


def main() -> int:
    for name in BENCHMARKS:
        print(f"\n===== {name} =====\n", flush=True)
        importlib.import_module(name).main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
