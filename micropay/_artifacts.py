"""The compiled contracts shipped inside the package, so the SDK never needs a compiler.

``tools/build_artifacts.py`` writes the JSON files in ``micropay/artifacts/``; a test
recompiles the sources and fails if they differ, so what is loaded here is exactly what
``contracts/`` compiles to with the pinned compiler.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from micropay.errors import ArtifactError


@dataclass(frozen=True)
class ContractArtifact:
    """What it takes to deploy or call one contract, and how it was built."""

    name: str
    source_id: str
    abi: tuple[dict[str, Any], ...]
    bytecode: str
    deployed_bytecode: str
    compiler_version: str
    compiler_settings: dict[str, Any]


@cache
def _manifest() -> dict[str, Any]:
    return _read_json("manifest.json")


def _read_json(file_name: str) -> dict[str, Any]:
    try:
        text = resources.files("micropay").joinpath("artifacts", file_name).read_text("utf8")
        data: dict[str, Any] = json.loads(text)
    except (OSError, ValueError) as err:
        raise ArtifactError(f"cannot read micropay/artifacts/{file_name}: {err}") from err
    return data


def artifact_names() -> tuple[str, ...]:
    """Names of every contract shipped with the package."""
    return tuple(_manifest()["contracts"])


@cache
def load_artifact(name: str) -> ContractArtifact:
    """Load one contract's artifact by its Solidity name (``"PaymentChannels"``)."""
    if name not in artifact_names():
        raise ArtifactError(f"no artifact named {name!r}; shipped: {', '.join(artifact_names())}")
    data = _read_json(f"{name}.json")
    return ContractArtifact(
        name=data["contractName"],
        source_id=data["sourceId"],
        abi=tuple(data["abi"]),
        bytecode=data["bytecode"],
        deployed_bytecode=data["deployedBytecode"],
        compiler_version=data["compiler"]["version"],
        compiler_settings=data["compiler"]["settings"],
    )


def sources_hash() -> str:
    """sha256 of the Solidity sources the shipped artifacts were compiled from."""
    value: str = _manifest()["sourcesHash"]
    return value


@cache
def _runtime_code(name: str) -> tuple[bytes, tuple[tuple[int, int], ...]]:
    """The shipped runtime code and the spans its immutables fill in at deployment.

    solc leaves each immutable as a 32-byte zero placeholder in the runtime code and the
    constructor writes the value there (PaymentChannels caches its chain id and domain
    separator): only in those spans may deployed code differ from the artifact.
    """
    code = bytes.fromhex(load_artifact(name).deployed_bytecode[2:])
    holes, start = [], None
    for i, byte in enumerate(code + b"\x01"):
        if byte == 0 and start is None:
            start = i
        elif byte != 0 and start is not None:
            if i - start >= 32:
                holes.append((start, i))
            start = None
    return code, tuple(holes)


def runtime_code_matches(name: str, deployed: bytes) -> bool:
    """Whether ``deployed`` is the shipped contract ``name`` with its immutables filled in."""
    expected, holes = _runtime_code(name)
    if len(deployed) != len(expected):
        return False
    position = 0
    for start, end in holes:
        if deployed[position:start] != expected[position:start]:
            return False
        position = end
    return deployed[position:] == expected[position:]
