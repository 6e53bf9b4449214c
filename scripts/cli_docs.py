"""Regenerate the option tables of docs/cli.md ("## Options of each command" to the end) from the commands' option
tables, so the documentation never drifts from `panning <command> --help`:

    python scripts/cli_docs.py
"""
from pathlib import Path

from panning.cli import COMMANDS

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
HEADING = "## Options of each command"


def option_tables() -> str:
    """The generated section: one table per command, one row per option."""
    parts = [HEADING, "", "Generated from the option tables by `python scripts/cli_docs.py`; "
             "`panning <command> --help` shows the same. Every command also takes `--config`.", ""]
    for name, command in COMMANDS.items():
        parts += [f"### `panning {name}`: {command.HELP}", "", "| option | meaning |", "|---|---|"]
        for option in command.OPTIONS:
            choices = f"; one of {', '.join(option.choices)}" if option.choices else ""
            parts.append(f"| `--{option.flag}` | {option.help_text()}{choices} |")
        parts.append("")
    return "\n".join(parts)


def main() -> None:
    text = DOC.read_text()
    DOC.write_text(text[:text.index(HEADING)] + option_tables())


if __name__ == "__main__":
    main()
