"""Small files that must survive a crash whole: one way to write them.

The payer's channel files, the paying client's store and the deployment registry are each
rewritten in full on every change. A crash (or a full disk) part-way through must leave
either the old file or the new one, never a truncated mix: a payer that lost its running
total could sign below a voucher it already gave, and a lost registry entry sends the CLI
to the wrong contract.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_json_atomically(
    path: Path, data: Any, *, private: bool = False, indent: int | None = None
) -> None:
    """Replace ``path`` with ``data`` as JSON, atomically and durably.

    The JSON is encoded first (so an unencodable value raises before anything is touched),
    written to a temporary file beside ``path``, flushed to disk, renamed over ``path``,
    and the folder is flushed too, so that the rename itself survives a power cut.
    ``private`` makes the file readable by its owner only (it holds a key).
    """
    separators = (",", ":") if indent is None else None
    text = json.dumps(data, indent=indent, separators=separators, sort_keys=True) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    mode = 0o600 if private else 0o666  # less the umask
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    if private:
        os.fchmod(descriptor, 0o600)  # a leftover temporary file may have been wider
    with os.fdopen(descriptor, "w", encoding="utf8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    temporary.replace(path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
