"""The one validator (broker.config.options): plugin options here; the config file's use
of it is in test_config.py."""

import attrs
import pytest

from broker.config.options import OptionsError, structure_options
from broker.config.schema import ConfigError, parse_config


@attrs.frozen
class Rule:
    topic: str
    limit: int = 1


@attrs.frozen
class Options:
    rules: list[Rule]
    names: tuple[str, ...] = ()
    ratio: float = 1.0


def errors_of(table: dict[str, object]) -> list[str]:
    with pytest.raises(OptionsError) as caught:
        structure_options(table, Options, "plugins[0]")
    return caught.value.errors


def test_valid_options_are_built_strictly_typed() -> None:
    built = structure_options(
        {"rules": [{"topic": "a", "limit": 2}], "names": ["x"], "ratio": 2}, Options, "p"
    )
    assert built == Options([Rule("a", 2)], ("x",), 2.0)
    assert isinstance(built.ratio, float)


def test_every_problem_is_reported_with_its_path_and_never_its_value() -> None:
    errors = errors_of({"rules": [{"topic": 5}, "secret-ish", {}], "ratio": "x", "extra": 1})
    assert sorted(errors) == sorted(
        [
            "must be a string, got an integer @ plugins[0].rules[0].topic",
            "must be a table, got a string @ plugins[0].rules[1]",
            "required option missing @ plugins[0].rules[2].topic",
            "must be a number, got a string @ plugins[0].ratio",
            "unknown option(s): extra @ plugins[0]",
        ]
    )
    assert not any("secret-ish" in error for error in errors)


def test_a_string_is_not_an_array_of_strings() -> None:
    # cattrs alone would take "ab" as ("a", "b").
    assert errors_of({"rules": [], "names": "ab"}) == [
        "must be a list, got a string @ plugins[0].names"
    ]
    assert errors_of({"rules": [], "names": ["a", 1]}) == [
        "must be a string, got an integer @ plugins[0].names[1]"
    ]


def test_the_config_file_reports_plugin_tables_with_the_other_errors() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("plugins = [5, {x = 1}]\n[server]\nport = 70000\n")
    assert sorted(caught.value.errors) == [
        "plugins[0]: must be a table",
        "plugins[1].use: required, the plugin's name or 'module:Class'",
        "server.port: must be at most 65535, got 70000",
    ]
