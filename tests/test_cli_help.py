"""The command line explains itself: every option has help, and no command's summary is
cut off in an 80-column ``--help`` listing (click shortens a summary that does not fit)."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from micropay.cli import cli

pytestmark = pytest.mark.offchain


def _commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in sorted(group.commands.items()):
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))


COMMANDS = [(("",), cli), *_commands(cli)]


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_option_has_help(path, command):
    missing = [
        param.opts[0]
        for param in command.params
        if isinstance(param, click.Option) and not param.help and param.name != "version"
    ]
    assert not missing, f"micropay {' '.join(path)}: options without help: {missing}"


GROUPS = [(("",), cli)] + [(p, c) for p, c in _commands(cli) if isinstance(c, click.Group)]


@pytest.mark.parametrize(("path", "group"), GROUPS, ids=[" ".join(p) for p, _ in GROUPS])
def test_no_command_summary_is_cut_off_in_80_columns(path, group):
    args = [part for part in path if part] + ["--help"]
    result = CliRunner().invoke(cli, args, terminal_width=80)
    assert result.exit_code == 0, result.output
    listing = result.output.split("Commands:", 1)[1]
    assert "..." not in listing, f"micropay {' '.join(args)} cuts a summary:\n{listing}"
    # click also stops at the first full stop, as in "(e.g.": a summary must be whole.
    assert listing.count("(") == listing.count(")"), f"a summary stops mid-sentence:\n{listing}"
    for name in group.commands:
        assert name in listing
