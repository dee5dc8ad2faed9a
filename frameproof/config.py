"""Config files for every role: one TOML file whose keys are the command's own long options.

`render-coordinator serve --config coordinator.toml`, `render-node run --config node.toml`,
and the creator's `~/.config/frameproof/config.toml` (or `$FRAMEPROOF_CONFIG`, or
`frameproof --config FILE`). A key is the flag's name with `_` for `-` (`--lease-seconds` is
`lease_seconds`), so each setting is documented once, in the flag's help, and a new flag is
configurable without further work. Precedence, lowest first: the built-in default, the file,
the environment (`RENDER_COORDINATOR_LEASE_SECONDS`, ...), the command line.

Unknown keys, wrong types and bad values are refused with the file and line, before anything
starts. Relative paths in a file are relative to the file's folder.

    python -m frameproof.config            # print docs/CONFIG.md's reference part
    python -m frameproof.config --write    # rewrite docs/CONFIG.md and deploy/*.toml
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CREATOR_CONFIG_ENV = "FRAMEPROOF_CONFIG"
NOT_CONFIGURABLE = frozenset({"help", "config", "json", "version"})
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


class ConfigError(Exception):
    """A config file or variable that cannot be used; the message names where and why."""


@dataclass(frozen=True)
class Setting:
    """One configurable option: its key in the file, its variable, and what argparse knows."""

    key: str
    env: str
    action: argparse.Action
    parser: argparse.ArgumentParser

    @property
    def kind(self) -> str:
        return _kind(self.action)


@dataclass(frozen=True)
class Role:
    """Which parsers a role's file configures: `sections` maps a table name ("" = top level)
    to the parser whose options it holds."""

    name: str  # command, e.g. render-coordinator
    env_prefix: str
    sections: Mapping[str, argparse.ArgumentParser]
    env_aliases: Mapping[str, str]  # "section.key" -> a variable used before config files
    # section -> the section whose values it takes unless it sets them itself: `estimate`
    # prices the job `submit` would submit, so it takes [submit]'s settings too
    inherits: Mapping[str, str] = field(default_factory=dict)

    def settings(self) -> dict[str, dict[str, Setting]]:
        out: dict[str, dict[str, Setting]] = {}
        for section, parser in self.sections.items():
            table: dict[str, Setting] = {}
            for action in parser._actions:
                if not action.option_strings or action.dest in NOT_CONFIGURABLE or isinstance(
                        action, argparse._SubParsersAction | argparse._HelpAction
                        | argparse._VersionAction):
                    continue
                long_names = [o for o in action.option_strings if o.startswith("--")]
                key = (long_names[0] if long_names else action.option_strings[0]).lstrip(
                    "-").replace("-", "_")
                name = f"{section}.{key}" if section else key
                env = self.env_aliases.get(name) or "_".join(
                    p for p in (self.env_prefix, section.upper().replace("-", "_"),
                                key.upper()) if p)
                table[key] = Setting(key=key, env=env, action=action, parser=parser)
            out[section] = table
        return out


def subcommand_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The subparsers of `parser`, by command name."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def config_path_from_argv(argv: Sequence[str]) -> Path | None:
    """The `--config FILE` (or `--config=FILE`) on the command line, if any."""
    for index, arg in enumerate(argv):
        if arg == "--":
            break
        if arg == "--config" and index + 1 < len(argv):
            return Path(argv[index + 1])
        if arg.startswith("--config="):
            return Path(arg.split("=", 1)[1])
    return None


def default_creator_config() -> Path:
    """$FRAMEPROOF_CONFIG, else $XDG_CONFIG_HOME/frameproof/config.toml (~/.config/...)."""
    if explicit := os.environ.get(CREATOR_CONFIG_ENV):
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "frameproof" / "config.toml"


def apply(role: Role, path: Path | None, *, required: bool = True,
          environ: Mapping[str, str] | None = None) -> None:
    """Install the file's and the environment's values as the parsers' defaults.

    The command line, parsed afterwards, still wins. `required=False`: a missing file is
    fine (the creator's default file). Raises ConfigError.
    """
    environ = os.environ if environ is None else environ
    settings = role.settings()
    values: dict[str, dict[str, Any]] = {section: {} for section in settings}
    if path is not None and (required or path.exists()):
        for section, key, value in _read(role, path, settings):
            values[section][key] = value
    for section, table in settings.items():
        for key, setting in table.items():
            if setting.env in environ:
                values[section][key] = _from_env(setting, environ[setting.env])
    for child, parent in role.inherits.items():
        for key, value in values.get(parent, {}).items():
            if key in settings.get(child, {}):
                values[child].setdefault(key, value)
    for section, table in values.items():
        for key, value in table.items():
            setting = settings[section][key]
            setting.action.required = False  # supplied: the flag is no longer needed
            setting.parser.set_defaults(**{setting.action.dest: value})


def _read(role: Role, path: Path,
          settings: dict[str, dict[str, Setting]]) -> list[tuple[str, str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read it ({error})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    found: list[tuple[str, str, Any]] = []
    tables = {s for s in settings if s}
    for name, value in data.items():
        if name in tables and isinstance(value, dict):
            for key, item in value.items():
                found.append((name, key, item))
        elif "" in settings and name in settings[""]:
            found.append(("", name, value))
        else:
            where = _line_of(text, "", name)
            known = sorted(settings.get("", {})) + [f"[{t}]" for t in sorted(tables)]
            raise ConfigError(f"{path}:{where}: unknown setting {name!r} for {role.name} "
                              f"(known: {', '.join(known)})")
    out = []
    for section, key, value in found:
        where = f"{path}:{_line_of(text, section, key)}"
        setting = settings[section].get(key)
        if setting is None:
            table = f"[{section}] " if section else ""
            raise ConfigError(f"{where}: unknown setting {table}{key!r} for {role.name} "
                              f"(known: {', '.join(sorted(settings[section]))})")
        out.append((section, key, _from_toml(setting, value, where, path.parent)))
    return out


def _line_of(text: str, section: str, key: str) -> int | str:
    """The line that sets `key` in table `section` ("" = top level); "?" if not found."""
    current = ""
    pattern = re.compile(rf"""^\s*(["']?){re.escape(key)}\1\s*=""")
    for number, line in enumerate(text.splitlines(), start=1):
        header = re.match(r"^\s*\[\s*([^\]\s]+)\s*\]", line)
        if header:
            current = header.group(1).strip("\"'")
            if current == (f"{section}.{key}" if section else key):
                return number  # a table where a value belongs, or an unknown table
            continue
        if current == section and pattern.match(line):
            return number
    return "?"


def _kind(action: argparse.Action) -> str:
    """bool, list, integer, number, path or string: what a value must look like."""
    if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
        return "bool"
    if isinstance(action, argparse._AppendAction):
        return "list"
    convert = action.type
    if convert is None or convert is str:
        return "string"
    if convert is int:
        return "integer"
    if convert is float:
        return "number"
    try:
        sample = convert("1")  # type: ignore[operator]
    except (ValueError, TypeError, argparse.ArgumentTypeError):
        return "string"
    if isinstance(sample, bool):
        return "bool"
    if isinstance(sample, int):
        return "integer"
    if isinstance(sample, float):
        return "number"
    if isinstance(sample, Path):
        return "path"
    return "string"


_TOML_TYPES: dict[str, tuple[type, ...]] = {
    "bool": (bool,), "integer": (int,), "number": (int, float), "path": (str,),
    "string": (str,), "list": (list,),
}
_TYPE_NAMES = {bool: "true/false", int: "an integer", float: "a number", str: "a string",
               list: "a list", dict: "a table"}


def _from_toml(setting: Setting, value: Any, where: str, base: Path) -> Any:
    kind = setting.kind
    allowed = _TOML_TYPES[kind]
    if (isinstance(value, bool) and bool not in allowed) or not isinstance(value, allowed):
        got = next((n for t, n in _TYPE_NAMES.items() if isinstance(value, t)),
                   type(value).__name__)
        want = {"bool": "true or false", "integer": "an integer", "number": "a number",
                "path": "a path (a string)", "string": "a string",
                "list": "a list of strings"}[kind]
        raise ConfigError(f"{where}: {setting.key} must be {want}, not {got} ({value!r})")
    if kind == "bool":
        return value
    if kind == "list":
        return [_convert(setting, str(item), where, base) for item in value]
    return _convert(setting, str(value) if kind == "number" else value, where, base,
                    shown=repr(value))


def _from_env(setting: Setting, raw: str) -> Any:
    where = f"${setting.env}"
    if setting.kind == "bool":
        word = raw.strip().lower()
        if word not in TRUE_WORDS | FALSE_WORDS:
            raise ConfigError(f"{where}: {raw!r} is not true or false (1/0, yes/no)")
        return word in TRUE_WORDS
    if setting.kind == "list":
        return [_convert(setting, item, where, None) for item in re.split(r"[\s,]+", raw)
                if item]
    return _convert(setting, raw, where, None)


def _convert(setting: Setting, raw: str, where: str, base: Path | None,
             shown: str | None = None) -> Any:
    """Run the flag's own parser on the value, as argparse would; check its choices."""
    shown = shown or repr(raw)
    convert: Callable[[str], Any] = setting.action.type or str  # type: ignore[assignment]
    try:
        value = convert(raw)
    except (ValueError, TypeError, argparse.ArgumentTypeError) as error:
        raise ConfigError(f"{where}: {setting.key} = {shown}: {error}") from None
    if isinstance(value, Path):
        value = value.expanduser()
        if base is not None and not value.is_absolute():
            value = base / value
    choices = setting.action.choices
    if choices is not None and value not in choices:
        raise ConfigError(f"{where}: {setting.key} = {shown} is not one of "
                          f"{', '.join(map(str, choices))}")
    return value


# ------------------------------------------------------------------ the three roles


def coordinator_role(serve: argparse.ArgumentParser) -> Role:
    return Role("render-coordinator serve", "RENDER_COORDINATOR", {"": serve}, {})


def node_role(run: argparse.ArgumentParser) -> Role:
    # The node has always read the coordinator's address from FRAMEPROOF_COORDINATOR.
    return Role("render-node run", "RENDER_NODE", {"": run},
                {"coordinator": "FRAMEPROOF_COORDINATOR"})


def creator_role(parser: argparse.ArgumentParser) -> Role:
    sections: dict[str, argparse.ArgumentParser] = {"": parser}
    for name, sub in subcommand_parsers(parser).items():
        if name != "demo" and any(a.option_strings and a.dest not in NOT_CONFIGURABLE
                                  for a in sub._actions):
            sections[name] = sub
    return Role("frameproof", "FRAMEPROOF", sections, {}, {"estimate": "submit"})


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None, role: Role | None,
               default_path: Path | None = None) -> argparse.Namespace:
    """parse_args with a config file and the environment under the command line.

    `role` is None when the command has no config (e.g. `render-coordinator ledger check`);
    `default_path` is read if it exists and no --config was given. A ConfigError ends the
    program with status 2 and a one-line message naming the file and line.
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    if role is not None:
        explicit = config_path_from_argv(args_list)
        try:
            apply(role, explicit or default_path, required=explicit is not None)
        except ConfigError as error:
            parser.exit(2, f"{parser.prog}: {error}\n")
    return parser.parse_args(args_list)


def command_of(argv: Sequence[str] | None) -> str | None:
    """The subcommand in argv (its first word that is not an option), if any."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    return next((a for a in args_list if not a.startswith("-")), None)


# ------------------------------------------------------------------ documentation


def _default_text(setting: Setting) -> str:
    default = setting.action.default
    if default is None or default == [] or default == "":
        return "—"
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, Path):
        return f'`"{default}"`'
    if isinstance(default, str):
        return f'`"{default}"`'
    return f"`{default:g}`" if isinstance(default, float) else f"`{default}`"


