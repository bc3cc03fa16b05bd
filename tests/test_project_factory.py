"""Test projects built from values: the TOML writer, the merge of overrides, and the checks on load."""

from __future__ import annotations

import math
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from lsun_crowd.config import CONFIG_FILE, Config, ConfigError, load_config
from lsun_crowd.demo import FIXED_REDUNDANCY, demo_config
from lsun_crowd.testing import REMOVE, digits_config, digits_project, merge_config, update_project, write_project
from lsun_crowd.toml_writer import dumps, quote

AWKWARD = 'quote " backslash \\ newline \n tab \t return \r bell \x07 escape \x1b delete \x7f ünïcødé ✓ 𝄞'


def test_values_round_trip_through_the_writer() -> None:
    document = {
        "title": AWKWARD,
        "count": -42,
        "big": 2**62,
        "on": True,
        "off": False,
        "ratio": 0.1,
        "tiny": 1e-300,
        "huge": 1.5e300,
        "negative_zero": -0.0,
        "infinite": -math.inf,
        "empty_list": [],
        "nested_lists": [[1, 2], ["a", "b"], []],
        "inline": [{"name": "x", "deep": {"y": [1.5]}}, {}],
        "key with spaces": "k",
        "": "empty key",
        "ключ": "non-ASCII key",
        "section": {
            "value": "v",
            "empty": {},
            "deeper": {"still": {"deeper": 3, 'odd "key"': AWKWARD}},
        },
        "after": {"x": 1},
    }
    assert tomllib.loads(dumps(document)) == document


def test_decimals_keep_their_digits() -> None:
    document = {"money": {"reward": Decimal("0.02"), "budget": Decimal("500"), "hundred": Decimal("1E+2")}}
    text = dumps(document)
    assert "1E" not in text
    read = tomllib.loads(text, parse_float=Decimal)
    assert read == {"money": {"reward": Decimal("0.02"), "budget": 500, "hundred": 100}}
    assert str(read["money"]["reward"]) == "0.02"


def test_nan_and_special_strings_are_valid_toml() -> None:
    read = tomllib.loads(dumps({"nan": math.nan, "d": Decimal("NaN"), "s": "[not a table]\nx = 1"}))
    assert math.isnan(read["nan"]) and math.isnan(read["d"]) and read["s"] == "[not a table]\nx = 1"
    assert quote("\x00") == '"\\u0000"'


@pytest.mark.parametrize("value", [None, object(), b"bytes", {1: "int key"}])
def test_a_value_toml_cannot_hold_is_named(value: Any) -> None:
    with pytest.raises(TypeError, match=r"crowd\.settings"):
        dumps({"crowd": {"settings": {"x": value}}})


def test_digits_config_is_what_the_demo_writes() -> None:
    for seed, digits in ((0, range(10)), (3, range(2))):
        assert tomllib.loads(dumps(digits_config(seed, digits))) == tomllib.loads(demo_config(seed, digits))
    fixed = digits_config(1, overrides={"crowd": {"votes_per_item": 3, "max_votes_per_item": 3}})
    assert tomllib.loads(dumps(fixed)) == tomllib.loads(demo_config(1, redundancy=FIXED_REDUNDANCY))


def test_overrides_are_merged_deeply_and_leave_the_rest() -> None:
    base = digits_config(0, range(1))
    merged = digits_config(
        0,
        range(1),
        overrides={
            "crowd": {"poll_seconds": 0.1, "settings": {"tick_seconds": 100, "seed": REMOVE}},
            "quality": {"qualification_items": 6},
        },
    )
    assert merged["crowd"]["settings"] == {"truth_file": "truth.csv", "tick_seconds": 100}
    assert merged["crowd"]["poll_seconds"] == 0.1
    assert {k: v for k, v in merged["crowd"].items() if k not in ("poll_seconds", "settings")} == {
        k: v for k, v in base["crowd"].items() if k not in ("poll_seconds", "settings")
    }
    assert merged["quality"] == {"qualification_items": 6}
    assert merged["project"] == base["project"] and merged["cascade"] == base["cascade"]
    assert base["crowd"]["settings"] == {"seed": 0, "truth_file": "truth.csv"}  # the base is not changed
    # A table replaces a plain value and a plain value a table; REMOVE of a missing key is no error.
    assert merge_config({"a": 1, "b": {"c": 2}}, {"a": {"x": 1}, "b": 3, "z": REMOVE}) == {"a": {"x": 1}, "b": 3}


