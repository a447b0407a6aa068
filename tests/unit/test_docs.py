"""The option tables in docs/configuration.md are the ones circus.docgen generates."""

from __future__ import annotations

from pathlib import Path

from circus.docgen import BEGIN, DOC, END, embedded, option_tables, refresh
from circus.options import CIRCUS_OPTIONS, SOCKET_OPTIONS, WATCHER_OPTIONS


def test_configuration_md_embeds_the_generated_tables() -> None:
    text = DOC.read_text(encoding="utf-8")
    block = embedded(text)
    assert block is not None, f"{DOC}: the markers {BEGIN} / {END} are missing"
    assert block == option_tables(), (
        f"{DOC} is out of date with circus/options.py: "
        "run `python -m circus.docgen` to refresh"
    )


def test_every_option_has_a_row_with_its_help() -> None:
    tables = option_tables()
    for options in (CIRCUS_OPTIONS, WATCHER_OPTIONS, SOCKET_OPTIONS):
        for name, option in options.items():
            assert option.kind, f"option {name} has no kind"
            help_text = option.help.replace("*", "\\*")
            assert any(
                line.startswith(f"| `{name}` |") and help_text in line
                for line in tables.splitlines()
            ), f"no row for option {name}"


def test_refresh_rewrites_only_the_block(tmp_path: Path) -> None:
    doc = tmp_path / "configuration.md"
    doc.write_text(f"intro\n\n{BEGIN}\nstale\n{END}\n\nafter\n", encoding="utf-8")
    assert refresh(doc) is True
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("intro\n\n") and text.endswith(f"{END}\n\nafter\n")
    assert embedded(text) == option_tables()
    assert refresh(doc) is False
