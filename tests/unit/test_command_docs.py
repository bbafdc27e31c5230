"""Every command is documented where an operator looks: README's table, operations.md, enforcer(8);
every exit status is in enforcer(8)."""

from __future__ import annotations

import re
from pathlib import Path

from enforcer import cli
from enforcer.exitcodes import ExitCode

REPO = Path(__file__).resolve().parents[2]


def _commands():
    parser = cli.build_parser()
    (sub,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return sorted(sub.choices)


def test_the_new_commands_exist() -> None:
    assert {"reload", "suggest", "allow"} <= set(_commands())


def test_every_command_is_in_the_readme_table() -> None:
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("## Commands"):readme.index("## Documentation")]
    for command in _commands():
        assert f"| `enforcer {command}" in table, command


def test_every_command_is_in_the_man_page_synopsis_and_commands() -> None:
    page = (REPO / "packaging/man/enforcer.8").read_text()
    synopsis = page[page.index(".SH SYNOPSIS"):page.index(".SH DESCRIPTION")]
    commands = page[page.index(".SH COMMANDS"):page.index(".SH SIGNALS")]
    for command in _commands():
        assert f".B enforcer {command}" in synopsis, command
        assert re.search(rf"^\.B {command}\b", commands, re.M), command


def test_every_exit_status_is_in_the_man_page() -> None:
    page = (REPO / "packaging/man/enforcer.8").read_text()
    section = page[page.index(".SH EXIT STATUS"):page.index(".SH ENVIRONMENT")]
    for code in ExitCode:
        assert f".TP\n.B {int(code)}\n" in section, code


def test_operations_walks_the_rollout_with_the_commands() -> None:
    text = (REPO / "docs/operations.md").read_text()
    rollout = text[text.index("## Rolling out"):text.index("## Events")]
    steps = ["--mode service", "enforcer events --action audited", "enforcer suggest", "--write",
             "enforcer allow add", "ENFORCER_MODE=enforce", "systemctl restart enforcer"]
    positions = [rollout.index(step) for step in steps]
    assert positions == sorted(positions), "the rollout steps are out of order"
    assert "enforcer reload" in text[text.index("## Reloading"):]
    table = text[text.index("## Exit status of the other commands"):]
    for command in ("check", "suggest", "allow add", "allow list", "reload", "status"):
        assert f"| `{command}" in table, command
