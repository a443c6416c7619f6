"""Tests of ``retrieval.index``: one contract run against every index kind, then the rest."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from embedding.errors import InputError, MismatchError
from embedding.store import write_store
from retrieval import index as index_module
from retrieval.index import (
    IVF_KINDS,
    METRIC,
    SongIndex,
    build_index,
    build_index_from_store,
    default_params,
    read_meta,
)

N_SONGS, DIM, N_CLUSTERS, N_QUERIES, K = 3000, 32, 30, 60, 10
# parameters that suit the small fixture (the defaults are sized for hundreds of thousands)
KIND_PARAMS: dict[str, dict[str, int]] = {
    "flat": {},
    "hnsw": {"hnsw_m": 16, "ef_construction": 64, "ef_search": 64},
    "ivf": {"nlist": 32, "nprobe": 8},
    "ivf_sq8": {"nlist": 32, "nprobe": 8},
}
KINDS = list(KIND_PARAMS)
# scores of 8-bit codes are cosines up to the quantisation step; the others are exact
SCORE_ATOL = {"flat": 1e-5, "hnsw": 1e-5, "ivf": 1e-5, "ivf_sq8": 2e-2}


def clustered(rng: np.random.Generator, n: int, *, centres: np.ndarray) -> np.ndarray:
    """``n`` vectors around random ``centres``, spread so clusters overlap a little."""
    labels = rng.integers(len(centres), size=n)
    return (centres[labels] + 0.35 * rng.standard_normal((n, centres.shape[1]))).astype(np.float32)


@pytest.fixture
def data(rng: np.random.Generator) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Clustered songs, their ids and queries drawn the same way (not indexed)."""
    centres = rng.standard_normal((N_CLUSTERS, DIM))
    songs = clustered(rng, N_SONGS, centres=centres)
    queries = clustered(rng, N_QUERIES, centres=centres)
    return songs, [f"song{i}" for i in range(N_SONGS)], queries


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each row of ``truth`` that the same row of ``found`` holds."""
    hits = [len(np.intersect1d(f, t)) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits)) / truth.shape[1]


@pytest.mark.parametrize("kind", KINDS)
class TestIndexContract:
    """Known answers every kind must give."""

    def build(self, kind: str, songs: np.ndarray, ids: list[str]) -> SongIndex:
        return build_index(songs, ids, kind=kind, params=KIND_PARAMS[kind], show_progress=False)

    def test_stored_vector_is_its_own_nearest(self, kind, data):
        songs, ids, _ = data
        index = self.build(kind, songs, ids)
        probe = np.arange(0, N_SONGS, 97)
        scores, rows = index.search(songs[probe], K)
        assert index.kind == kind
        assert (rows[:, 0] == probe).mean() >= 0.95
        hit = rows[:, 0] == probe
        np.testing.assert_allclose(scores[hit, 0], 1.0, atol=SCORE_ATOL[kind])

    def test_planted_neighbours_come_first(self, kind, data, rng):
        songs, ids, queries = data
        # five near copies of query 0 planted among the songs
        planted = np.arange(100, 105)
        songs = songs.copy()
        songs[planted] = queries[0] + 0.01 * rng.standard_normal((5, DIM))
        index = self.build(kind, songs, ids)
        _, rows = index.search(queries[0], K)
        assert set(rows[0, :5]) == set(planted)
        assert index.ids_of(rows[:, :1])[0][0] in {ids[p] for p in planted}

    def test_scores_are_cosines_sorted_descending(self, kind, data):
        songs, ids, queries = data
        index = self.build(kind, songs, ids)
        scores, rows = index.search(queries, K)
        assert rows.shape == scores.shape == (N_QUERIES, K)
        assert (rows >= 0).all()
        assert (np.diff(scores, axis=1) <= 1e-6).all()
        expected = np.einsum("qd,qkd->qk", unit(queries), unit(songs[rows]))
        np.testing.assert_allclose(scores, expected, atol=SCORE_ATOL[kind])

    def test_query_scale_does_not_matter(self, kind, data):
        songs, ids, queries = data
        index = self.build(kind, songs, ids)
        scores, rows = index.search(queries, K)
        scaled_scores, scaled_rows = index.search(queries * 37.5, K)
        np.testing.assert_array_equal(scaled_rows, rows)
        np.testing.assert_allclose(scaled_scores, scores, atol=1e-6)

    def test_excluded_songs_never_come_back(self, kind, data):
        songs, ids, queries = data
        index = self.build(kind, songs, ids)
        _, first = index.search(queries, K)

        # exclude each query's own top 5 plus a few random rows, as lists and as a sparse matrix
        exclude = [set(first[q, :5].tolist()) | {q, q + 1} for q in range(N_QUERIES)]
        q_of = np.repeat(np.arange(N_QUERIES), [len(e) for e in exclude])
        r_of = np.concatenate([sorted(e) for e in exclude])
        matrix = sp.csr_matrix((np.ones(len(r_of)), (q_of, r_of)), shape=(N_QUERIES, N_SONGS))
        for form in (exclude, matrix):
            _, rows = index.search(queries, K, exclude=form)
            for q in range(N_QUERIES):
                assert not set(rows[q].tolist()) & exclude[q]
            if kind == "flat":
                assert (rows >= 0).all()
            # the best unexcluded songs of before are still there
            assert (rows[:, 0] == first[:, 5]).mean() >= 0.9

    def test_save_load_round_trip(self, kind, data, tmp_path):
        songs, ids, queries = data
        index = self.build(kind, songs, ids)
        index.save(tmp_path / "idx")
        loaded = SongIndex.load(tmp_path / "idx", expect_dim=DIM)
        assert (loaded.kind, loaded.params, loaded.ids) == (index.kind, index.params, index.ids)
        for a, b in zip(index.search(queries, K), loaded.search(queries, K), strict=True):
            np.testing.assert_array_equal(a, b)

    def test_load_refuses_other_dim_or_store(self, kind, data, tmp_path):
        songs, ids, _ = data
        store = write_store(tmp_path / "store", ids, songs, {"encoder": "test"})
        other = write_store(tmp_path / "other", ids, songs[::-1].copy(), {"encoder": "test"})
        build_index_from_store(
            store, kind=kind, params=KIND_PARAMS[kind], show_progress=False
        ).save(tmp_path / "idx")
        with pytest.raises(MismatchError, match=rf"dim={DIM} but .* dim={DIM + 1}.*build-index"):
            SongIndex.load(tmp_path / "idx", expect_dim=DIM + 1)
        with pytest.raises(
            MismatchError,
            match=rf"fingerprint='{store.fingerprint}'.*fingerprint='{other.fingerprint}'.*"
            rf"build-index {re.escape(str(other.path))} --out",
        ):
            SongIndex.load(tmp_path / "idx", store=other)
        assert SongIndex.load(tmp_path / "idx", store=store).n == N_SONGS


@pytest.mark.parametrize("kind", ["hnsw", "ivf", "ivf_sq8"])
def test_approximate_recall_against_exact(kind, data):
    songs, ids, queries = data
    exact = build_index(songs, ids, kind="flat", show_progress=False)
    approx = build_index(songs, ids, kind=kind, params=KIND_PARAMS[kind], show_progress=False)
    _, truth = exact.search(queries, K)
    _, found = approx.search(queries, K)
    assert recall(found, truth) >= 0.9


def test_more_exploration_does_not_lower_ivf_recall(data):
    songs, ids, queries = data
    _, truth = build_index(songs, ids, kind="flat", show_progress=False).search(queries, K)
    index = build_index(songs, ids, kind="ivf", params={"nlist": 32}, show_progress=False)
    recalls = []
    for nprobe in (1, 4, 32):
        index.set_search_params(nprobe=nprobe)
        _, found = index.search(queries, K)
        recalls.append(recall(found, truth))
    assert recalls[0] <= recalls[1] <= recalls[2]
    assert recalls[2] == pytest.approx(1.0)


def test_flat_exclusion_fills_k_even_when_most_songs_are_excluded(rng):
    songs = rng.standard_normal((50, 8)).astype(np.float32)
    index = build_index(songs, [str(i) for i in range(50)], kind="flat", show_progress=False)
    exclude = [set(range(45))]
    scores, rows = index.search(songs[:1], 10, exclude=exclude)
    assert sorted(rows[0, :5].tolist()) == list(range(45, 50))
    assert (rows[0, 5:] == -1).all() and np.isneginf(scores[0, 5:]).all()


def test_auto_kind_follows_size(rng, monkeypatch):
    songs = rng.standard_normal((400, 8)).astype(np.float32)
    ids = [str(i) for i in range(400)]
    assert build_index(songs, ids, show_progress=False).kind == "flat"
    monkeypatch.setattr(index_module, "AUTO_FLAT_MAX", 100)
    params = {"nlist": 8} if index_module.AUTO_APPROX_KIND in IVF_KINDS else {"hnsw_m": 8}
    auto = build_index(songs, ids, params=params, show_progress=False)
    assert auto.kind == index_module.AUTO_APPROX_KIND


def test_default_params_scale_with_size():
    small, large = default_params("ivf", 10_000), default_params("ivf", 420_000)
    assert small["nlist"] < large["nlist"] <= 420_000 // 39
    assert large["nprobe"] <= large["nlist"]
    assert default_params("flat", 10) == {}
    with pytest.raises(InputError, match="kind='annoy'"):
        default_params("annoy", 10)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"kind": "annoy"},
            r"kind must be one of auto, flat, hnsw, ivf, ivf_sq8; got kind='annoy'",
        ),
        ({"kind": "flat", "params": {"nlist": 4}}, r"nlist=4 does not apply to kind='flat'"),
        ({"kind": "ivf", "params": {"nlist": 500}}, r"nlist=500 exceeds .* n=100"),
        ({"kind": "hnsw", "params": {"hnsw_m": 0}}, r"hnsw_m must be >= 1; got hnsw_m=0"),
    ],
)
def test_build_refuses_bad_arguments(rng, kwargs, message):
    songs = rng.standard_normal((100, 8)).astype(np.float32)
    with pytest.raises(InputError, match=message):
        build_index(songs, [str(i) for i in range(100)], show_progress=False, **kwargs)


def test_build_refuses_bad_vectors(rng):
    songs = rng.standard_normal((10, 4)).astype(np.float32)
    with pytest.raises(InputError, match="ids must be unique; got 1 repeated"):
        build_index(songs, [str(i) for i in range(9)] + ["0"], show_progress=False)
    with pytest.raises(InputError, match=r"ids must have one entry per vector; got len\(ids\)=3"):
        build_index(songs, ["a", "b", "c"], show_progress=False)
    songs[7, 2] = np.nan
    with pytest.raises(InputError, match="row 7 holds NaN"):
        build_index(songs, [str(i) for i in range(10)], show_progress=False)


def test_search_refuses_bad_queries(rng):
    songs = rng.standard_normal((20, 4)).astype(np.float32)
    index = build_index(songs, [str(i) for i in range(20)], kind="flat", show_progress=False)
    with pytest.raises(InputError, match=r"shape \(n_queries, 4\).*shape=\(2, 5\)"):
        index.search(np.zeros((2, 5), dtype=np.float32), 3)
    with pytest.raises(InputError, match="k must be >= 1; got k=0"):
        index.search(songs[:2], 0)
    with pytest.raises(InputError, match=r"one entry per query; got len\(exclude\)=1"):
        index.search(songs[:2], 3, exclude=[{1}])


def test_store_index_records_its_source(rng, tmp_path):
    songs = rng.standard_normal((40, 6)).astype(np.float32)
    ids = [f"id/{i}+=" for i in range(40)]
    store = write_store(tmp_path / "store", ids, songs, {"encoder": "musicnn"})
    built = build_index_from_store(store, kind="flat", show_progress=False)
    built.save(tmp_path / "idx")

    # metadata and id map on disk
    meta = read_meta(tmp_path / "idx")
    assert meta["store_fingerprint"] == store.fingerprint
    assert meta["store_path"] == str((tmp_path / "store").resolve())
    assert Path(meta["store_path"]).is_absolute()
    assert (meta["dim"], meta["n_songs"], meta["kind"], meta["metric"]) == (6, 40, "flat", METRIC)
    assert meta["encoder"] == "musicnn" and meta["params"] == {}
    assert json.loads((tmp_path / "idx" / meta["ids_file"]).read_text()) == ids

    # the store found again from the index, row for row
    loaded = SongIndex.load(tmp_path / "idx")
    reopened = loaded.open_store()
    _, rows = loaded.search(reopened.vectors[[3, 17]], 1)
    assert loaded.ids_of(rows) == [[ids[3]], [ids[17]]]
    np.testing.assert_array_equal(reopened.vectors[rows[:, 0]], songs[[3, 17]])


def test_open_store_refuses_a_rewritten_store(rng, tmp_path):
    songs = rng.standard_normal((30, 4)).astype(np.float32)
    ids = [str(i) for i in range(30)]
    store = write_store(tmp_path / "store", ids, songs, {"encoder": "test"})
    build_index_from_store(store, kind="flat", show_progress=False).save(tmp_path / "idx")
    write_store(tmp_path / "store", ids, songs + 1.0, {"encoder": "test"})
    with pytest.raises(MismatchError, match=r"now has fingerprint=.*rebuild the index"):
        SongIndex.load(tmp_path / "idx").open_store()


def test_open_store_needs_a_recorded_path(rng):
    songs = rng.standard_normal((5, 4)).astype(np.float32)
    index = build_index(songs, list("abcde"), kind="flat", show_progress=False)
    with pytest.raises(InputError, match="store_path=None"):
        index.open_store()


def test_load_refuses_missing_or_inconsistent_files(rng, tmp_path):
    with pytest.raises(InputError, match=r"does not exist; build it with `build-index STORE"):
        SongIndex.load(tmp_path / "nowhere")
    songs = rng.standard_normal((12, 4)).astype(np.float32)
    build_index(songs, [str(i) for i in range(12)], show_progress=False).save(tmp_path / "idx")

    # one id too few in the id map
    (tmp_path / "idx" / "ids.json").write_text(json.dumps([str(i) for i in range(11)]))
    with pytest.raises(MismatchError, match=r"inconsistent: index.faiss has n_songs=12"):
        SongIndex.load(tmp_path / "idx")

    # no index file at all
    (tmp_path / "idx" / "index.faiss").unlink()
    with pytest.raises(InputError, match="lacks index.faiss"):
        SongIndex.load(tmp_path / "idx")
