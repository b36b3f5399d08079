"""The benchmark report: sections of rows and columns, printed with rich and written as CSV and markdown."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence




# -- report structure ------------------------------------------------------------------------------

@dataclass
class Column:
    key: str  # CSV header and row key
    title: str  # markdown / console header
    fmt: Callable[[Any], str] = str
    csv_only: bool = False  # kept out of the markdown / console table


@dataclass
class Section:
    """One part of the report: a table (written to ``<csv_name>.csv`` too) plus free-form notes."""

    title: str
    csv_name: str
    columns: list[Column]
    rows: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)  # markdown paragraphs printed above the table
    after: list[str] = field(default_factory=list)  # markdown paragraphs printed below the table


def fmt_float(digits: int) -> Callable[[Any], str]:
    def fmt(v: Any) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        return f"{v:.{digits}f}"
    return fmt


def fmt_millions(digits: int) -> Callable[[Any], str]:
    inner = fmt_float(digits)
    return lambda v: inner(None if v is None else v / 1e6)


def fmt_str(v: Any) -> str:
    return "-" if v is None or v == "" else str(v)



# -- output ----------------------------------------------------------------------------------------

def _csv_value(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4f}"
    return v


def write_csv(section: Section, path: Path) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[c.key for c in section.columns])
        writer.writeheader()
        for row in section.rows:
            writer.writerow({c.key: _csv_value(row.get(c.key)) for c in section.columns})
    return path


def _shown(section: Section) -> list[Column]:
    return [c for c in section.columns if not c.csv_only]


def markdown_table(section: Section) -> str:
    cols = _shown(section)
    lines = ["| " + " | ".join(c.title for c in cols) + " |",
             "|" + "|".join("---" if i < 2 or c.key == "reference" else "---:" for i, c in enumerate(cols)) + "|"]
    for row in section.rows:
        lines.append("| " + " | ".join(c.fmt(row.get(c.key)) for c in cols) + " |")
    return "\n".join(lines)


def render_markdown(sections: Sequence[Section], env: Sequence[str], runtime_s: float) -> str:
    parts = ["# mobilevision benchmark", "\n".join(f"- {line}" for line in env) + f"\n- Runtime: {runtime_s:.0f} s"]
    for s in sections:
        parts.append(f"## {s.title}")
        parts.extend(s.notes)
        parts.append(markdown_table(s))
        parts.extend(s.after)
    return "\n\n".join(parts) + "\n"


def print_section(section: Section, console) -> None:
    from rich.table import Table

    cols = _shown(section)
    table = Table(title=section.title, show_lines=False)
    for i, c in enumerate(cols):
        table.add_column(c.title, justify="left" if i < 2 or c.key == "reference" else "right")
    for row in section.rows:
        table.add_row(*(c.fmt(row.get(c.key)) for c in cols))
    for note in section.notes:
        console.print(note, markup=False)
    console.print(table)
    for line in section.after:
        console.print(line, markup=False)