def test_an_override_never_aliases_the_caller_s_tables() -> None:
    overrides: dict[str, Any] = {"crowd": {"settings": {"balance": 1}}}
    merged = merge_config({}, overrides)
    merged["crowd"]["settings"]["balance"] = 2
    assert overrides == {"crowd": {"settings": {"balance": 1}}}


def test_a_written_config_round_trips(tmp_path: Path) -> None:
    values = digits_config(
        2,
        range(3),
        sample_per_round=120,
        overrides={"crowd": {"reward_per_assignment": Decimal("0.07"), "settings": {"note": AWKWARD}}},
    )
    config = write_project(tmp_path, values)
    assert config == load_config(tmp_path) == Config.model_validate(values)
    assert config.crowd.reward_per_assignment == Decimal("0.07")
    assert config.crowd.settings["note"] == AWKWARD
    assert config.cascade.sample_per_round == 120 and config.project.categories == ["digit-0", "digit-1", "digit-2"]
    # A Config writes back to the same configuration.
    assert write_project(tmp_path / "again", config) == config


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"cascade": {"sample_per_rounds": 10}}, "cascade.sample_per_rounds"),
        ({"qualty": {"qualification_items": 6}}, "qualty"),
        ({"crowd": {"votes_per_item": 0}}, "crowd.votes_per_item"),
    ],
)
def test_an_unknown_key_or_bad_value_fails_naming_the_field(
    tmp_path: Path, overrides: dict[str, Any], field: str
) -> None:
    with pytest.raises(ConfigError, match=rf"{CONFIG_FILE}: {field}:"):
        write_project(tmp_path, digits_config(overrides=overrides))


def test_update_project_changes_only_what_it_names(tmp_path: Path) -> None:
    write_project(tmp_path, digits_config(0, range(1)))
    updated = update_project(
        tmp_path, {"cascade": {"budget": Decimal("0.5")}, "project": {"database_url": "sqlite:////tmp/elsewhere.db"}}
    )
    assert updated.cascade.budget == Decimal("0.5") and updated.project.database_url == "sqlite:////tmp/elsewhere.db"
    assert updated.model_dump(exclude={"cascade", "project"}) == write_project(
        tmp_path / "fresh", digits_config(0, range(1))
    ).model_dump(exclude={"cascade", "project"})
    with pytest.raises(ConfigError, match="crowd.adaptor"):
        update_project(tmp_path, {"crowd": {"adaptor": "web"}})


def test_digits_project_is_ingested_and_configured(tmp_path: Path) -> None:
    from sqlalchemy import func, select

    from lsun_crowd.project import Project
    from lsun_crowd.schema import Gold, Item

    targets = digits_project(
        tmp_path / "p", limit=200, digits=range(1), sample_per_round=20, overrides={"cascade": {"budget": 7}}
    )
    assert len(targets) == 200
    project = Project.open(tmp_path / "p")
    try:
        assert project.config.cascade.budget == 7 and project.config.cascade.sample_per_round == 20
        with project.store.session() as session:
            assert session.scalar(select(func.count(Item.id))) == 200
            assert session.scalar(select(func.count(Gold.id))) == 20  # ten of each answer
    finally:
        project.close()
    assert tomllib.loads((tmp_path / "p" / CONFIG_FILE).read_text())["crowd"]["settings"]["truth_file"] == "truth.csv"
