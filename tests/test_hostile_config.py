"""Hostile lsun-crowd.toml: every bad value is refused with the file and the dotted field, in one
line per problem, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from lsun_crowd.cli import app
from lsun_crowd.config import CONFIG_FILE, ConfigError, load_config
from lsun_crowd.schema import Category

CATEGORY_NAME_LENGTH = Category.__table__.c.name.type.length  # type: ignore[attr-defined]

runner = CliRunner(env={"COLUMNS": "200"})


def refused(tmp_path: Path, toml: str | bytes) -> str:
    target = tmp_path / CONFIG_FILE
    target.write_bytes(toml.encode("utf-8") if isinstance(toml, str) else toml)
    with pytest.raises(ConfigError) as raised:
        load_config(tmp_path)
    return str(raised.value)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("not a url", "not a SQLAlchemy database URL"),
        ("postgresql+psycopg://ann:s3cret@db.example:port/pool", "not a SQLAlchemy database URL"),
        ("oracle9+nothing://ann:s3cret@host/pool", "no SQLAlchemy dialect 'oracle9+nothing' is installed"),
    ],
)
def test_bad_database_url_is_one_line_naming_the_setting(tmp_path: Path, url: str, reason: str) -> None:
    (tmp_path / CONFIG_FILE).write_text(f'[project]\ndatabase_url = "{url}"\n')
    result = runner.invoke(app, ["status", "--project", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {tmp_path / CONFIG_FILE}: project.database_url: ")
    assert reason in result.stderr and len(result.stderr.splitlines()) == 1
    assert "s3cret" not in result.output  # the URL, which may hold a password, is never quoted


def test_good_database_urls_pass(tmp_path: Path) -> None:
    for url in ["", "sqlite:///elsewhere.db", "postgresql+psycopg://ann@localhost/pool"]:
        (tmp_path / CONFIG_FILE).write_text(f'[project]\ndatabase_url = "{url}"\n')
        assert load_config(tmp_path).project.database_url == url


@pytest.mark.parametrize(
    ("categories", "reason"),
    [
        ('["cat", "dog", "cat"]', "category 3 ('cat') is named twice"),
        ('["cat", ""]', "category 2 is empty"),
        ('["   "]', "category 1 is empty"),
        (f'["cat", "{"x" * (CATEGORY_NAME_LENGTH + 1)}"]', "category 2 is 201 characters long; the store holds 200"),
    ],
)
def test_bad_category_names_are_refused(tmp_path: Path, categories: str, reason: str) -> None:
    message = refused(tmp_path, f"[project]\ncategories = {categories}\n")
    assert message == f"{tmp_path / CONFIG_FILE}: project.categories: Value error, {reason}"


@pytest.mark.parametrize(
    ("section", "field", "value"),
    [
        ("model", "learning_rate", "inf"),
        ("model", "learning_rate", "nan"),
        ("model", "weight_decay", "+inf"),
        ("cascade", "budget", "inf"),
        ("crowd", "reward_per_assignment", "inf"),
        ("crowd", "collect_timeout_seconds", "inf"),
        ("crowd", "poll_seconds", "nan"),
        ("quality", "prior_correct", "inf"),
        ("ingest", "download_deadline_seconds", "inf"),
    ],
)
def test_non_finite_numbers_are_refused(tmp_path: Path, section: str, field: str, value: str) -> None:
    message = refused(tmp_path, f"[{section}]\n{field} = {value}\n")
    assert message == f"{tmp_path / CONFIG_FILE}: {section}.{field}: Input should be a finite number"


def test_ingest_limits_are_read(tmp_path: Path) -> None:
    (tmp_path / CONFIG_FILE).write_text("[ingest]\ndownload_deadline_seconds = 7.5\nmax_download_bytes = 1000\n")
    settings = load_config(tmp_path).ingest
    assert (settings.download_deadline_seconds, settings.max_download_bytes) == (7.5, 1000)
    message = refused(tmp_path, "[ingest]\nmax_download_bytes = 0\n")
    assert message == f"{tmp_path / CONFIG_FILE}: ingest.max_download_bytes: Input should be greater than or equal to 1"


def test_config_that_is_not_utf8_names_its_line(tmp_path: Path) -> None:
    message = refused(tmp_path, b'[project]\nname = "caf\xe9"\n')
    assert message == f"{tmp_path / CONFIG_FILE}:2: not UTF-8 text (byte 0xe9)"
    assert "nested too deeply" in refused(tmp_path, "x = " + "[" * 5000 + "]" * 5000 + "\n")


@pytest.mark.parametrize(
    ("seed", "reason"), [("-1", "greater than or equal to 0"), ("4294967296", "less than or equal to")]
)
def test_a_seed_the_generators_cannot_take_is_refused(tmp_path: Path, seed: str, reason: str) -> None:
    """numpy refuses a negative seed and torch one past 64 bits (a round's training seed grows from
    the project's): the config says so, naming the field, before any round starts."""
    message = refused(tmp_path, f"[project]\nseed = {seed}\n")
    assert "project.seed" in message and reason in message


def test_a_negative_seed_on_the_command_line_is_refused_by_name() -> None:
    result = runner.invoke(app, ["simulate", "--seed", "-1"])
    assert result.exit_code == 2 and "--seed" in result.output
