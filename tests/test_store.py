"""Tests of the embedding store: round trip, fingerprint, parts, resume, crash leftovers, errors."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from embedding import EmbeddingStore, load_store, write_store
from embedding.errors import InputError, MismatchError
from embedding.store import Failure, StoreWriter, read_failures, store_config

KKBOX_IDS = [
    "BBzumQNXUHKdEBOB7mAJuzok+IJA1c2Ryg/yzTF6tik=",
    "bhp/MpSNoqoxOIB+/l8WPqu6jldth4DIpCm3ayXnJqM=",
    "x",
]
CONFIG = {"encoder": "toy", "sample_rate": 16000, "dim": 3, "layer": 7, "tag_names": ["a", "b"]}


def toy_store(tmp_path, rng) -> EmbeddingStore:
    vectors = rng.standard_normal((3, 3)).astype(np.float32)
    tags = rng.uniform(size=(3, 2)).astype(np.float32)
    return write_store(
        tmp_path / "s",
        KKBOX_IDS,
        vectors,
        {"encoder": "toy", "layer": 7},
        tags=tags,
        tag_names=["a", "b"],
    )


def test_round_trip_with_kkbox_ids(tmp_path, rng):
    vectors = rng.standard_normal((3, 3)).astype(np.float32)
    tags = rng.uniform(size=(3, 2)).astype(np.float32)
    written = write_store(
        tmp_path / "s", KKBOX_IDS, vectors, {"encoder": "toy"}, tags=tags, tag_names=["a", "b"]
    )
    store = load_store(tmp_path / "s")

    assert store.ids == KKBOX_IDS and len(store) == 3 and store.dim == 3
    assert isinstance(store.vectors, np.memmap) and store.vectors.dtype == np.float32
    np.testing.assert_array_equal(store.vectors, vectors)
    np.testing.assert_array_equal(store.tags, tags)
    assert store.tag_names == ["a", "b"]
    assert store.row_of(KKBOX_IDS[1]) == 1 and store.index[KKBOX_IDS[2]] == 2
    assert KKBOX_IDS[0] in store and "nope" not in store
    with pytest.raises(KeyError, match="nope"):
        store.row_of("nope")
    assert store.meta["status"] == "complete" and store.meta["count"] == 3
    assert store.meta["package_version"] and store.meta["created"]
    assert store.fingerprint == written.fingerprint
    # no file is named after an id
    assert all("+" not in p.name and "=" not in p.name for p in (tmp_path / "s").iterdir())


def test_fingerprint_tracks_content(tmp_path, rng):
    vectors = rng.standard_normal((4, 5)).astype(np.float32)
    ids = ["a", "b", "c", "d"]
    base = write_store(tmp_path / "1", ids, vectors, {"encoder": "toy"}).fingerprint
    assert len(base) == 16 and int(base, 16) >= 0
    assert write_store(tmp_path / "2", ids, vectors, {"encoder": "toy"}).fingerprint == base
    changed = vectors.copy()
    changed[3, 4] += 1e-3
    assert write_store(tmp_path / "3", ids, changed, {"encoder": "toy"}).fingerprint != base
    assert write_store(tmp_path / "4", ids[::-1], vectors, {"encoder": "toy"}).fingerprint != base
    assert write_store(tmp_path / "5", ids, vectors, {"encoder": "other"}).fingerprint != base
    # the cached value equals a fresh computation
    store = load_store(tmp_path / "1")
    store.meta.pop("fingerprint")
    assert store.fingerprint == base


@pytest.mark.parametrize(
    ("ids", "shape", "tags", "message"),
    [
        (["a", "b"], (3, 2), None, r"vectors.shape=\(3, 2\)"),
        (["a", "a", "b"], (3, 2), None, r"unique; repeated: \['a'\]"),
        (["a", "b", "c"], (3, 2), (2, 2), r"tags.shape=\(2, 2\)"),
    ],
)
def test_write_store_rejects_bad_input(tmp_path, ids, shape, tags, message):
    tag_args = {} if tags is None else {"tags": np.zeros(tags), "tag_names": ["p", "q"]}
    with pytest.raises(InputError, match=message):
        write_store(tmp_path / "s", ids, np.zeros(shape), {}, **tag_args)


def test_write_store_rejects_nan_and_foreign_folders(tmp_path):
    with pytest.raises(InputError, match="NaN"):
        write_store(tmp_path / "s", ["a"], np.array([[np.nan]]), {})
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("x")
    with pytest.raises(InputError, match="neither empty nor an embedding store"):
        write_store(tmp_path / "mine", ["a"], np.ones((1, 1)), {})
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["thesis.tex"]


def test_load_store_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_store(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="meta.json is missing"):
        load_store(tmp_path / "empty")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "meta.json").write_text('{"format": "something-else"}')
    with pytest.raises(InputError, match="not an embedding store"):
        load_store(tmp_path / "other")


def test_parts_resume_and_finalise(tmp_path, rng):
    path = tmp_path / "s"
    first = rng.standard_normal((2, 3)).astype(np.float32)
    second = rng.standard_normal((1, 3)).astype(np.float32)
    tags = np.zeros((2, 2), np.float32)

    # a run that stops after one part
    with StoreWriter.open(path, CONFIG) as writer:
        writer.add_part(["a/b", "c+d"], first, tags, [Failure("x.mp3", "bad=", "empty file")])
    with pytest.raises(InputError, match="incomplete.*rerun embed-audio"):
        load_store(path)
    partial = load_store(path, allow_partial=True)
    assert partial.ids == ["a/b", "c+d"]
    np.testing.assert_array_equal(partial.vectors, first)

    # the next run sees what is done and what failed, then finishes
    with StoreWriter.open(path, CONFIG) as writer:
        assert writer.done_ids == {"a/b", "c+d"} and set(writer.failed) == {"bad="}
        assert not writer.complete and writer.n_pending_parts == 1
        writer.add_part(["bad="], second, tags[:1])
        store = writer.finalise()
    assert store.ids == ["a/b", "c+d", "bad="]
    np.testing.assert_array_equal(store.vectors, np.concatenate([first, second]))
    assert read_failures(path) == []  # the failed song was embedded on retry
    assert not (path / "parts").exists()

    # adding to a finished store keeps the old rows and drops the old generation
    with StoreWriter.open(path, CONFIG) as writer:
        writer.add_part(
            [], np.zeros((0, 3)), np.zeros((0, 2)), [Failure("y.ogg", "y", "too short")]
        )
        store = writer.finalise()
    assert len(store) == 3 and store.meta["n_failed"] == 1
    assert read_failures(path) == [Failure("y.ogg", "y", "too short")]
    assert sorted(p.name for p in path.glob("vectors-*.npy")) == ["vectors-0002.npy"]


def test_failures_csv_quotes_awkward_text(tmp_path):
    path = tmp_path / "s"
    odd = Failure('dir, "quoted"/song.mp3', "id,with=comma", 'reason with "quotes",\nand a newline')
    with StoreWriter.open(path, CONFIG) as writer:
        writer.add_part([], np.zeros((0, 3)), np.zeros((0, 2)), [odd])
        writer.finalise()
    assert read_failures(path) == [odd]
    assert (path / "failures.csv").read_text().splitlines()[0] == "path,song_id,reason"


def test_different_config_is_refused_naming_the_keys(tmp_path, rng):
    toy_store(tmp_path, rng)
    wanted = {**store_config(load_store(tmp_path / "s").meta), "layer": 9, "dtype": "bfloat16"}
    with pytest.raises(
        MismatchError, match=r"differing keys: dtype, layer;.*another --out.*delete"
    ):
        StoreWriter.open(tmp_path / "s", wanted)
    same = store_config(load_store(tmp_path / "s").meta)
    with StoreWriter.open(tmp_path / "s", same) as writer:
        assert writer.done_ids == set(KKBOX_IDS)


def test_a_second_writer_is_locked_out(tmp_path):
    with StoreWriter.open(tmp_path / "s", CONFIG):
        with pytest.raises(InputError, match=f"another process \\(pid={os.getpid()}\\)"):
            StoreWriter.open(tmp_path / "s", CONFIG)
    StoreWriter.open(tmp_path / "s", CONFIG).close()


def test_crash_leftovers_are_ignored_and_tidied(tmp_path, rng):
    # a finished store, then the debris of a consolidation killed before its commit
    store = toy_store(tmp_path, rng)
    path = store.path
    np.save(path / "vectors-0007.npy", np.ones((5, 3), np.float32))
    (path / "ids-0007.json").write_text(json.dumps(list("abcde")))
    (path / ".meta.json.123.tmp").write_text("{half")
    (path / "parts").mkdir()
    (path / "parts" / ".part-000001.npz.123.tmp").write_bytes(b"\0" * 10)

    # readers see the committed generation only
    again = load_store(path)
    assert again.ids == KKBOX_IDS and again.fingerprint == store.fingerprint

    # the next writer removes the debris and extends the committed rows
    with StoreWriter.open(path, store_config(store.meta)) as writer:
        assert writer.done_ids == set(KKBOX_IDS) and writer.n_pending_parts == 0
        writer.add_part(["new"], np.ones((1, 3)), np.zeros((1, 2)))
        grown = writer.finalise()
    assert grown.ids == [*KKBOX_IDS, "new"]
    names = {p.name for p in path.iterdir()}
    assert not any(n.endswith(".tmp") for n in names) and "vectors-0007.npy" not in names


def test_damaged_store_is_reported(tmp_path, rng):
    store = toy_store(tmp_path, rng)
    ids_file = store.path / store.meta["files"]["ids"]
    ids_file.write_text(json.dumps(KKBOX_IDS[:2]))
    with pytest.raises(InputError, match="damaged.*count=3, ids=2"):
        load_store(store.path)
