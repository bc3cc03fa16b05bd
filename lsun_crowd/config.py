"""Project configuration: pydantic models read from ``lsun-crowd.toml``.

A bad value fails with the file, the dotted field and pydantic's reason, never a traceback.
``DEFAULT_TOML`` is what ``lsun-crowd init`` writes: every setting, commented.
"""

from __future__ import annotations

import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lsun_crowd.schema import CATEGORY_NAME_LENGTH

CONFIG_FILE = "lsun-crowd.toml"


class ConfigError(ValueError):
    """The configuration file is missing, is not TOML, or holds a bad value."""


MAX_SEED = 2**32 - 1  # a seed's range: one round's training seed is derived from it and must fit torch's 64 bits


class _Section(BaseModel):
    # No setting means anything at infinity or NaN (TOML writes them inf and nan): each is refused.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class GroupConfig(_Section):
    """Categories that exclude one another (a single-label group): an image is at most one of them,
    and, where the group is ``exhaustive``, exactly one. An image labeled otherwise is a conflict,
    held back from the export and asked of people again (:mod:`lsun_crowd.conflicts`)."""

    name: str = Field(min_length=1, max_length=100)
    categories: list[str] = Field(min_length=2)
    exhaustive: bool = False
    votes: int = Field(default=3, ge=1, le=50)  # people asked about each conflicted image
    attempts: int = Field(default=2, ge=0, le=10)  # conflict jobs an image may go to; 0: hold back only


class ProjectConfig(_Section):
    name: str = Field(default="lsun-crowd-project", min_length=1)
    seed: int = Field(default=0, ge=0, le=MAX_SEED)  # numpy's and torch's generators take no negative seed
    categories: list[str] = Field(default_factory=list)
    database_url: str = ""  # empty: a SQLite file inside the project directory
    groups: list[GroupConfig] = Field(default_factory=list)

    @field_validator("categories")
    @classmethod
    def _check_categories(cls, categories: list[str]) -> list[str]:
        seen: set[str] = set()
        for index, name in enumerate(categories):
            if not name.strip():
                raise ValueError(f"category {index + 1} is empty")
            if len(name) > CATEGORY_NAME_LENGTH:
                longest = CATEGORY_NAME_LENGTH
                raise ValueError(f"category {index + 1} is {len(name)} characters long; the store holds {longest}")
            if name in seen:
                raise ValueError(f"category {index + 1} ({name!r}) is named twice")
            seen.add(name)
        return categories

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, url: str) -> str:
        if url:
            database_dialect(url)
        return url

    @model_validator(mode="after")
    def _check_groups(self) -> ProjectConfig:
        known = set(self.categories)
        owner: dict[str, str] = {}
        names: set[str] = set()
        for index, group in enumerate(self.groups):
            where = f"groups.{index}"
            if group.name in names:
                raise ValueError(f"{where}.name: a second group named {group.name!r}")
            names.add(group.name)
            for category in group.categories:
                if category not in known:
                    raise ValueError(f"{where}.categories: {category!r} is not one of project.categories")
                if category in owner:
                    other = "twice in this group" if owner[category] == group.name else f"also in {owner[category]!r}"
                    raise ValueError(f"{where}.categories: {category!r} is {other}; a category is in one group")
                owner[category] = group.name
        return self


