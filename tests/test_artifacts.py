"""The artifacts shipped in micropay/artifacts/ are exactly what the sources compile to."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import micropay

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import build_artifacts  # noqa: E402
import compiler  # noqa: E402

pytestmark = pytest.mark.offchain


def test_shipped_artifacts_equal_a_fresh_compile():
    fresh = build_artifacts.build()
    assert build_artifacts.differences(fresh) == [], "run `make artifacts` and commit the result"


def test_manifest_hash_covers_the_current_sources():
    assert micropay._artifacts.sources_hash() == build_artifacts.sources_hash(
        build_artifacts.source_files()
    )


def test_every_artifact_records_the_pinned_compiler():
    pins = compiler.read_pins()
    for name in micropay.artifact_names():
        artifact = micropay.load_artifact(name)
        assert artifact.compiler_version == pins.version
        assert artifact.compiler_settings == pins.standard_json_settings()
        assert artifact.bytecode.startswith("0x") and len(artifact.bytecode) > 2
        assert artifact.deployed_bytecode.startswith("0x")


def test_unknown_artifact_raises_a_named_error():
    with pytest.raises(micropay.ArtifactError, match="no artifact named 'Nope'"):
        micropay.load_artifact("Nope")


def test_import_micropay_needs_neither_ape_nor_a_compiler():
    # Any attempt to import these raises ImportError in the child interpreter.
    probe = (
        "import sys\n"
        "for name in ('ape', 'solcx', 'yaml', 'pytest', 'hypothesis'):\n"
        "    sys.modules[name] = None\n"
        "import micropay\n"
        "micropay.load_artifact(micropay.artifact_names()[0])\n"
        "print(micropay.__version__)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd="/")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == micropay.__version__
