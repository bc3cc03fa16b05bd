from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from lsun_crowd.config import CONFIG_FILE, DEFAULT_TOML, Config, ConfigError, load_config, parse_config


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / CONFIG_FILE).write_text(text)
    return tmp_path


def test_default_toml_is_exactly_the_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, DEFAULT_TOML)) == Config()


def test_every_setting_is_in_the_default_file() -> None:
    for section_name, section in Config.model_fields.items():
        assert f"[{section_name}]" in DEFAULT_TOML
        assert section.annotation is not None
        for field in section.annotation.model_fields:  # type: ignore[union-attr]
            written = f"\n{field} = " in DEFAULT_TOML or f"[{section_name}.{field}]" in DEFAULT_TOML
            assert written, f"{section_name}.{field} is not in DEFAULT_TOML"


def test_bad_value_names_file_field_and_reason(tmp_path: Path) -> None:
    write(tmp_path, "[cascade]\ntarget_precision = 1.5\n[crowd]\nvotes_per_item = 'three'\n")
    with pytest.raises(ConfigError) as error:
        load_config(tmp_path)
    message = str(error.value)
    assert f"{tmp_path / CONFIG_FILE}: cascade.target_precision: Input should be less than 1" in message
    assert "crowd.votes_per_item: Input should be a valid integer" in message


def test_unknown_field_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "[model]\nbackbon = 'resnet18'\n")
    with pytest.raises(ConfigError, match=r"model.backbon: Extra inputs are not permitted"):
        load_config(tmp_path)


def test_cross_field_rules(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="min_votes_per_item cannot exceed max_votes_per_item"):
        parse_config({"crowd": {"max_votes_per_item": 2, "min_votes_per_item": 3}}, "x.toml")
    with pytest.raises(ConfigError, match="max_votes_per_item cannot be below votes_per_item"):
        parse_config({"crowd": {"votes_per_item": 4, "max_votes_per_item": 3}}, "x.toml")
    fixed = parse_config({"crowd": {"votes_per_item": 3, "max_votes_per_item": 3}}, "x.toml").crowd
    assert fixed.votes_per_item == fixed.max_votes_per_item == 3
    with pytest.raises(ConfigError, match="gold_per_hit must leave room"):
        parse_config({"crowd": {"items_per_hit": 2, "gold_per_hit": 2}}, "x.toml")


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no configuration file"):
        load_config(tmp_path)
    write(tmp_path, "[project\nname=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path)


def test_money_is_decimal(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "[crowd]\nreward_per_assignment = 0.1\n[cascade]\nbudget = 12.5\n"))
    assert config.crowd.reward_per_assignment == Decimal("0.1")
    assert config.cascade.budget == Decimal("12.5")
