"""How the commands print their results: one table row of named cells (rich), or a plain per-layer table."""
from __future__ import annotations

import sys


def print_row(title: str, row: dict[str, str]) -> None:
    """A one-row table: column names from the keys, text cells; names and words left, numbers right."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in row:
        table.add_column(column, justify="left" if column in ("data", "model", "masks") else "right")
    table.add_row(*row.values())
    Console(file=sys.stdout, width=max(120, Console().width)).print(table)
