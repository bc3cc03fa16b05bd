"""Fuzzing the readers of files a user hands us: the manifest reader, the vote reader and the
config loader either read the input or raise the project's own error, which the command line
prints as one line; never any other exception. Bounded: each test runs a fixed number of examples
with a deadline per example, in a few seconds."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lsun_crowd.config import CONFIG_FILE, ConfigError, load_config
from lsun_crowd.ingest import Candidate, IngestError, candidates
from lsun_crowd.toml_writer import dumps
from lsun_crowd.votes_io import VotesFileError, read_votes

# A reader whose failure surfaces only as an "Exception ignored" report (Arrow's row handler) fails too.
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
BOUNDED = settings(
    max_examples=150, deadline=5000, derandomize=True, suppress_health_check=[HealthCheck.too_slow], database=None
)

# Pieces that hostile files are made of, mixed with arbitrary text and bytes.
FRAGMENTS = [
    "http://[::1",
    "https://host:99999/x.png",
    "file:///etc/passwd",
    "~nobody-here/x.png",
    "~/x.png",
    "\x00",
    "\ufeff",
    "\u200b",
    '"',
    ",",
    "\r\n",
    "\n",
    "{",
    "[" * 50,
    '{"uri": "a.png"}',
    '{"path": ["x"]}',
    "1_0",
    "\u0661",
    "x" * 5000,
    "question,worker,answer",
    "QUESTION,Worker,answer",
    "q1,w1,1",
    "q1,w1,0",
    "q2,w\u200b1,1",
    "uri",
    "a.png",
]
text_pieces = st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=40))
byte_pieces = st.one_of(text_pieces.map(lambda text: text.encode("utf-8")), st.binary(max_size=40))
file_bytes = st.lists(byte_pieces, max_size=30).map(b"".join)


@contextmanager
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="lsun-crowd-fuzz-") as folder:
        yield Path(folder)


@BOUNDED
@given(body=file_bytes, suffix=st.sampled_from([".txt", ".csv", ".jsonl"]))
def test_manifest_reader_reads_or_raises_ingest_error(body: bytes, suffix: str) -> None:
    with scratch() as folder:
        manifest = folder / f"manifest{suffix}"
        manifest.write_bytes(body)
        try:
            found = list(candidates(manifest))
        except IngestError as error:
            assert "\n" not in str(error)
            return
    for candidate in found:
        assert isinstance(candidate, Candidate)
        assert candidate.origin.startswith(f"{manifest}:")
        assert bool(candidate.reference) != bool(candidate.problem)  # a path, or why there is none


@BOUNDED
@given(
    header=st.sampled_from([b"question,worker,answer\n", b"\xef\xbb\xbfQuestion,WORKER,answer\r\n", b""]),
    body=file_bytes,
)
def test_vote_reader_reads_or_raises_votes_file_error(header: bytes, body: bytes) -> None:
    with scratch() as folder:
        votes = folder / "votes.csv"
        votes.write_bytes(header + body)
        try:
            table = read_votes(votes)
        except VotesFileError as error:
            assert "\n" not in str(error).strip()
            return
    assert len(table.item_index) == len(table.worker_index) == len(table.answer_index) > 0
    pairs = set(zip(table.item_index.tolist(), table.worker_index.tolist(), strict=True))
    assert len(pairs) == len(table.item_index)  # one vote per worker and question


toml_scalars = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(),
    st.booleans(),
    st.text(max_size=30),
    st.sampled_from(["sqlite://", "postgresql://u:p@h:x/db", "nope://", "", " ", "x" * 300]),
)
toml_values = st.recursive(
    toml_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=4,
)
FIELDS = {
    "project": ["name", "seed", "categories", "database_url", "groups"],
    "ingest": ["download_deadline_seconds", "max_download_bytes"],
    "crowd": ["votes_per_item", "max_votes_per_item", "reward_per_assignment", "poll_seconds", "settings"],
    "model": ["learning_rate", "epochs", "device", "loader_workers", "engine"],
    "cascade": ["budget", "target_precision", "sample_per_round"],
    "repair": ["rule", "folds", "max_share"],
}
config_tables = st.dictionaries(
    st.sampled_from([*FIELDS, "extra"]),
    st.dictionaries(
        st.sampled_from(sorted({field for names in FIELDS.values() for field in names})), toml_values, max_size=3
    ),
    max_size=3,
)


@BOUNDED
@given(tables=config_tables)
def test_config_loader_reads_or_raises_config_error(tables: dict[str, dict[str, Any]]) -> None:
    try:
        text = dumps(tables)
    except (TypeError, ValueError):  # a value our writer cannot put in TOML: nothing to load
        return
    with scratch() as project:
        (project / CONFIG_FILE).write_text(text, encoding="utf-8")
        try:
            load_config(project)
        except ConfigError as error:
            assert all(line.startswith(str(project / CONFIG_FILE)) for line in str(error).splitlines())


@BOUNDED
@given(body=file_bytes)
def test_config_loader_on_arbitrary_bytes(body: bytes) -> None:
    with scratch() as project:
        (project / CONFIG_FILE).write_bytes(body)
        try:
            load_config(project)
        except ConfigError as error:
            assert str(error).startswith(str(project / CONFIG_FILE))
