"""Compile ``contracts/`` and write the artifacts that ship inside the ``micropay`` package.

``import micropay`` must work without a compiler, so the ABI and bytecode of every contract
are committed under ``micropay/artifacts/``. This script is the only thing that writes them
(``make artifacts``); ``tests/test_artifacts.py`` runs :func:`build` again and fails if the
committed files differ, so the shipped bytecode is always what the sources compile to.

Usage: ``python tools/build_artifacts.py [--check]``. With ``--check`` nothing is written
and the exit status says whether the committed artifacts are current.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import solcx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compiler import ROOT, CompilerPins, ensure_solc, read_pins

CONTRACTS = ROOT / "contracts"
ARTIFACTS = ROOT / "micropay" / "artifacts"
# Artifacts ship for what can be deployed: the singletons in contracts/ and the mocks in
# contracts/test/. Interfaces and libraries are compiled into what uses them.
_DEPLOYABLE_FOLDERS = {"contracts", "contracts/test"}
_OUTPUTS = ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]


def source_files() -> list[Path]:
    """Every Solidity source, in a stable order."""
    return sorted(CONTRACTS.rglob("*.sol"))


def sources_hash(paths: list[Path]) -> str:
    """sha256 over each source's project-relative path and bytes, so renames count too."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def compile_sources(pins: CompilerPins) -> dict[str, Any]:
    """Run solc's standard JSON over all sources; raise with solc's messages on errors."""
    solc, _kind = ensure_solc(pins)
    paths = source_files()
    standard_input = {
        "language": "Solidity",
        "sources": {
            p.relative_to(ROOT).as_posix(): {"content": p.read_text(encoding="utf8")} for p in paths
        },
        "settings": {
            **pins.standard_json_settings(),
            "outputSelection": {"*": {"*": _OUTPUTS}},
        },
    }
    output: dict[str, Any] = solcx.compile_standard(
        standard_input, solc_binary=solc, base_path=ROOT, allow_paths=[ROOT]
    )
    return output


def build(pins: CompilerPins | None = None) -> dict[str, str]:
    """Return ``{file name: JSON text}`` for every contract, exactly as it should be on disk."""
    pins = pins or read_pins()
    paths = source_files()
    output = compile_sources(pins)
    compiler = {
        "name": "solc",
        "version": pins.version,
        "settings": pins.standard_json_settings(),
    }
    files: dict[str, str] = {}
    for source_id, contracts in sorted(output["contracts"].items()):
        if source_id.rpartition("/")[0] not in _DEPLOYABLE_FOLDERS:
            continue
        for name, compiled in sorted(contracts.items()):
            if not compiled["evm"]["bytecode"]["object"]:
                continue  # abstract
            if f"{name}.json" in files:
                raise SystemExit(f"two contracts are named {name}; artifact names must be unique")
            artifact = {
                "contractName": name,
                "sourceId": source_id,
                "abi": compiled["abi"],
                "bytecode": "0x" + compiled["evm"]["bytecode"]["object"],
                "deployedBytecode": "0x" + compiled["evm"]["deployedBytecode"]["object"],
                "compiler": compiler,
            }
            files[f"{name}.json"] = json.dumps(artifact, indent=1, sort_keys=True) + "\n"
    files["manifest.json"] = (
        json.dumps(
            {
                "compiler": compiler,
                "sources": [p.relative_to(ROOT).as_posix() for p in paths],
                "sourcesHash": sources_hash(paths),
                "contracts": sorted(name[: -len(".json")] for name in files),
            },
            indent=1,
            sort_keys=True,
        )
        + "\n"
    )
    return files


def differences(files: dict[str, str], folder: Path = ARTIFACTS) -> list[str]:
    """Names of artifacts that are missing, stale or left over in ``folder``."""
    on_disk = {p.name for p in folder.glob("*.json")}
    stale = [
        n
        for n, text in files.items()
        if not (folder / n).is_file() or (folder / n).read_text() != text
    ]
    return sorted(stale + [n for n in on_disk - files.keys()])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare only; write nothing")
    args = parser.parse_args()
    files = build()
    changed = differences(files)
    if args.check:
        if changed:
            print("artifacts differ from a fresh compile: " + ", ".join(changed), file=sys.stderr)
            return 1
        print(f"artifacts are current ({len(files)} files)")
        return 0
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for stale in ARTIFACTS.glob("*.json"):
        if stale.name not in files:
            stale.unlink()
    for name, text in files.items():
        (ARTIFACTS / name).write_text(text, encoding="utf8")
    print(f"wrote {len(files)} files to {ARTIFACTS.relative_to(ROOT)} ({len(changed)} changed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
