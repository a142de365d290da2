"""The settings idiom (``lightly_protocol.options``): one declaration per setting, flags > environment > defaults."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import pytest
from lightly_protocol.options import OptionError, add_flags, flag_values, load, option, reference


@dataclass(frozen=True)
class Example:
    port: int = option(8080, env="X_PORT", flag="--port", help="TCP port")
    ratio: float = option(0.5, env="X_RATIO", help="a share")
    debug: bool = option(False, env="X_DEBUG", flag="--debug", help="more output")
    key_file: Path | None = option(None, env="X_KEY_FILE", flag="--key-file", help="the key")
    names: tuple[str, ...] = option((), env="X_NAMES", help="comma-separated names")
    label: str = option("a", help="no env, no flag")
    prefix: str = option("p", env="X_PREFIX", keep_empty=True, help="empty has a meaning")


def parse(argv: list[str], environ: dict[str, str]) -> Example:
    parser = argparse.ArgumentParser()
    add_flags(parser, Example)
    return load(Example, environ, flag_values(parser.parse_args(argv), Example))


def test_flags_win_over_the_environment_which_wins_over_defaults() -> None:
    assert parse([], {}) == Example()
    s = parse([], {"X_PORT": "9", "X_RATIO": "0.25", "X_DEBUG": "yes", "X_KEY_FILE": "/k", "X_NAMES": "a, b,"})
    assert (s.port, s.ratio, s.debug, s.key_file, s.names) == (9, 0.25, True, Path("/k"), ("a", "b"))
    assert parse(["--port", "7", "--debug", "false"], {"X_PORT": "9", "X_DEBUG": "1"}).port == 7
    assert parse(["--debug", "false"], {"X_DEBUG": "1"}).debug is False
    assert parse([], {"X_PORT": ""}).port == 8080  # set but empty: the default
    assert parse([], {"X_PREFIX": ""}).prefix == "" and parse([], {}).prefix == "p"  # unless it keeps empty
    assert load(Example, {"X_PORT": "9"}, port=1, label="b") == Example(port=1, label="b")


def test_a_bad_value_names_its_source_and_what_it_wants() -> None:
    with pytest.raises(OptionError, match=r"X_PORT='eighty': use a whole number"):
        parse([], {"X_PORT": "eighty"})
    with pytest.raises(OptionError, match=r"--debug='maybe': use true or false"):
        parse(["--debug", "maybe"], {})


def test_the_reference_lists_each_setting_once_with_its_default() -> None:
    rows = reference(Example)
    assert rows[0] == ("--port", "X_PORT", 8080, "TCP port")
    assert [r[1] for r in rows] == ["X_PORT", "X_RATIO", "X_DEBUG", "X_KEY_FILE", "X_NAMES", "", "X_PREFIX"]
    help_text = argparse.ArgumentParser()
    add_flags(help_text, Example)
    assert "TCP port [env X_PORT; default 8080]" in help_text.format_help().replace("\n", " ").replace("  ", " ")
