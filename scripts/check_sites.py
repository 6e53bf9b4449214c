"""Count the argument-check sites of panning/ per 1,000 lines (docs/architecture.md, "Checks at the boundary").

A check site is a raise of ValueError / TypeError (or the command line's UsageError, or panning.config's
ConfigError), a call of a check helper (`checks.*`, `tensor_checks.*`, `arguments.*`), or a `check=`: an option's
in the command line's option tables, a setting's in a configuration object (panning.config).
Comment lines are not counted. Usage: `python scripts/check_sites.py [--top N] [folder]`.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

SITE = re.compile(r"raise (?:ValueError|TypeError|UsageError|ConfigError)\b"
                  r"|\b(?:checks|tensor_checks|arguments)\.\w+\(|\bcheck=")


def count(folder: Path) -> tuple[int, int, dict[Path, int]]:
    """(check sites, lines, sites per file) of the Python files under `folder`."""
    sites, lines, per_file = 0, 0, {}
    for path in sorted(folder.rglob("*.py")):
        text = path.read_text().splitlines()
        found = sum(len(SITE.findall(line)) for line in text if not line.lstrip().startswith("#"))
        sites, lines, per_file[path] = sites + found, lines + len(text), found
    return sites, lines, per_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, default=Path(__file__).resolve().parent.parent / "panning")
    parser.add_argument("--top", type=int, default=15, help="list the N files with the most sites")
    args = parser.parse_args()
    sites, lines, per_file = count(args.folder)
    print(f"{sites} check sites in {lines} lines: {1000 * sites / max(lines, 1):.1f} per 1,000 lines")
    for path, found in sorted(per_file.items(), key=lambda item: -item[1])[:args.top]:
        print(f"{found:5d}  {path.relative_to(args.folder.parent)}")


if __name__ == "__main__":
    main()
