"""Debian's Chromium, for the browser tests (Playwright drives it; no browser is downloaded).

The reader-in-a-browser tests (tests/test_browser_reader.py) need a real headless browser.
Playwright's own ``playwright install`` fetches a browser build from a CDN, which the suite
must not do; instead this finds the system Chromium (``MICROPAY_CHROMIUM``, then
/usr/bin/chromium, then PATH) and installs Debian's ``chromium`` package with apt-get when it
is missing and we are root, the way tools/postgres.py brings up PostgreSQL.

Usage::

    python tools/chromium.py ensure   # install Chromium if missing, print its path

From Python: ``ensure_installed()`` returns the executable's path.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import debian_packages as debian

PATH_VARIABLE = "MICROPAY_CHROMIUM"
_DEBIAN_PATH = Path("/usr/bin/chromium")


class ChromiumUnavailable(RuntimeError):
    """No Chromium can be found or installed here."""


def find_chromium() -> Path | None:
    """The Chromium executable: the override variable, Debian's path, then PATH."""
    candidates: list[Path] = []
    if os.environ.get(PATH_VARIABLE):
        candidates.append(Path(os.environ[PATH_VARIABLE]))
    candidates.append(_DEBIAN_PATH)
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            candidates.append(Path(found))
    return next((path for path in candidates if os.access(path, os.X_OK)), None)


def ensure_installed() -> Path:
    """Find Chromium, installing Debian's ``chromium`` package if needed."""
    found = find_chromium()
    if found is not None:
        return found
    if not debian.can_install():
        raise ChromiumUnavailable(
            "Chromium not found; install it (Debian: apt-get install chromium) "
            f"or set {PATH_VARIABLE} to its executable"
        )
    debian.install("chromium", "Chromium")
    found = find_chromium()
    if found is None:
        raise ChromiumUnavailable("apt-get installed chromium but no executable is found")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("ensure", help="install Chromium if missing, print its path")
    parser.parse_args()
    try:
        print(ensure_installed())
    except ChromiumUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