def database_dialect(url: str) -> str:
    """The dialect a SQLAlchemy URL names, once SQLAlchemy knows it. The messages never quote the
    URL, which may hold a password."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # ArgumentError, or ValueError on a bad port
        raise ValueError(
            "not a SQLAlchemy database URL (dialect+driver://user:password@host/database; empty: SQLite in the project)"
        ) from None
    try:
        parsed.get_dialect()
    except Exception:  # NoSuchModuleError, or a dialect that fails to load
        raise ValueError(f"no SQLAlchemy dialect {parsed.drivername!r} is installed") from None
    return parsed.get_backend_name()


class IngestConfig(_Section):
    """How long one image URL may take to download, and how large it may be (a URL past either is
    rejected with its manifest line, and the ingest goes on)."""

    download_deadline_seconds: float = Field(default=120.0, gt=0)
    max_download_bytes: int = Field(default=64 * 1024 * 1024, ge=1)


class CrowdConfig(_Section):
    adapter: str = "mock"
    votes_per_item: int = Field(default=2, ge=1, le=50)
    max_votes_per_item: int = Field(default=5, ge=1, le=50)
    follow_up_votes: int = Field(default=1, ge=1, le=50)
    min_votes_per_item: int = Field(default=2, ge=1)
    items_per_hit: int = Field(default=10, ge=1, le=200)
    gold_per_hit: int = Field(default=1, ge=0)
    reward_per_assignment: Decimal = Field(default=Decimal("0.05"), ge=0)
    hit_lifetime_seconds: int = Field(default=3 * 24 * 3600, ge=60)
    poll_seconds: float = Field(default=30.0, ge=0)
    collect_timeout_seconds: float = Field(default=7 * 24 * 3600, gt=0)
    # A crowd's transient failures are retried this often, waiting at most this long in all, per call.
    retry_attempts: int = Field(default=8, ge=1, le=100)
    retry_seconds: float = Field(default=600.0, ge=0, le=24 * 3600)
    settings: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> CrowdConfig:
        if self.max_votes_per_item < self.votes_per_item:
            raise ValueError("max_votes_per_item cannot be below votes_per_item")
        if self.min_votes_per_item > self.max_votes_per_item:
            raise ValueError("min_votes_per_item cannot exceed max_votes_per_item")
        if self.gold_per_hit >= self.items_per_hit:
            raise ValueError("gold_per_hit must leave room for at least one pool item in each HIT")
        return self


class QualityConfig(_Section):
    accuracy_bar: float = Field(default=0.7, gt=0, lt=1)
    block_confidence: float = Field(default=0.95, gt=0.5, lt=1)
    prior_correct: float = Field(default=4.0, gt=0)
    prior_wrong: float = Field(default=1.0, gt=0)
    min_label_confidence: float = Field(default=0.997, ge=0.5, lt=1)
    reject_blocked_work: bool = True
    model_consensus: bool = True
    qualification_items: int = Field(default=0, ge=0, le=100)
    qualification_pass: float = Field(default=0.8, gt=0, le=1)


class ModelConfig(_Section):
    backbone: str = "resnet18"
    weights: str = "DEFAULT"  # a torchvision weights name, a local file, an http(s) URL, or "none"
    offline: bool = False  # never download weights (LSUN_CROWD_OFFLINE=1 too)
    image_size: int = Field(default=224, ge=8, le=1024)
    batch_size: int = Field(default=64, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Processes that read and decode images while the network embeds (lsun_crowd.image_loader).
    loader_workers: Literal["auto"] | Annotated[int, Field(ge=0)] = "auto"
    hidden_units: int = Field(default=256, ge=0)
    epochs: int = Field(default=200, ge=1)
    learning_rate: float = Field(default=3e-3, gt=0)
    weight_decay: float = Field(default=1e-3, ge=0)
    # Where the pool is embedded and scored: in this process, or as Ray Data jobs (lsun_crowd.ray_engine).
    engine: Literal["local", "ray"] = "local"
    ray_address: str = ""  # empty: start Ray on this machine; "auto" or "ray://head:10001": join a cluster
    ray_workers: int = Field(default=2, ge=1)
    ray_cpus_per_worker: int = Field(default=1, ge=1)
    ray_gpus_per_worker: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _check_engine(self) -> ModelConfig:
        # A Ray worker sees only the GPUs it asked for, so "cuda" with none would fail on every worker.
        if self.engine == "ray" and self.device == "cuda" and self.ray_gpus_per_worker == 0:
            raise ValueError('ray_gpus_per_worker: 0, but device = "cuda" with engine = "ray" needs a GPU per worker')
        return self


RETIRED_CASCADE_KEYS = ("planned_samples", "calibration_fraction")


class CascadeConfig(_Section):
    sample_per_round: int = Field(default=400, ge=10)
    calibration_max_votes: int = Field(default=9, ge=1, le=50)
    calibration_consensus: float = Field(default=0.9, gt=0.5, le=1)
    target_precision: float = Field(default=0.97, gt=0.5, lt=1)
    target_npv: float = Field(default=0.995, gt=0.5, lt=1)
    target_recall: float = Field(default=0.9, ge=0, lt=1)
    confidence: float = Field(default=0.95, gt=0, lt=1)
    max_rounds: int = Field(default=10, ge=1)
    budget: Decimal = Field(default=Decimal("100"), ge=0)
    finish_with_humans_below: int = Field(default=50, ge=0)
    min_class_labels: int = Field(default=20, ge=2)
    guided_share: float = Field(default=0.5, ge=0, lt=1)

    @model_validator(mode="before")
    @classmethod
    def _drop_retired(cls, data: Any) -> Any:
        """Settings of the per-round tests that certification replaced (issue 24): rounds hold
        nothing out and are not sized for a test any more. Older files that set them still load."""
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if key not in RETIRED_CASCADE_KEYS}
        return data


class RepairConfig(_Section):
    """Label-error repair (:mod:`lsun_crowd.repair`): human labels scored out of fold, suspects
    found by confident learning, sent back to fresh workers."""

    enabled: bool = True
    every_rounds: int = Field(default=0, ge=0)  # 0: one pass, when the category finishes
    folds: int = Field(default=5, ge=2, le=20)
    rule: Literal["confident_joint", "prune_by_class", "prune_by_noise_rate", "both", "argmax"] = "prune_by_noise_rate"
    max_share: float = Field(default=0.05, gt=0, le=1)
    votes: int = Field(default=3, ge=1, le=50)
    follow_up_votes: int = Field(default=2, ge=1, le=50)
    max_votes: int = Field(default=7, ge=1, le=100)
    min_per_class: int = Field(default=10, ge=2)
    model_evidence: bool = True

    @model_validator(mode="after")
    def _check(self) -> RepairConfig:
        if self.max_votes < self.votes:
            raise ValueError("max_votes cannot be below votes")
        return self


class Config(_Section):
    project: ProjectConfig = Field(default_factory=ProjectConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    crowd: CrowdConfig = Field(default_factory=CrowdConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    cascade: CascadeConfig = Field(default_factory=CascadeConfig)
    repair: RepairConfig = Field(default_factory=RepairConfig)


def parse_config(data: dict[str, Any], source: str) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as error:
        problems = []
        for problem in error.errors():
            field = ".".join(str(part) for part in problem["loc"]) or "(top level)"
            problems.append(f"{source}: {field}: {problem['msg']}")
        raise ConfigError("\n".join(problems)) from None


def load_config(project_dir: Path) -> Config:
    path = project_dir / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"{path}: no configuration file (run `lsun-crowd init {project_dir}`)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    except UnicodeDecodeError as error:
        line = error.object[: error.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text (byte 0x{error.object[error.start]:02x})") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid TOML: arrays or tables nested too deeply") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None
    return parse_config(data, str(path))


DEFAULT_TOML = """\
# lsun-crowd project configuration. Every value below is the default; edit what you need.

