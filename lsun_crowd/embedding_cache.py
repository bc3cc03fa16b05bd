"""The on-disk embedding cache: one vector per image, keyed by the image's SHA-256, in shards.

A shard is one file, ``shard-000123.emb``: a 64-byte header (magic, dimensions, rows, and the
CRC-32 of everything after the header), then every row's 32-byte binary digest, then the rows'
float32 vectors. Every open checks each shard's size and checksum (2.5 GB/s: about 0.4 s for a
million 256-dimensional rows), so a shard torn, truncated, extended or flipped by the disk is
moved aside as ``.corrupt`` and its images are embedded again; it is never read. Each shard is written to a
``.partial-<host>-<pid>-…`` file, fsynced once and linked into place under a number no other shard has,
so a shard is either whole or absent: a crash mid-write leaves only a partial file, which every
open ignores and the next open after its writer is gone deletes. The cost of durability is one
fsync per shard (tens of thousands of rows), not per batch.

The index does not hold the keys as Python strings. It keeps the first 8 bytes of each digest as
a ``uint64``, sorted, and the permutation from that order to the rows: 16 bytes a key, rebuilt at
open by one sort (a million keys in a fraction of a second). A batch of hashes is looked up with
one ``np.searchsorted``, and each candidate is confirmed against its full 32-byte digest, read
from the memory-mapped shard, so two images whose digests share 8 bytes are still told apart.

Rows appended but not yet in a shard wait in memory (at most one shard of them), readable at
once; :meth:`EmbeddingCache.flush` writes them, and so does dropping the cache or leaving the
interpreter. A crash before that loses those rows, which the next run embeds again.

The cache a version before this one wrote (``vectors.f32`` with ``keys.txt``) is moved into
shards the first time it is opened; rows present in both files are kept, the rest dropped.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import struct
import weakref
import zlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

log = logging.getLogger(__name__)

MAGIC = b"LSUNEMB2"
MAGIC_UNCHECKED = b"LSUNEMB1"  # shards written before checksums: their size is all that is checked
HEADER = struct.Struct("<8sQQI")  # magic, dimensions, rows, CRC-32 of the body
CHECK_BYTES = 16 * 1024 * 1024  # the checksum is computed over the memory map in pieces this size
HEADER_BYTES = 64
DIGEST_BYTES = 32
SHARD_BYTES = 64 * 1024 * 1024  # a shard's size aimed at: what a crash may cost, and what waits in memory
MAX_SHARD_ROWS = 65_536
MIN_SHARD_ROWS = 1_024
OPEN_SHARDS = 64  # memory maps kept open at once (each holds a file descriptor)
LEGACY_VECTORS = "vectors.f32"
LEGACY_KEYS = "keys.txt"

_HEX_VALUES = np.full(256, 255, dtype=np.uint8)
for _value, _character in enumerate(b"0123456789abcdef"):
    _HEX_VALUES[_character] = _value
for _value, _character in enumerate(b"ABCDEF", start=10):
    _HEX_VALUES[_character] = _value


class EmbeddingError(RuntimeError):
    """An image cannot be embedded, or the cache cannot give or take a vector."""


def shard_rows_for(dim: int) -> int:
    """Rows a shard holds: about :data:`SHARD_BYTES` of vectors, within sensible bounds."""
    return int(min(MAX_SHARD_ROWS, max(MIN_SHARD_ROWS, SHARD_BYTES // (4 * dim + DIGEST_BYTES))))


def digests(sha256s: Sequence[str]) -> tuple[NDArray[np.uint8], NDArray[np.bool_]]:
    """The 32-byte digests of hex SHA-256 strings, as an ``(n, 32)`` array, and which strings
    were valid (a row for an invalid string is zeros)."""
    count = len(sha256s)
    lengths = np.fromiter(map(len, sha256s), dtype=np.int64, count=count)
    valid = lengths == 2 * DIGEST_BYTES
    text = "".join(key for key, ok in zip(sha256s, valid, strict=True) if ok) if not valid.all() else "".join(sha256s)
    codes = _HEX_VALUES[np.frombuffer(text.encode("ascii", "replace"), dtype=np.uint8)].reshape(-1, 2 * DIGEST_BYTES)
    good = ~(codes == 255).any(axis=1)
    packed = ((codes[:, 0::2] << 4) | codes[:, 1::2]).astype(np.uint8)
    packed[~good] = 0
    result = np.zeros((count, DIGEST_BYTES), dtype=np.uint8)
    result[valid] = packed
    valid[valid] = good
    return result, valid


def prefixes(keys: NDArray[np.uint8]) -> NDArray[np.uint64]:
    """The first 8 bytes of each digest as one integer: the sort key of the index."""
    return np.ascontiguousarray(keys[:, :8]).view(np.uint64).reshape(-1)


@dataclass
class _Shard:
    path: Path
    rows: int


@dataclass
class _Pending:
    """Rows appended since the last shard was written, shared with the finalizer that writes
    them if the cache is dropped without :meth:`EmbeddingCache.flush`."""

    directory: Path
    dim: int
    owner_pid: int
    keys: list[NDArray[np.uint8]] = field(default_factory=list)
    vectors: list[NDArray[np.float32]] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)

    def take(self) -> tuple[NDArray[np.uint8], NDArray[np.float32]]:
        keys = np.concatenate(self.keys) if self.keys else np.zeros((0, DIGEST_BYTES), dtype=np.uint8)
        vectors = np.concatenate(self.vectors) if self.vectors else np.zeros((0, self.dim), dtype=np.float32)
        self.keys, self.vectors, self.rows = [], [], {}
        return keys, vectors


def _write_pending_at_exit(pending: _Pending) -> None:
    # A forked worker inherits the cache object; only the process that made it writes its rows.
    if pending.rows and os.getpid() == pending.owner_pid:
        keys, vectors = pending.take()
        write_shard(pending.directory, keys, vectors)


def _fsync_directory(directory: Path) -> None:
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _body_checksum(path: Path) -> int:
    """The CRC-32 of a shard after its header, read through a memory map in pieces."""
    body = np.memmap(path, dtype=np.uint8, mode="r", offset=HEADER_BYTES)
    checksum = 0
    for start in range(0, len(body), CHECK_BYTES):
        checksum = zlib.crc32(body[start : start + CHECK_BYTES].data, checksum)
    del body
    return checksum


def _shard_number(path: Path) -> int:
    return int(path.name.removeprefix("shard-").removesuffix(".emb"))


def shard_paths(directory: Path) -> list[Path]:
    return sorted(directory.glob("shard-[0-9]*.emb"), key=_shard_number)


def write_shard(directory: Path, keys: NDArray[np.uint8], vectors: NDArray[np.float32]) -> Path:
    """Write one shard durably: a partial file, fsynced, then linked to the first free number."""
    key_bytes = np.ascontiguousarray(keys, dtype=np.uint8).tobytes()
    vector_bytes = np.ascontiguousarray(vectors, dtype=np.float32).tobytes()
    checksum = zlib.crc32(vector_bytes, zlib.crc32(key_bytes))
    header = HEADER.pack(MAGIC, vectors.shape[1], len(keys), checksum).ljust(HEADER_BYTES, b"\0")
    partial = directory / f"{_partial_prefix()}{secrets.token_hex(4)}"
    try:
        with partial.open("wb") as handle:
            handle.write(header)
            handle.write(key_bytes)
            handle.write(vector_bytes)
            handle.flush()
            os.fsync(handle.fileno())
        existing = shard_paths(directory)
        number = _shard_number(existing[-1]) + 1 if existing else 0
        while True:
            target = directory / f"shard-{number:06d}.emb"
            try:
                os.link(partial, target)  # fails if another writer took the number: then take the next
                break
            except FileExistsError:
                number += 1
            except OSError:  # a file system without hard links: a rename, unless the number is taken
                if not target.exists():
                    os.rename(partial, target)
                    break
                number += 1
        _fsync_directory(directory)
        return target
    finally:
        partial.unlink(missing_ok=True)


def _partial_prefix() -> str:
    """Partial files name their writer, so an open deletes only those of dead processes on its
    own machine (a cache on a shared disk may have writers elsewhere)."""
    return f".partial-{socket.gethostname()}-{os.getpid()}-"


def _process_is_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _remove_abandoned_partials(directory: Path) -> None:
    """Delete partial shards whose writer died; a live writer's partial file is left alone."""
    host = f".partial-{socket.gethostname()}-"
    for path in directory.glob(".partial-*"):
        writer = path.name.removeprefix(host).split("-")[0] if path.name.startswith(host) else ""
        if writer.isdigit() and int(writer) != os.getpid() and _process_is_gone(int(writer)):
            path.unlink(missing_ok=True)


