"""Sections of bench/doctor_corpus.md written by the doctor's bench scripts."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def write_section(title: str, lines: list[str]) -> None:
    """Replace (or append) the ``## title`` section of bench/doctor_corpus.md."""
    path = ROOT / "bench" / "doctor_corpus.md"
    text = path.read_text()
    head = f"## {title}\n"
    if head in text:
        before, _, rest = text.partition(head)
        after = rest[rest.find("\n## ") + 1 :] if "\n## " in rest else ""
    else:
        before, after = text.rstrip("\n") + "\n\n", ""
    path.write_text(before + head + "\n" + "\n".join(lines) + "\n\n" + after)
