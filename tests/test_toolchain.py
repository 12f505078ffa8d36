"""The offline compiler set-up: one pinned version, found or bridged, failing clearly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import compiler  # noqa: E402

pytestmark = pytest.mark.offchain


def test_package_json_pins_npm_solc_at_the_ape_config_version():
    pins = compiler.read_pins()
    package = json.loads((ROOT / "package.json").read_text())
    lock = json.loads((ROOT / "package-lock.json").read_text())
    assert package["dependencies"]["solc"] == pins.version
    assert lock["packages"]["node_modules/solc"]["version"] == pins.version


def test_pins_are_one_version_one_evm_and_an_enabled_optimizer():
    pins = compiler.read_pins()
    assert pins.evm_version == "cancun"
    assert pins.optimize and pins.optimization_runs > 0


def test_ensure_solc_recreates_a_removed_folder(tmp_path):
    folder = tmp_path / "solcx"
    path, kind = compiler.ensure_solc(folder=folder)
    assert path == folder / f"solc-v{compiler.read_pins().version}"
    assert kind in {"native", "npm-bridge"}
    assert compiler.reported_version(path) == compiler.read_pins().version


def test_ensure_solc_replaces_a_broken_launcher(tmp_path):
    version = compiler.read_pins().version
    broken = tmp_path / f"solc-v{version}"
    broken.write_text("#!/bin/sh\necho 'Version: 0.4.11+commit.68ef5810'\n")
    broken.chmod(0o755)
    path, _ = compiler.ensure_solc(folder=tmp_path)
    assert compiler.reported_version(path) == version


def test_solcx_sees_the_pinned_version_in_the_project_folder():
    import solcx
    from packaging.version import Version

    compiler.ensure_solc()
    installed = solcx.get_installed_solc_versions(compiler.SOLCX_FOLDER)
    assert installed == [Version(compiler.read_pins().version)]


@pytest.fixture
def bridge(tmp_path):
    """A bridge launcher, made even where a native solc exists, to test the bridge itself."""
    target = tmp_path / "solc-bridge"
    compiler._write_bridge_launcher(target, compiler.read_pins().version)
    return target


def test_bridge_answers_version_in_solcx_format(bridge):
    out = subprocess.run([bridge, "--version"], capture_output=True, text=True, check=True).stdout
    assert f"Version: {compiler.read_pins().version}+commit." in out


@pytest.mark.parametrize(
    "args", [["--bin", "x.sol"], ["--optimize"], ["x.sol"], [], ["--base-path"]]
)
def test_bridge_refuses_unsupported_use_with_a_clear_message(bridge, args):
    result = subprocess.run([bridge, *args], capture_output=True, text=True, input="")
    assert result.returncode == 2
    assert "solc bridge (npm solc)" in result.stderr
    assert "supported: --version | --standard-json" in result.stderr


def test_bridge_compiles_standard_json_and_resolves_imports_inside_base_path(bridge, tmp_path):
    (tmp_path / "B.sol").write_text(
        "// SPDX-License-Identifier: MIT\npragma solidity 0.8.28;\ncontract B {}\n"
    )
    source = 'pragma solidity 0.8.28;\nimport "B.sol";\ncontract A is B {}\n'
    request = {
        "language": "Solidity",
        "sources": {"A.sol": {"content": source}},
        "settings": {"outputSelection": {"*": {"*": ["abi"]}}},
    }
    result = subprocess.run(
        [bridge, "--standard-json", "--base-path", str(tmp_path)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        check=True,
    )
    output = json.loads(result.stdout)
    assert not [e for e in output.get("errors", []) if e["severity"] == "error"]
    assert set(output["contracts"]) == {"A.sol", "B.sol"}


def test_bridge_will_not_read_imports_outside_the_allowed_folders(bridge, tmp_path):
    inner = tmp_path / "inner"
    inner.mkdir()
    (tmp_path / "Secret.sol").write_text("pragma solidity 0.8.28; contract Secret {}\n")
    request = {
        "language": "Solidity",
        "sources": {"A.sol": {"content": 'pragma solidity 0.8.28; import "../Secret.sol";'}},
        "settings": {"outputSelection": {"*": {"*": ["abi"]}}},
    }
    result = subprocess.run(
        [bridge, "--standard-json", "--base-path", str(inner)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        check=True,
    )
    errors = json.loads(result.stdout)["errors"]
    assert any("not found inside the allowed folders" in e["message"] for e in errors)


def test_bridge_refuses_an_npm_solc_of_another_version(tmp_path):
    target = tmp_path / "solc-bridge"
    compiler._write_bridge_launcher(target, compiler.read_pins().version)
    text = target.read_text().replace(
        f"SOLC_BRIDGE_VERSION='{compiler.read_pins().version}'", "SOLC_BRIDGE_VERSION='0.8.1'"
    )
    target.write_text(text)
    result = subprocess.run([target, "--version"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "but 0.8.1 is pinned" in result.stderr


def test_a_solc_select_shim_on_path_is_never_taken_for_a_native_solc(tmp_path, monkeypatch):
    # slither's solc-select puts a `solc` on PATH that downloads compilers when run.
    shim_dir = tmp_path / "bin"
    shim_dir.mkdir()
    shim = shim_dir / "solc"
    version = compiler.read_pins().version
    shim.write_text(
        "#!/bin/sh\n# from solc_select.__main__ import solc\n"
        f"echo 'Version: {version}+commit.7893614a'\n"
    )
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim_dir}:{os.environ['PATH']}")
    _path, kind = compiler.ensure_solc(folder=tmp_path / "solcx")
    assert kind == "npm-bridge"


def test_the_audit_report_quotes_why_a_property_test_failed():
    # The shapes pytest and Hypothesis print: a plain assertion with a falsifying example,
    # and a flaky replay whose exceptions are inside an exception group's frame.
    import audit

    output = "\n".join(
        [
            "Falsifying example:",
            "state = Machine()",
            "state.create_open(eth=True, rate=1, deposit=0, delay=1)",
            "state.teardown()",
            "Traceback (most recent call last):",
            "E   AssertionError: the contract holds 5 more than it owes",
            "  |     raise TransactionFailedError(f'...')",
            "    | micropay.errors.TransactionFailedError: transaction ab failed (status 0)",
            "  | hypothesis.errors.FlakyFailure: Inconsistent results from replaying a test case!",
            "    | micropay.errors.TransactionFailedError: transaction ab failed (status 0)",
            "FAILED tests/test_invariants_stateful.py::test_channels - AssertionError",
            "1 failed, 2 passed in 480.01s",
        ]
    )
    assert audit.failure_lines(output) == [
        "Falsifying example:",
        "state = Machine()",
        "state.create_open(eth=True, rate=1, deposit=0, delay=1)",
        "state.teardown()",
        "E   AssertionError: the contract holds 5 more than it owes",
        "micropay.errors.TransactionFailedError: transaction ab failed (status 0)",
        "hypothesis.errors.FlakyFailure: Inconsistent results from replaying a test case!",
        "FAILED tests/test_invariants_stateful.py::test_channels - AssertionError",
    ]
