"""Find or make the one Solidity compiler micropay builds with, and read its pinned settings.

Everything that compiles (ape-solidity in the tests, ``tools/build_artifacts.py`` for the
shipped artifacts) goes through py-solc-x, which looks for an executable named
``solc-v<version>`` in the folder ``SOLCX_BINARY_PATH``. This module fills that folder:

1. a native ``solc`` of the pinned version, where one is on PATH, is linked in (it is
   faster and is what the pin means);
2. otherwise a launcher over the npm ``solc`` package (``tools/solcjs-bridge.cjs``) is
   written, because py-solc-x's own installer downloads binaries from the internet,
   which these machines cannot reach.

The pins (version, EVM version, optimizer) live in ``ape-config.yaml`` only; this module
reads them from there so the artifacts and ape compile the same way.

Run it as ``python tools/compiler.py`` to (re)create the folder; it prints what it chose.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SOLCX_FOLDER = ROOT / ".solcx"
BRIDGE_SCRIPT = ROOT / "tools" / "solcjs-bridge.cjs"
NPM_SOLC = ROOT / "node_modules" / "solc"
_VERSION_LINE = re.compile(r"^Version: (\d+\.\d+\.\d+)\+commit\.[0-9a-f]+", re.MULTILINE)


class CompilerSetupError(RuntimeError):
    """No compiler of the pinned version could be found or made."""


@dataclass(frozen=True)
class CompilerPins:
    """The compiler settings every build uses, as written in ape-config.yaml."""

    version: str
    evm_version: str
    optimize: bool
    optimization_runs: int
    via_ir: bool

    def standard_json_settings(self) -> dict[str, object]:
        """The ``settings`` block of solc's standard JSON input for these pins."""
        return {
            "evmVersion": self.evm_version,
            "optimizer": {"enabled": self.optimize, "runs": self.optimization_runs},
            "viaIR": self.via_ir,
        }


def read_pins(config_path: Path = ROOT / "ape-config.yaml") -> CompilerPins:
    """Read the ``solidity:`` block of ape-config.yaml."""
    solidity = yaml.safe_load(config_path.read_text(encoding="utf8"))["solidity"]
    return CompilerPins(
        version=str(solidity["version"]),
        evm_version=str(solidity["evm_version"]),
        optimize=bool(solidity["optimize"]),
        optimization_runs=int(solidity["optimization_runs"]),
        via_ir=bool(solidity.get("via_ir", False)),
    )


def reported_version(executable: Path | str) -> str | None:
    """The X.Y.Z a solc executable reports, or None if it does not answer like solc."""
    try:
        out = subprocess.run(
            [str(executable), "--version"], capture_output=True, text=True, timeout=60, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = _VERSION_LINE.search(out)
    return match.group(1) if match else None


def is_solc_select_shim(path: str) -> bool:
    """solc-select (pulled in by slither) installs a `solc` that downloads a compiler the
    first time it runs: never a native solc we may use."""
    try:
        return b"solc_select" in Path(path).read_bytes()[:4096]
    except OSError:
        return False


def _write_bridge_launcher(target: Path, version: str) -> None:
    node = shutil.which("node")
    if node is None:
        raise CompilerSetupError("no native solc and no `node` on PATH for the npm solc bridge")
    package = NPM_SOLC / "package.json"
    if not package.is_file():
        raise CompilerSetupError(f"{NPM_SOLC} is missing; run `npm ci` (or `make node_modules`)")
    npm_version = json.loads(package.read_text(encoding="utf8"))["version"]
    if npm_version != version:
        raise CompilerSetupError(
            f"node_modules has npm solc {npm_version}, but ape-config.yaml pins {version}; "
            "run `npm ci`"
        )
    target.write_text(
        "#!/bin/sh\n"
        "# Written by tools/compiler.py: solc over the npm solc package (no native solc found).\n"
        f"SOLC_BRIDGE_MODULE='{NPM_SOLC}' SOLC_BRIDGE_VERSION='{version}' "
        f"exec '{node}' '{BRIDGE_SCRIPT}' \"$@\"\n",
        encoding="utf8",
    )
    target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def ensure_solc(pins: CompilerPins | None = None, folder: Path = SOLCX_FOLDER) -> tuple[Path, str]:
    """Make ``folder/solc-v<version>`` answer as the pinned compiler; return it and its kind.

    The kind is ``"native"`` or ``"npm-bridge"``. An existing entry is kept only if it
    still reports the pinned version, so a stale or broken one is replaced.
    """
    pins = pins or read_pins()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"solc-v{pins.version}"

    native = shutil.which("solc")
    if native and not is_solc_select_shim(native) and reported_version(native) == pins.version:
        if not (target.is_symlink() and os.path.realpath(target) == os.path.realpath(native)):
            target.unlink(missing_ok=True)
            target.symlink_to(native)
        return target, "native"

    if target.is_symlink() or not target.is_file() or reported_version(target) != pins.version:
        target.unlink(missing_ok=True)
        _write_bridge_launcher(target, pins.version)
        found = reported_version(target)
        if found != pins.version:
            raise CompilerSetupError(f"the npm solc bridge at {target} reports {found!r}")
    return target, "npm-bridge"


def main() -> int:
    try:
        path, kind = ensure_solc()
    except CompilerSetupError as err:
        print(f"compiler setup failed: {err}", file=sys.stderr)
        return 1
    print(f"solc {read_pins().version} ({kind}) at {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