def _toml_value(setting: Setting) -> str:
    default = setting.action.default
    kind = setting.kind
    if isinstance(default, bool):
        return "true" if default else "false"
    if default is None:  # not set unless given: show the shape of a value
        return {"bool": "false", "list": '["..."]', "integer": "1", "number": "1.0",
                "path": '"PATH"'}.get(kind, '"..."')
    if default == "":
        return '""'
    if isinstance(default, list | tuple):
        return "[" + ", ".join(f'"{v}"' for v in default) + "]"
    if isinstance(default, Path | str):
        return f'"{default}"'
    if isinstance(default, float):
        return repr(default)
    return str(default)


def reference(roles: Sequence[tuple[Role, str]]) -> str:
    """The reference tables of docs/CONFIG.md: every key, its type, default and variable."""
    out: list[str] = []
    for role, file_name in roles:
        out.append(f"### {role.name} (`{file_name}`)\n")
        for section, table in role.settings().items():
            if section:
                out.append(f"`[{section}]`\n")
            out.append("| key | type | default | environment | what |")
            out.append("|---|---|---|---|---|")
            for key, setting in table.items():
                help_text = (setting.action.help or "").replace("|", "\\|").replace("\n", " ")
                help_text = help_text.replace("%%", "%")
                if setting.action.choices is not None:
                    help_text = (f"{help_text} (one of "
                                 f"{', '.join(map(str, setting.action.choices))})").strip()
                out.append(f"| `{key}` | {setting.kind} | {_default_text(setting)} | "
                           f"`{setting.env}` | {help_text} |")
            out.append("")
    return "\n".join(out)


def example(role: Role, header: str) -> str:
    """A commented example file: every key at its default, commented out."""
    lines = [f"# {line}".rstrip() for line in header.strip().splitlines()]
    for section, table in role.settings().items():
        lines.append("")
        if section:
            lines.append(f"[{section}]")
        for key, setting in table.items():
            help_text = " ".join((setting.action.help or "").replace("%%", "%").split())
            if setting.action.choices is not None:
                help_text = (f"{help_text} (one of "
                             f"{', '.join(map(str, setting.action.choices))})").strip()
            if (setting.action.default is None and setting.kind != "bool"
                    and "default" not in help_text):
                help_text = f"{help_text} (not set by default)".strip()
            if help_text:
                lines.append(f"# {help_text}")
            lines.append(f"# {key} = {_toml_value(setting)}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    # The generator reads every command's parser, so it lives outside the library they import.
    from frameproof.config_docs import main

    raise SystemExit(main())
