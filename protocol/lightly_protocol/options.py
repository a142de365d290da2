"""The one settings idiom of the three components: a frozen dataclass whose fields say, once each, their
default, their environment variable, their command-line flag and their help.

::

    @dataclass(frozen=True)
    class ServerSettings:
        port: int = option(8080, env="LIGHTLY_SERVER_PORT", flag="--port", help="TCP port")

    parser = argparse.ArgumentParser(); add_flags(parser, ServerSettings)
    args = parser.parse_args()
    settings = load(ServerSettings, os.environ, flag_values(args, ServerSettings))

Precedence: a flag given on the command line, else the environment variable (set and not empty, or set
at all for a field declared ``keep_empty``), else the default. Values are parsed by the field's type
(``str``, ``int``, ``float``, ``bool``, ``Path``, those ``| None``, and ``tuple[str, ...]`` from
comma-separated text); a bad value raises ``OptionError`` naming the variable or flag and what it wants.
``reference`` gives the rows of the docs' configuration tables, so the tables are tested against the
objects.

Pure: the caller passes the environment; nothing here reads it.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["Option", "OptionError", "add_flags", "flag_values", "load", "option", "options", "reference"]

T = TypeVar("T")


class OptionError(ValueError):
    """A setting's value that cannot be used; the message names the variable or flag and what it wants."""


@dataclasses.dataclass(frozen=True)
class Option:
    env: str | None
    flag: str | None
    help: str
    #: a variable set to "" gives "" (not the default): for text where empty has a meaning of its own
    keep_empty: bool = False


def option(
    default: Any = dataclasses.MISSING,
    *,
    env: str | None = None,
    flag: str | None = None,
    help: str,
    default_factory: Callable[[], Any] | None = None,
    keep_empty: bool = False,
) -> Any:
    """A dataclass field that is a setting (see the module's docstring)."""
    meta = {"option": Option(env, flag, help, keep_empty)}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def options(cls: type) -> list[tuple[dataclasses.Field[Any], Option, Any]]:
    """(field, its Option, its resolved type) of every setting of ``cls``, in declaration order."""
    hints = typing.get_type_hints(cls)
    return [(f, f.metadata["option"], hints[f.name]) for f in dataclasses.fields(cls) if "option" in f.metadata]


def _base(kind: Any) -> Any:
    """The type without ``None``."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0]
    return kind


def parse(kind: Any, raw: str, where: str) -> Any:
    """``raw`` (from the environment or a flag) as a value of ``kind``."""
    base = _base(kind)
    text = raw.strip()
    try:
        if base is bool:
            low = text.lower()
            if low in ("true", "1", "yes", "on"):
                return True
            if low in ("false", "0", "no", "off", ""):
                return False
            raise ValueError
        if base is int:
            return int(text)
        if base is float:
            return float(text)
        if base is Path:
            return Path(text)
        if typing.get_origin(base) is tuple:
            return tuple(x.strip() for x in text.split(",") if x.strip())
    except ValueError:
        word = {bool: "true or false", int: "a whole number", float: "a number"}.get(base, str(base))
        raise OptionError(f"{where}={raw!r}: use {word}") from None
    return text


def load(cls: type[T], environ: Mapping[str, str], given: Mapping[str, Any] | None = None, **overrides: Any) -> T:
    """An instance of ``cls``: ``overrides`` and ``given`` (flags: None means not given) first, then
    ``environ``, then the defaults."""
    values: dict[str, Any] = {}
    given = {**(given or {}), **overrides}
    for f, opt, kind in options(cls):
        if given.get(f.name) is not None:
            value = given[f.name]
            values[f.name] = parse(kind, value, opt.flag or f.name) if isinstance(value, str) else value
        elif opt.env and opt.env in environ and (environ[opt.env] != "" or opt.keep_empty):
            values[f.name] = parse(kind, environ[opt.env], opt.env)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]  # cls is a dataclass
    values.update({k: v for k, v in given.items() if k in names and k not in values and v is not None})
    return cls(**values)


def add_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """One ``--flag`` per setting that has one; its default is None (``load`` then looks further)."""
    for f, opt, _kind in options(cls):
        if opt.flag:
            default = _default(f)
            tail = [f"env {opt.env}"] if opt.env else []
            if default not in (None, "", ()):
                tail.append(f"default {default}")
            text = opt.help + (f" [{'; '.join(tail)}]" if tail else "")
            parser.add_argument(opt.flag, dest=f.name, default=None, help=text.replace("%", "%%"))


def flag_values(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The settings' values the command line gave (None where it gave none)."""
    return {f.name: getattr(args, f.name, None) for f, opt, _ in options(cls) if opt.flag}


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def reference(cls: type) -> list[tuple[str, str, Any, str]]:
    """(flag, environment variable, default, help) of every setting: what a configuration table shows."""
    return [(opt.flag or "", opt.env or "", _default(f), opt.help) for f, opt, _ in options(cls)]