[project]
name = "lsun-crowd-project"
seed = 0                      # every random choice (samples, splits, training) derives from it
categories = []               # e.g. ["bedroom", "kitchen"]; one binary cascade per category
database_url = ""             # empty: SQLite file lsun-crowd.db here; or postgresql+psycopg://user@host/db
# Mutually exclusive categories (a single-label group), as many groups as you need:
# [[project.groups]]
# name = "rooms"
# categories = ["bedroom", "kitchen"]
# exhaustive = false          # true: every image is exactly one of them, not at most one
# votes = 3                   # people asked about each conflicted image (all categories at once)
# attempts = 2                # conflict jobs an image may go to before it is only held back

[ingest]
download_deadline_seconds = 120.0  # the most one image URL may take in all (connecting and reading);
                              #   a slower one is rejected with its manifest line
max_download_bytes = 67108864 # the largest image a URL may send (64 MiB)

[crowd]
adapter = "mock"              # a crowd adapter; `lsun-crowd plugins` lists the installed ones
votes_per_item = 2            # votes each image starts with (assignments per HIT)
max_votes_per_item = 5        # adaptive redundancy: an image whose label is still uncertain gets
follow_up_votes = 1           #   this many more votes at a time, up to this cap; equal to
                              #   votes_per_item for fixed redundancy
min_votes_per_item = 2        # an image with fewer votes after its round goes back to the pool
items_per_hit = 10            # images in one HIT grid, gold included
gold_per_hit = 1              # hidden gold images per HIT, drawn from the category's gold labels
reward_per_assignment = 0.05  # USD paid for one submitted HIT
hit_lifetime_seconds = 259200
poll_seconds = 30             # wait between checks for new assignments
collect_timeout_seconds = 604800
retry_attempts = 8            # a crowd's transient failures (timeouts, throttling, server errors) are
retry_seconds = 600           #   retried this often, waiting at most this long, per call

