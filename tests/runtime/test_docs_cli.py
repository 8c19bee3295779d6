"""docs/cli.md against the real parser (``mega_runtime.commands.cli.build_parser``), both ways.

How the page is read: a heading whose text holds code spans (``## `infer` ``, ``## `weights list` · `weights
fetch` ``) starts the section of those commands (``mega-runtime`` alone: the options before the command);
deeper headings without code spans (``### Videos over time``) continue it, and a level-2 heading without code
spans (``## Exit codes``) ends it. Every ``--flag`` in a command's section must be an option of that command, and
every option of every command that ``--help`` shows must appear in its section. Rows of the summary table whose
first cell is a code span starting with a command are checked the same way (that cell only).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from mega_runtime.commands.cli import build_parser

CLI_MD = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*|-[a-z])(?![\w-])")
HEADING = re.compile(r"^(#{2,6})\s+(.*)$")
CODE_SPAN = re.compile(r"`([^`]+)`")


def leaf_parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> dict[tuple[str, ...], argparse.ArgumentParser]:
    """Every command that runs, by its words (``()`` for the options before the command): its parser."""
    found = {path: parser}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.update(leaf_parsers(sub, (*path, name)))
            if path:
                del found[path]  # a group such as ``weights``: only its sub-commands run
    return found


def options(parser: argparse.ArgumentParser) -> tuple[set[str], set[str]]:
    """(every option string, the long or only option string of each option ``--help`` shows, except --help)."""
    every, shown = set(), set()
    for action in parser._actions:
        if not action.option_strings or isinstance(action, argparse._SubParsersAction):
            continue
        every.update(action.option_strings)
        if action.help is argparse.SUPPRESS and not isinstance(action, argparse._VersionAction):
            continue
        if isinstance(action, argparse._HelpAction):
            continue
        longs = [s for s in action.option_strings if s.startswith("--")]
        shown.add(longs[0] if longs else action.option_strings[0])
    return every, shown


def command_of(span: str) -> tuple[str, ...]:
    words = span.split()
    if words and words[0] == "mega-runtime":
        words = words[1:]
    return tuple(w for w in words if re.fullmatch(r"[a-z][a-z-]*", w))


def documented_flags(text: str) -> dict[tuple[str, ...], set[str]]:
    """Flags mentioned per command section, and per summary-table row (see the module docstring)."""
    sections: dict[tuple[str, ...], set[str]] = {}
    current: list[tuple[str, ...]] = []
    in_code_block = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code_block = not in_code_block
        heading = None if in_code_block else HEADING.match(line)
        if heading:
            spans = CODE_SPAN.findall(heading.group(2))
            if spans:
                current = [command_of(span) for span in spans]
                for command in current:
                    sections.setdefault(command, set())
            elif len(heading.group(1)) == 2:
                current = []
            continue
        flags = set(FLAG.findall(line))
        for command in current:
            sections[command] |= flags
        if not current and line.startswith("| `"):
            first_cell = CODE_SPAN.match(line[2:])
            if first_cell:
                row_flags = set(FLAG.findall(first_cell.group(1)))
                sections.setdefault(("row", *command_of(first_cell.group(1).split("|")[0])), set()).update(row_flags)
    return sections


PARSERS = leaf_parsers(build_parser())
DOCS = documented_flags(CLI_MD.read_text(encoding="utf-8"))


def test_the_parser_is_what_this_test_expects():
    assert {(), ("infer",), ("generate",), ("serve",), ("fit-smpl",), ("weights", "list")} <= set(PARSERS)


@pytest.mark.parametrize("command", sorted(PARSERS), ids=lambda c: " ".join(c) or "mega-runtime")
def test_every_shown_option_of_every_command_is_documented_in_its_section(command):
    assert command in DOCS, f"docs/cli.md has no section whose heading names `{' '.join(command)}`"
    _, shown = options(PARSERS[command])
    missing = sorted(shown - DOCS[command])
    assert not missing, f"{' '.join(command) or 'mega-runtime'}: options missing from docs/cli.md: {missing}"


@pytest.mark.parametrize("section", sorted(DOCS), ids=lambda c: " ".join(c) or "mega-runtime")
def test_every_flag_docs_cli_mentions_exists_in_the_parser(section):
    rows = section[:1] == ("row",)
    command = section[1:] if rows else section
    candidates = [c for c in PARSERS if c[: len(command)] == command] if rows else [command]
    assert candidates, f"docs/cli.md documents `{' '.join(command)}`, which the parser does not have"
    for candidate in candidates:
        every, _ = options(PARSERS[candidate])
        unknown = sorted(DOCS[section] - every)
        assert not unknown, f"docs/cli.md mentions {unknown} for `{' '.join(candidate)}`, which has no such option"


def test_the_reader_of_the_page_finds_a_wrong_flag_and_a_missing_one():
    page = "## `infer`\n\n`--out DIR --no-such-flag`\n\n## Exit codes\n\n`--overwrite`\n"
    flags = documented_flags(page)
    assert flags == {("infer",): {"--out", "--no-such-flag"}}
    assert "--no-such-flag" not in options(PARSERS[("infer",)])[0]
    assert "--hypotheses" in options(PARSERS[("infer",)])[1] - flags[("infer",)]
