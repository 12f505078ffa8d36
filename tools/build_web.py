"""Build the browser client, micropay/web/micropay.js, from web/*.js and its npm packages.

The paywall serves that one file (``/.well-known/micropay/micropay.js``); it is committed,
like micropay/artifacts, so an installed micropay needs no Node at run time and fetches
nothing. esbuild (pinned in package.json) bundles web/micropay.js with @noble/curves and
@noble/hashes into one ES module, and writes the shipped PaymentChannels runtime code's
fingerprint into it (its length, the spans its immutables fill in, the keccak256 of the
code with those spans zeroed), so the page checks the contract the way the Python client
does (``micropay._artifacts.runtime_code_matches``).

Usage::

    python tools/build_web.py           # rebuild micropay/web/micropay.js
    python tools/build_web.py --check   # exit 1 if rebuilding would change it
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from micropay._artifacts import _runtime_code
from micropay._keccak import keccak256
from micropay.channels import ChannelClient

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "web" / "micropay.js"
OUTPUT = ROOT / "micropay" / "web" / "micropay.js"
BANNER = "// micropay browser client; built by tools/build_web.py from web/ (do not edit)."


def runtime_fingerprint() -> dict[str, object]:
    code, holes = _runtime_code(ChannelClient.ARTIFACT)
    return {
        "length": len(code),
        "holes": [list(hole) for hole in holes],
        "hash": "0x" + keccak256(code).hex(),
    }


def build(output: Path) -> None:
    esbuild = shutil.which("esbuild", path=str(ROOT / "node_modules" / ".bin"))
    if esbuild is None:
        raise SystemExit("error: esbuild not found in node_modules/.bin (run npm install)")
    subprocess.run(
        [
            esbuild,
            str(SOURCE),
            "--bundle",
            "--format=esm",
            "--target=es2020",
            "--charset=utf8",
            "--legal-comments=inline",
            # The path comments name node_modules where it is linked, not where the link
            # points: a worktree whose node_modules is a symlink builds the same bytes.
            "--preserve-symlinks",
            f"--banner:js={BANNER}",
            f"--define:MICROPAY_RUNTIME={json.dumps(runtime_fingerprint())}",
            f"--outfile={output}",
            "--log-level=warning",
        ],
        check=True,
        cwd=ROOT,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args()
    if not args.check:
        build(OUTPUT)
        print(OUTPUT.relative_to(ROOT))
        return 0
    with tempfile.TemporaryDirectory() as folder:
        fresh = Path(folder) / "micropay.js"
        build(fresh)
        if fresh.read_bytes() != OUTPUT.read_bytes():
            print(f"error: {OUTPUT.relative_to(ROOT)} is stale: run tools/build_web.py")
            return 1
    print(f"{OUTPUT.relative_to(ROOT)} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
