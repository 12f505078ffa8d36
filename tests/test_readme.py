"""Every code sample in the README runs, so the README cannot go stale.

Python blocks run in order in one fresh interpreter (later blocks use names the earlier
ones define). Shell blocks name make targets and micropay commands: each target must exist
in the Makefile and each command must answer --help.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.standalone

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf8")
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README, re.S)
PYTHON = [code for lang, code in BLOCKS if lang == "python"]
SHELL = [code for lang, code in BLOCKS if lang == "sh"]


def test_the_readme_has_samples():
    assert len(PYTHON) >= 3 and len(SHELL) >= 2


def test_python_samples_run(tmp_path):
    script = tmp_path / "readme_samples.py"
    script.write_text("\n\n".join(PYTHON), encoding="utf8")
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "settled 1000000000000000 wei for 100 payments" in result.stdout


def test_make_targets_named_in_the_readme_exist():
    makefile = (ROOT / "Makefile").read_text(encoding="utf8")
    targets = set(re.findall(r"\bmake (\w+)", README))
    assert {"demo", "test", "bench", "lint", "artifacts", "audit"} <= targets
    for target in targets:
        assert re.search(rf"^{target}:", makefile, re.M), f"make {target} is not in the Makefile"


def test_cli_commands_named_in_the_readme_exist():
    micropay = shutil.which("micropay", path=str(Path(sys.executable).parent))
    commands = set()
    for block in SHELL:
        for line in block.splitlines():
            words = [w for w in line.split("#")[0].split() if not w.startswith("-")]
            if words[:1] == ["micropay"]:
                # skip option values such as `--dev-account 1`
                words = [w for w in words[1:] if not w.isdigit()]
                commands.add(tuple(w for w in words[:2] if w.isalpha()))
    assert ("channel", "open") in commands and ("deploy",) in {c[:1] for c in commands}
    for command in commands:
        words = [w for w in command if w]
        path = words[:2] if words and words[0] in {"channel", "stream"} else words[:1]
        result = subprocess.run([micropay, *path, "--help"], capture_output=True, text=True)
        assert result.returncode == 0, f"micropay {' '.join(path)}: {result.stderr}"
