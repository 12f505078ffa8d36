"""``python -m micropay.watchtower`` refuses a nonsense ``--poll`` or ``--confirmations`` in
one log line and exit status 2, as every other bad setting. (The ``Watchtower(...)``
constructor, where those two are checked, ran outside the ``try`` that turns errors into a
line and status 2: Python printed its traceback and exited 1.)
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from watchtower_helpers import start_chain

from micropay.devnode import anvil

pytestmark = pytest.mark.standalone


@pytest.fixture(scope="module")
def chain():
    with anvil() as w3:
        yield start_chain(w3)


@pytest.mark.parametrize(
    "extra", [("--poll", "0"), ("--confirmations", "-1")], ids=["poll-0", "confirmations--1"]
)
def test_command_refuses_nonsense_watch_settings_in_one_line(chain, tmp_path, extra):
    env = {**os.environ, "TOWER_KEY": chain.tower.key.hex()}
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "micropay.watchtower",
            "--rpc",
            chain.w3.provider.endpoint_uri,
            "--contract",
            chain.client.address,
            "--ledger",
            f"sqlite:///{tmp_path / 'ledger.db'}",
            "--key-env",
            "TOWER_KEY",
            "--once",
            *extra,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in process.stderr, process.stderr
    assert process.returncode == 2, process.stderr
