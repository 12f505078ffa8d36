"""Install one of Debian's packages for the test suite (PostgreSQL, Chromium), as root.

The suite's services come from the machine or, failing that, from Debian's archive, the
way a fresh clone's `make test` must bring them up; one place says how.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys


def can_install() -> bool:
    """Whether apt-get can install here: we are root and it exists."""
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def install(package: str, what: str) -> None:
    """``apt-get install`` one package without its recommends, quietly."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print(f"installing {what} from Debian's packages ...", file=sys.stderr, flush=True)
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", package],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