[crowd.settings]              # passed as-is to the adapter

[quality]
accuracy_bar = 0.7            # a worker confidently below this accuracy on gold is blocked
block_confidence = 0.95       # how sure we must be that a worker is below the bar
prior_correct = 4.0           # Beta prior on a worker's gold accuracy (pseudo-counts)
prior_wrong = 1.0
min_label_confidence = 0.997  # a human label needs this posterior; a less certain image gets more votes,
                              # or goes back to the pool once it has max_votes_per_item
reject_blocked_work = true    # reject the unreviewed work of a worker blocked on gold; false pays it
                              # anyway (their votes are discounted either way)
model_consensus = true        # the previous round's model, calibrated on held-out human labels, adds
                              # its evidence to the votes on training images (never calibration ones)
qualification_items = 0       # gold images held back as a test a worker passes before their first HIT
qualification_pass = 0.8      #   of a category, and the share they must get right; 0 items: no test

[model]
backbone = "resnet18"         # `pixels` for tiny images; any registered backbone
weights = "DEFAULT"           # torchvision weights name (downloaded once into torch's cache, checksum
                              #   verified), a .pth file, an http(s) URL, or "none"
offline = false               # never download weights (or set LSUN_CROWD_OFFLINE=1); a missing file is an
                              #   error naming what to copy where
image_size = 224
batch_size = 64
device = "auto"               # auto: CUDA when available, else CPU
loader_workers = "auto"       # processes decoding images while the network embeds; 0: none. auto: one per
                              #   spare core (at most 4), none for fewer than 1,024 images to embed
hidden_units = 256            # 0: a linear head
epochs = 200
learning_rate = 0.003
weight_decay = 0.001
engine = "local"              # "ray": embed and score the pool as Ray Data jobs (pip install 'lsun-crowd[ray]');
                              #   the driver alone writes the store and the cache: docs/scale-out.md
ray_address = ""              # empty: start Ray on this machine; "auto" or "ray://head:10001": join a cluster
ray_workers = 2               # Ray workers that embed or score at once
ray_cpus_per_worker = 1       # CPUs each worker holds, and the threads torch runs there
ray_gpus_per_worker = 0.0     # GPUs each worker holds; 0.25: four workers share a GPU

[cascade]
sample_per_round = 400        # images sent to humans each round, drawn at random from the pool
calibration_max_votes = 9     # votes an image checked for certification may take; at the cap it is judged
calibration_consensus = 0.9   #   by its votes' consensus if that is this sure, else counts against the model
target_precision = 0.97       # the precision all of a category's auto-positives must reach
target_npv = 0.995            # the negative predictive value all of its auto-negatives must reach
target_recall = 0.9           # the share of its positives auto-negatives must keep; 0: NPV alone
confidence = 0.95             # probability that all three hold together, against the crowd's consensus
                              #   (one certification of the model's labels by people: docs/guarantees.md)
max_rounds = 10
budget = 100.0                # USD, rewards plus platform fees, never exceeded
finish_with_humans_below = 50 # once the pool is this small, humans label the rest
min_class_labels = 20         # people's labels of each class a model needs before it splits the pool
                              #   (its calibration on fewer is a guess)
guided_share = 0.5            # where a round's random draw would find fewer than min_class_labels of a
                              #   rare class, this share of its images is the pool's likeliest of that
                              #   class instead (docs/guarantees.md); 0: every round draws at random

[repair]
enabled = true                # look for wrong human labels and send them back to people
every_rounds = 0              # a pass after every N-th round too (the next round trains on the fixes);
                              #   0: one pass when the category finishes
folds = 5                     # cross-fitting: each label scored by a model trained on the other folds
rule = "prune_by_noise_rate"  # confident learning's rule: confident_joint, prune_by_class,
                              #   prune_by_noise_rate, both, or argmax (the plain disagreement)
max_share = 0.05              # at most this share of a category's human labels go back in one pass
votes = 3                     # new votes per suspect, from workers who never answered about the image
follow_up_votes = 2           # more at a time while the votes leave it uncertain,
max_votes = 7                 #   up to this many new votes in all
min_per_class = 10            # fewest human labels of each class a category needs to be scored
model_evidence = true         # the out-of-fold model, calibrated, votes too when settling a suspect
                              #   (never on calibration images, which people alone decide)
"""
