"""Options before or after the subcommand: all three commands accept both orders.

argparse binds an option to the parser that declares it, so `frameproof submit --coordinator X`
or `render-node --coordinator X run` would be refused. These rewrite argv into the order the
parser declares before parsing; nothing else about the arguments changes.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Sequence
from typing import NoReturn


def _subparser_maps(parser: argparse.ArgumentParser) -> Iterator[dict]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield action.choices


def _flags(parser: argparse.ArgumentParser) -> tuple[set[str], set[str]]:
    """Every option string of the parser and its subparsers: (taking a value, taking none)."""
    valued: set[str] = set()
    bare: set[str] = set()
    for action in parser._actions:
        (bare if action.nargs == 0 else valued).update(action.option_strings)
    for choices in _subparser_maps(parser):
        for sub in choices.values():
            more_valued, more_bare = _flags(sub)
            valued |= more_valued
            bare |= more_bare
    return valued, bare


def _own_options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for action in parser._actions for s in action.option_strings}


def _split(argv: Sequence[str], valued: set[str]) -> list[list[str]]:
    """argv as items: an option with its value, or one positional word."""
    items: list[list[str]] = []
    words = list(argv)
    index = 0
    while index < len(words):
        word = words[index]
        if word == "--":
            items.append(words[index:])
            break
        if word.startswith("-") and "=" not in word and word in valued \
                and index + 1 < len(words):
            items.append([word, words[index + 1]])
            index += 2
            continue
        items.append([word])
        index += 1
    return items


def globals_first(parser: argparse.ArgumentParser, argv: Sequence[str]) -> list[str]:
    """Move the top-level parser's options found after the subcommand in front of it."""
    valued, _ = _flags(parser)
    top = _own_options(parser) - {"-h", "--help"}
    front: list[str] = []
    rest: list[str] = []
    seen_command = False
    for item in _split(argv, valued):
        name = item[0].split("=", 1)[0]
        if seen_command and name in top:
            front.extend(item)
        else:
            rest.extend(item)
            seen_command = seen_command or not item[0].startswith("-")
    return front + rest


def options_after_command(parser: argparse.ArgumentParser, argv: Sequence[str]) -> list[str]:
    """Move options given before the subcommand (words) to right after it."""
    valued, _ = _flags(parser)
    top = _own_options(parser)
    items = _split(argv, valued)
    leading: list[str] = []
    index = 0
    while index < len(items) and items[index][0].startswith("-") \
            and items[index][0].split("=", 1)[0] not in top:
        leading.extend(items[index])
        index += 1
    if not leading:
        return list(argv)
    command: list[str] = []
    while index < len(items) and not items[index][0].startswith("-"):
        command.extend(items[index])
        index += 1
    if not command:
        return list(argv)
    return command + leading + [word for item in items[index:] for word in item]


class OneLineParser(argparse.ArgumentParser):
    """Usage errors in one line with exit status 2, pointing at --help (subparsers inherit)."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")
