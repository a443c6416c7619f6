"""Tests of the ``build-index`` command: end to end on a small store, and its failures."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embedding.store import write_store
from retrieval.cli import main
from retrieval.index import METRIC, SongIndex, read_meta

N_SONGS, DIM = 300, 16


@pytest.fixture
def store(rng, tmp_path):
    """A small store of clustered songs written like ``embed-audio`` would."""
    centres = rng.standard_normal((10, DIM))
    vectors = centres[rng.integers(10, size=N_SONGS)] + 0.3 * rng.standard_normal((N_SONGS, DIM))
    ids = [f"song-{i:03d}" for i in range(N_SONGS)]
    return write_store(tmp_path / "store", ids, vectors, {"encoder": "musicnn", "layer": 3})


@pytest.mark.parametrize(
    ("flags", "kind", "params"),
    [
        ([], "flat", {}),
        (["--kind", "ivf", "--nlist", "4", "--nprobe", "2"], "ivf", {"nlist": 4, "nprobe": 2}),
        (["--kind", "hnsw", "--hnsw-m", "8", "--ef-search", "40"], "hnsw", {"hnsw_m": 8}),
    ],
)
def test_build_index_end_to_end(store, tmp_path, capsys, flags, kind, params):
    out = tmp_path / "idx"
    status = main([str(store.path), "--out", str(out), "--threads", "1", *flags])
    captured = capsys.readouterr()
    assert status == 0, captured.err

    # the summary names the songs, the kind and the folder
    assert f"indexed {N_SONGS} songs (dim {DIM}, encoder musicnn)" in captured.out
    assert f"{kind} index" in captured.out and str(out) in captured.out

    # metadata: where the vectors came from and how the index was made
    meta = read_meta(out)
    assert meta["store_fingerprint"] == store.fingerprint
    assert meta["store_path"] == str(store.path.resolve())
    assert (meta["n_songs"], meta["dim"], meta["kind"]) == (N_SONGS, DIM, kind)
    assert meta["metric"] == METRIC == "cosine: L2-normalised inner product"
    assert meta["encoder"] == "musicnn"
    assert params.items() <= meta["params"].items()
    assert json.loads((out / "ids.json").read_text()) == store.ids

    # the saved index answers queries for the store it was built from
    index = SongIndex.load(out, store=store)
    _, rows = index.search(store.vectors[:20], 5)
    assert (rows[:, 0] == np.arange(20)).mean() >= 0.9


def test_missing_store_is_one_clear_line(tmp_path, capsys):
    status = main([str(tmp_path / "absent"), "--out", str(tmp_path / "idx")])
    err = capsys.readouterr().err.strip()
    assert status == 1
    assert err.startswith("build-index: error: store=")
    assert "does not exist" in err and "embed-audio" in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "idx").exists()


def test_parameter_that_cannot_work_exits_1(store, tmp_path, capsys):
    status = main(
        [str(store.path), "--out", str(tmp_path / "idx"), "--kind", "ivf", "--nlist", "9999"]
    )
    err = capsys.readouterr().err
    assert status == 1
    assert "nlist=9999 exceeds the number of songs n=300" in err


def test_parameter_of_another_kind_exits_1(store, tmp_path, capsys):
    status = main(
        [str(store.path), "--out", str(tmp_path / "idx"), "--kind", "flat", "--nprobe", "4"]
    )
    assert status == 1
    assert "nprobe=4 does not apply to kind='flat'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--kind", "annoy"], "invalid choice: 'annoy'"),
        (["--nlist", "0"], "0 is not a positive integer"),
        (["--ef-search", "many"], "'many' is not an integer"),
        (["--threads", "-2"], "-2 is not a positive integer"),
    ],
)
def test_usage_errors_exit_2(store, tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        main([str(store.path), "--out", str(tmp_path / "idx"), *flags])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_out_is_required(store, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(store.path)])
    assert exit_info.value.code == 2
    assert "--out" in capsys.readouterr().err


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "(default: auto)" in capsys.readouterr().out
