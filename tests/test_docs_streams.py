"""The site owners' page on streamed responses runs as written (docs/streams.md)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.standalone

PAGE = Path(__file__).resolve().parent.parent / "docs" / "streams.md"


def test_the_streams_page_example_runs_and_prints_what_it_says(tmp_path):
    text = PAGE.read_text(encoding="utf8")
    [code] = re.findall(r"```python\n(.*?)```", text, re.S)
    [promised] = re.findall(r"It prints `([^`]*)`", text)
    script = tmp_path / "streams_example.py"
    script.write_text(code, encoding="utf8")
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == promised