class EmbeddingCache:
    """Vectors of ``dim`` float32 by image SHA-256 (see the module's docstring for the layout).

    Use it as a context manager, or call :meth:`flush`, to make appended rows durable at a point
    of your choosing; they are written when a shard fills in any case.
    """

    def __init__(self, directory: Path, dim: int, shard_rows: int | None = None) -> None:
        self.directory = directory
        self.dim = dim
        self.shard_rows = shard_rows or shard_rows_for(dim)
        directory.mkdir(parents=True, exist_ok=True)
        _remove_abandoned_partials(directory)
        self._shards: list[_Shard] = []
        self._starts = np.zeros(1, dtype=np.int64)  # first global row of each shard, then the total
        self._sorted_prefixes = np.zeros(0, dtype=np.uint64)
        self._rows_by_prefix = np.zeros(0, dtype=np.int64)
        self._shared_prefixes = False  # two stored digests start with the same 8 bytes
        self._maps: OrderedDict[int, NDArray[np.uint8]] = OrderedDict()
        self._pending = _Pending(directory, dim, os.getpid())
        self._finalizer = weakref.finalize(self, _write_pending_at_exit, self._pending)
        self._load_shards()
        self._migrate_legacy()

    # -- reading shards ---------------------------------------------------------------------------

    def _load_shards(self) -> None:
        """Check every shard's header and size, and build the index with one sort."""
        for path in shard_paths(self.directory):
            rows = self._whole_shard_rows(path)
            if rows:
                self._shards.append(_Shard(path, rows))
        self._starts = np.concatenate([[0], np.cumsum([shard.rows for shard in self._shards])]).astype(np.int64)
        found = np.empty(int(self._starts[-1]), dtype=np.uint64)
        for shard in range(len(self._shards)):
            found[self._starts[shard] : self._starts[shard + 1]] = prefixes(self._keys(shard))
        self._rows_by_prefix = np.argsort(found).astype(np.int64)
        self._sorted_prefixes = found[self._rows_by_prefix]
        del found
        self._check_shared_prefixes()

    def _whole_shard_rows(self, path: Path) -> int:
        """The rows of a whole shard, or 0 for one that is not (it is moved aside)."""
        size = path.stat().st_size
        with path.open("rb") as handle:
            header = handle.read(HEADER.size)
        magic, dim, rows, checksum = HEADER.unpack(header) if len(header) == HEADER.size else (b"", 0, 0, 0)
        if magic in (MAGIC, MAGIC_UNCHECKED) and dim != self.dim:
            raise EmbeddingError(f"{path}: holds {dim}-dimensional vectors, but this model makes {self.dim}")
        if magic not in (MAGIC, MAGIC_UNCHECKED) or rows == 0:
            return self._set_aside(path, "not an embedding shard")
        expected = HEADER_BYTES + rows * (DIGEST_BYTES + 4 * dim)
        if size != expected:
            return self._set_aside(path, f"{size:,} bytes where {rows:,} rows take {expected:,} (a torn write)")
        if magic == MAGIC and _body_checksum(path) != checksum:
            return self._set_aside(path, "its rows fail their checksum")
        return int(rows)

    @staticmethod
    def _set_aside(path: Path, why: str) -> int:
        aside = path.with_name(path.name + ".corrupt")
        log.warning("%s: %s; moved to %s, and its images will be embedded again", path, why, aside)
        path.replace(aside)
        return 0

    def _map(self, shard: int) -> NDArray[np.uint8]:
        mapped = self._maps.get(shard)
        if mapped is None:
            mapped = np.memmap(self._shards[shard].path, dtype=np.uint8, mode="r")
            self._maps[shard] = mapped
            if len(self._maps) > OPEN_SHARDS:
                self._maps.popitem(last=False)
        else:
            self._maps.move_to_end(shard)
        return mapped

    def _keys(self, shard: int) -> NDArray[np.uint8]:
        rows = self._shards[shard].rows
        return self._map(shard)[HEADER_BYTES : HEADER_BYTES + rows * DIGEST_BYTES].reshape(rows, DIGEST_BYTES)

    def _vectors(self, shard: int) -> NDArray[np.float32]:
        rows = self._shards[shard].rows
        start = HEADER_BYTES + rows * DIGEST_BYTES
        return self._map(shard)[start : start + rows * 4 * self.dim].view(np.float32).reshape(rows, self.dim)

    def _by_shard(self, rows: NDArray[np.int64]) -> Iterator[tuple[int, NDArray[np.intp], NDArray[np.int64]]]:
        """For stored global rows: each shard touched, which of the rows fall in it, and where."""
        shard_of = np.searchsorted(self._starts, rows, side="right") - 1
        order = np.argsort(shard_of, kind="stable")
        bounds = np.searchsorted(shard_of[order], np.arange(len(self._shards) + 1))
        for shard in range(len(self._shards)):
            positions = order[bounds[shard] : bounds[shard + 1]]
            if len(positions):
                yield shard, positions, rows[positions] - self._starts[shard]

    def _stored_keys(self, rows: NDArray[np.int64]) -> NDArray[np.uint8]:
        found = np.empty((len(rows), DIGEST_BYTES), dtype=np.uint8)
        for shard, positions, local in self._by_shard(rows):
            found[positions] = self._keys(shard)[local]
        return found

    # -- the index --------------------------------------------------------------------------------

    def _merge(self, new_prefixes: NDArray[np.uint64], new_rows: NDArray[np.int64]) -> None:
        """Add rows to the sorted index. Both parts are sorted runs, so the stable sort merges them
        in linear time; exact duplicates (the same image stored twice) keep their first row."""
        order = np.argsort(new_prefixes, kind="stable")
        combined = np.concatenate([self._sorted_prefixes, new_prefixes[order]])
        rows = np.concatenate([self._rows_by_prefix, new_rows[order]])
        merge = np.argsort(combined, kind="stable")
        self._sorted_prefixes, self._rows_by_prefix = combined[merge], rows[merge]
        self._check_shared_prefixes()

    def _check_shared_prefixes(self) -> None:
        shared = np.flatnonzero(self._sorted_prefixes[1:] == self._sorted_prefixes[:-1])
        if len(shared):
            self._shared_prefixes = True
            self._drop_exact_duplicates(shared)

    def _drop_exact_duplicates(self, shared: NDArray[np.intp]) -> None:
        later = self._stored_keys(self._rows_by_prefix[shared + 1])
        earlier = self._stored_keys(self._rows_by_prefix[shared])
        repeated = shared[(later == earlier).all(axis=1)] + 1
        if len(repeated):
            keep = np.ones(len(self._sorted_prefixes), dtype=bool)
            keep[repeated] = False
            self._sorted_prefixes, self._rows_by_prefix = self._sorted_prefixes[keep], self._rows_by_prefix[keep]

    def _stored_rows(self, keys: NDArray[np.uint8], valid: NDArray[np.bool_]) -> NDArray[np.int64]:
        """The stored global row of each digest, or -1."""
        found = np.full(len(keys), -1, dtype=np.int64)
        if not len(self._sorted_prefixes) or not len(keys):
            return found
        wanted = prefixes(keys)
        positions = np.minimum(np.searchsorted(self._sorted_prefixes, wanted), len(self._sorted_prefixes) - 1)
        candidates = np.flatnonzero(valid & (self._sorted_prefixes[positions] == wanted))
        rows = self._rows_by_prefix[positions[candidates]]
        same = (self._stored_keys(rows) == keys[candidates]).all(axis=1)
        found[candidates[same]] = rows[same]
        if self._shared_prefixes:
            for index in candidates[~same]:  # another digest with the same first 8 bytes sits first
                position = int(positions[index]) + 1
                while position < len(self._sorted_prefixes) and self._sorted_prefixes[position] == wanted[index]:
                    row = self._rows_by_prefix[position : position + 1]
                    if (self._stored_keys(row)[0] == keys[index]).all():
                        found[index] = row[0]
                        break
                    position += 1
        return found

    def _locate(self, sha256s: Sequence[str]) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.bool_]]:
        """Each key's stored row (or -1), its pending row (or -1), and whether it is a valid hash."""
        keys, valid = digests(sha256s)
        stored = self._stored_rows(keys, valid)
        pending = np.full(len(sha256s), -1, dtype=np.int64)
        if self._pending.rows:
            for index in np.flatnonzero(stored < 0).tolist():
                pending[index] = self._pending.rows.get(sha256s[index].lower(), -1)
        return stored, pending, valid

    # -- the public face --------------------------------------------------------------------------

    def contains(self, sha256s: Sequence[str]) -> NDArray[np.bool_]:
        """Whether each image has a vector, for a whole batch at once."""
        stored, pending, _ = self._locate(sha256s)
        result: NDArray[np.bool_] = (stored >= 0) | (pending >= 0)
        return result

    def __contains__(self, sha256: str) -> bool:
        return bool(self.contains([sha256])[0])

    def __len__(self) -> int:
        return len(self._sorted_prefixes) + len(self._pending.rows)

    def append(self, sha256s: Sequence[str], vectors: NDArray[np.float32]) -> None:
        """Add vectors for images not yet cached (a key already present keeps its vector)."""
        if vectors.shape != (len(sha256s), self.dim):
            raise EmbeddingError(f"expected vectors of shape {(len(sha256s), self.dim)}, got {vectors.shape}")
        keys, valid = digests(sha256s)
        if not valid.all():
            bad = sha256s[int(np.flatnonzero(~valid)[0])]
            raise EmbeddingError(f"the embedding cache is keyed by SHA-256 hex digests, not {bad!r}")
        stored, pending, _ = self._locate(sha256s)
        fresh: list[int] = []
        for index in np.flatnonzero((stored < 0) & (pending < 0)).tolist():
            name = sha256s[index].lower()
            if name not in self._pending.rows:  # also the first of a key repeated in this call
                self._pending.rows[name] = len(self._pending.rows)
                fresh.append(index)
        if fresh:
            self._pending.keys.append(keys[fresh])
            self._pending.vectors.append(np.array(vectors[fresh], dtype=np.float32))
        if len(self._pending.rows) >= self.shard_rows:
            self._write_pending(whole_shards_only=True)

    def get(self, sha256s: Sequence[str]) -> NDArray[np.float32]:
        """The vectors of these images, in order; every one must be cached."""
        stored, pending, _ = self._locate(sha256s)
        missing = np.flatnonzero((stored < 0) & (pending < 0))
        if len(missing):
            raise EmbeddingError(f"{len(missing)} image(s) have no cached embedding, e.g. {sha256s[int(missing[0])]}")
        result = np.empty((len(sha256s), self.dim), dtype=np.float32)
        from_shards = np.flatnonzero(stored >= 0)
        for shard, positions, local in self._by_shard(stored[from_shards]):
            order = np.argsort(local)  # read each shard front to back
            result[from_shards[positions[order]]] = self._vectors(shard)[local[order]]
        waiting = np.flatnonzero(stored < 0)
        if len(waiting):
            if len(self._pending.vectors) > 1:  # joined once, not at every read
                self._pending.keys = [np.concatenate(self._pending.keys)]
                self._pending.vectors = [np.concatenate(self._pending.vectors)]
            result[waiting] = self._pending.vectors[0][pending[waiting]]
        return result

    def flush(self) -> None:
        """Write the rows waiting in memory as durable shards."""
        self._write_pending(whole_shards_only=False)

    def _write_pending(self, whole_shards_only: bool) -> None:
        keys, vectors = self._pending.take()
        start = 0
        while len(keys) - start >= (self.shard_rows if whole_shards_only else 1):
            end = min(start + self.shard_rows, len(keys))
            self._add_shard(write_shard(self.directory, keys[start:end], vectors[start:end]), keys[start:end])
            start = end
        if start < len(keys):
            self._pending.keys, self._pending.vectors = [keys[start:]], [vectors[start:]]
            self._pending.rows = {bytes(key).hex(): row for row, key in enumerate(keys[start:])}

    def _add_shard(self, path: Path, keys: NDArray[np.uint8]) -> None:
        first = int(self._starts[-1])
        self._shards.append(_Shard(path, len(keys)))
        self._starts = np.append(self._starts, first + len(keys))
        self._merge(prefixes(keys), np.arange(first, first + len(keys), dtype=np.int64))

    def close(self) -> None:
        self.flush()
        self._maps.clear()

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the format before shards -----------------------------------------------------------------

    def _migrate_legacy(self) -> None:
        """Move a cache of the format before shards into shards, then delete its two files.

        That format appended vectors, then keys, a batch at a time, so a crash could leave
        vectors without keys or a torn last key or row: only rows with both a whole vector and a
        valid key move. A crash during the move leaves the old files, and the next open moves
        them again (rows already in shards are skipped)."""
        keys_path, vectors_path = self.directory / LEGACY_KEYS, self.directory / LEGACY_VECTORS
        if not keys_path.exists() and not vectors_path.exists():
            return
        stored = vectors_path.stat().st_size // (4 * self.dim) if vectors_path.exists() else 0
        moved = dropped = 0
        if stored and keys_path.exists():
            matrix = np.memmap(vectors_path, dtype=np.float32, mode="r", shape=(stored, self.dim))
            row = 0
            batch: list[str] = []
            with keys_path.open(encoding="ascii", errors="replace") as lines:
                for line in lines:
                    if row + len(batch) >= stored:
                        dropped += 1  # a key whose vector was never written
                        continue
                    batch.append(line.strip())
                    if len(batch) == self.shard_rows:
                        moved += self._append_legacy(batch, matrix[row : row + len(batch)])
                        row, batch = row + len(batch), []
            moved += self._append_legacy(batch, matrix[row : row + len(batch)])
            row += len(batch)
            dropped += stored - row + (row - moved)  # vectors without keys, and bad keys
            del matrix
        self.flush()
        if dropped:
            log.warning(
                "%s: moved %d embedding(s) into shards and dropped %d torn row(s)", self.directory, moved, dropped
            )
        keys_path.unlink(missing_ok=True)
        vectors_path.unlink(missing_ok=True)
        _fsync_directory(self.directory)

    def _append_legacy(self, keys: list[str], vectors: NDArray[np.float32]) -> int:
        """Append the rows with a valid key; returns how many had one."""
        _, valid = digests(keys)
        good = np.flatnonzero(valid)
        self.append([keys[index] for index in good], np.asarray(vectors[good], dtype=np.float32))
        return len(good)
