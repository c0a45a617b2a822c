"""Every `qtutor ...` command of README.md's bash blocks runs as written, so the README cannot drift from the CLI.

Each runs in-process through ``qtutor.cli.main``, on few tokens: ``--max-tokens 512`` and ``--calib-samples 2``
are appended where the command takes them (the answers change, the code path does not), ``qtutor lab`` gets
``--dry-run`` (a server would never return), and the exports write into a temporary folder.
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from qtutor import cli

README = Path(__file__).resolve().parents[1] / "README.md"
CHEAP = {"--max-tokens": "512", "--calib-samples": "2"}


def readme_commands() -> list[str]:
    """The `qtutor ...` commands of the README's bash blocks, comments dropped, one per line or per `&&` part."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.DOTALL)
    commands = []
    for line in "\n".join(blocks).splitlines():
        for part in line.split("&&"):
            words = shlex.split(part, comments=True)
            if words[:1] == ["qtutor"]:
                commands.append(shlex.join(words))
    return commands


COMMANDS = readme_commands()


def options_of(command: str) -> set[str]:
    """The options the real parser gives ``command`` (``ppl``, ``sweep``, ...)."""
    subparsers = next(action for action in cli.build_parser()._actions if action.choices and action.dest == "command")
    return set(subparsers.choices[command]._option_string_actions)


def cheap(words: list[str]) -> list[str]:
    taken = options_of(words[0])
    extra = [word for option, value in CHEAP.items() if option in taken and option not in words
             for word in (option, value)]
    if words[0] == "lab":
        extra.append("--dry-run")
    return words + extra


def test_the_readme_has_the_commands_this_test_runs():
    subcommands = {shlex.split(command)[1] for command in COMMANDS}
    assert {"lab", "formats", "tour", "ppl", "sweep", "export-gguf"} <= subcommands, COMMANDS
    assert len(COMMANDS) >= 13


@pytest.mark.parametrize("command", COMMANDS)
def test_a_readme_command_parses_as_written(command):
    """Every command, exactly as printed, through the parser ``main`` uses (no option read as a value or back)."""
    args = cli.parse_args(shlex.split(command)[1:])
    assert args.command in cli.COMMANDS


@pytest.mark.parametrize("command", COMMANDS)
def test_a_readme_command_runs(command, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # export-gguf's relative file lands here
    words = cheap(shlex.split(command)[1:])
    code = cli.main(words)
    captured = capsys.readouterr()
    assert code == 0, f"{shlex.join(words)} exited {code}:\n{captured.err[-3000:]}"
    written = tmp_path / cli.parse_args(words).out if words[0].startswith("export-") else None
    if words[0] == "export-gguf":
        assert written.stat().st_size > 1_000_000
    if words[0] == "export-compressed-tensors":
        assert (written / "model.safetensors").stat().st_size > 1_000_000
