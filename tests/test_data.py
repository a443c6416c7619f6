"""Tests of ranking.data: the real KKBox sample's quirks, and errors on malformed small files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from embedding.errors import EncoreWarning, InputError
from ranking.data import (
    REQUIRED_FILES,
    SCHEMAS,
    KKBoxData,
    clean_age,
    data_fingerprint,
    load_kkbox,
)

# a tiny, valid KKBox folder; tests break one file at a time
USERS = ["uA=", "uB=", "uC="]
SONGS = ["s1=", "s2=", "s3="]
TINY = {
    "train.csv": (
        "msno,song_id,source_system_tab,source_screen_name,source_type,target\n"
        "uA=,s1=,my library,Local playlist more,local-library,1\n"
        "uB=,s9=,null,,radio,0\n"
        "uA=,s2=,,Radio,radio,1\n"
    ),
    "test.csv": (
        "id,msno,song_id,source_system_tab,source_screen_name,source_type\n"
        "0,uC=,s1=,discover,,song\n"
        "1,uA=,s8=,search,Search,song\n"
    ),
    "songs.csv": (
        "song_id,song_length,genre_ids,artist_name,composer,lyricist,language\n"
        "s1=,247640,465,Emeli\u00a0Sande,,,52\n"
        's2=,197328,465|958,Emeli Sande,"Evan ""Kidd"" Bogart",,-1\n'
        "s3=,1000,,X,,,\n"
    ),
    "members.csv": (
        "msno,city,bd,gender,registered_via,registration_init_time,expiration_date\n"
        "uA=,1,0,,7,20110820,20170920\n"
        "uB=,13,27,female,9,20150628,19700101\n"
        "uC=,5,1051,male,4,20160101,20171001\n"
    ),
    "song_extra_info.csv": (
        "song_id,name,isrc\ns1=,\"Love mode feat.PE'Z,\ns2=,Shake,USWD11263821\ns3=,怒,HKC339700217\n"
    ),
}


def write_folder(folder: Path, **replace: str) -> Path:
    """Write the tiny folder, with some files' text replaced (an empty text omits the file)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (TINY | {k.replace("_csv", ".csv"): v for k, v in replace.items()}).items():
        if text:
            (folder / name).write_text(text, encoding="utf-8")
    return folder


def replace_line(name: str, line: int, text: str) -> str:
    """TINY[name] with line ``line`` (0 = header) replaced by ``text``."""
    lines = TINY[name].splitlines()
    lines[line] = text
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def sample(shared_dir: Path) -> KKBoxData:
    return load_kkbox(shared_dir / "kkbox-sample", show_progress=False)


# the real sample


@pytest.mark.shared
def test_sample_row_counts_are_exact(sample: KKBoxData) -> None:
    # physical lines minus the header: no row lost to the unterminated quote
    assert len(sample.train) == 19_999
    assert sample.test is not None and len(sample.test) == 4_999
    assert len(sample.songs) == 39_999
    assert len(sample.members) == 34_403
    assert len(sample.extra) == 40_147


@pytest.mark.shared
def test_sample_unterminated_quote_swallows_nothing(sample: KKBoxData) -> None:
    # line 24,470 opens a quote it never closes; the next record must stay its own row
    row = sample.extra.iloc[24_468]
    assert row["song_id"] == "apf0rlYNIeHBATR4jliH3PqUngC9d/uH3Um1oCyCUDk="
    assert row["name"] == "Love mode feat.PE'Z & VERBAL(m-flo)"
    assert pd.isna(row["isrc"])
    assert sample.extra.iloc[24_469]["song_id"] == "6SUkQwNH2Un0z2yE4E9AsPUh9dDebYjI/gyIoijpVAk="

    # properly quoted fields lose their quotes and keep their escaped ones
    names = set(sample.extra["name"].cat.categories)
    assert 'Shake Santa Shake (from "Shake It Up")' in names
    composers = set(sample.songs["composer"].cat.categories)
    assert 'Aliaune "Akon" Thiam| Giorgio Tuinfort| C. Kelly' in composers
    assert not any(c.startswith('"') for c in composers)


@pytest.mark.shared
def test_sample_dtypes_are_frugal(sample: KKBoxData) -> None:
    # every column in its schema dtype
    frames = {
        "train.csv": sample.train,
        "test.csv": sample.test,
        "songs.csv": sample.songs,
        "members.csv": sample.members,
        "song_extra_info.csv": sample.extra,
    }
    for name, frame in frames.items():
        assert frame is not None
        assert list(frame.columns) == list(SCHEMAS[name])
        for column, dtype in SCHEMAS[name].items():
            assert str(frame[column].dtype) == dtype, (name, column, frame[column].dtype)

    # small codes, and the whole sample well under its raw 13 MB of text times three
    assert sample.train["song_id"].cat.codes.dtype.itemsize <= 4
    assert sample.train["source_type"].cat.codes.dtype.itemsize == 1
    assert sample.memory_bytes() < 40 * 2**20


@pytest.mark.shared
def test_sample_context_quirks(sample: KKBoxData) -> None:
    # the literal "null" is a category, an empty field is NaN
    tab = sample.train["source_system_tab"]
    assert (tab == "null").sum() == 17
    assert tab.isna().sum() == 50
    assert "null" in set(sample.train["source_system_tab"].cat.categories)
    assert set(sample.train["target"].unique()) == {0, 1}
    assert sample.train["target"].sum() == 15_243


@pytest.mark.shared
def test_sample_member_quirks(sample: KKBoxData) -> None:
    # raw ages kept: 0 for unknown, negative and four-digit values present
    bd = sample.members["bd"]
    assert (bd == 0).sum() == 19_932
    assert (bd < 0).sum() == 2
    assert (bd > 100).sum() == 22
    assert bd.max() == 1051

    # empty gender is NaN; the 1970 placeholder is NaT and nothing else is
    assert sample.members["gender"].isna().sum() == 19_902
    assert set(sample.members["gender"].cat.categories) == {"female", "male"}
    expiration = sample.members["expiration_date"]
    assert expiration.isna().sum() == 1
    assert expiration.min() == pd.Timestamp("2004-10-15")
    assert sample.members["registration_init_time"].min() == pd.Timestamp("2004-03-26")


@pytest.mark.shared
def test_sample_song_quirks(sample: KKBoxData) -> None:
    # multi-genre strings kept whole; language -1 is a code, not missing
    genres = set(sample.songs["genre_ids"].cat.categories)
    assert "1011|2189|367" in genres
    assert (sample.songs["language"] == -1).sum() > 0

    # U+00A0 became a plain space everywhere in song text
    for frame, column in [
        (sample.songs, "artist_name"),
        (sample.songs, "composer"),
        (sample.songs, "lyricist"),
        (sample.extra, "name"),
    ]:
        assert not frame[column].cat.categories.str.contains("\u00a0").any(), column
    assert "Emeli Sande" in set(sample.songs["artist_name"].cat.categories)


@pytest.mark.shared
def test_sample_codes_align_across_frames(sample: KKBoxData) -> None:
    assert sample.test is not None

    # one category object per id kind, in every frame
    users = sample.members["msno"].cat.categories
    songs = sample.songs["song_id"].cat.categories
    assert sample.train["msno"].cat.categories is users
    assert sample.test["msno"].cat.categories is users
    for frame in (sample.train, sample.test, sample.extra):
        assert frame["song_id"].cat.categories is songs

    # codes map back to the ids read, and catalogue rows come first in file order
    train_songs = sample.train["song_id"]
    assert (songs[train_songs.cat.codes] == train_songs.astype(str)).all()
    assert (sample.songs["song_id"].cat.codes.to_numpy() == np.arange(len(sample.songs))).all()
    assert (sample.members["msno"].cat.codes.to_numpy() == np.arange(len(sample.members))).all()

    # a song in train and test has one code; train songs without metadata still have codes
    common = set(sample.train["song_id"].astype(str)) & set(sample.test["song_id"].astype(str))
    song = sorted(common)[0]
    train_code = sample.train.loc[sample.train["song_id"] == song, "song_id"].cat.codes.iloc[0]
    test_code = sample.test.loc[sample.test["song_id"] == song, "song_id"].cat.codes.iloc[0]
    assert train_code == test_code == songs.get_loc(song)
    in_catalogue = sample.train["song_id"].cat.codes < len(sample.songs)
    assert in_catalogue.sum() == 2_845
    assert sample.train.loc[~in_catalogue, "song_id"].nunique() == 9_813 - 1_334


@pytest.mark.shared
def test_sample_fingerprint_is_stable(shared_dir: Path) -> None:
    folder = shared_dir / "kkbox-sample"
    assert data_fingerprint(folder) == data_fingerprint(str(folder))
    assert len(data_fingerprint(folder)) == 64


# small files


def test_tiny_folder_loads_with_raw_values(tmp_path: Path) -> None:
    data = load_kkbox(write_folder(tmp_path), show_progress=False)
    assert data.test is not None

    # users and songs in first-seen order: catalogue, then train, then test
    assert list(data.user_ids) == USERS
    assert list(data.song_ids) == [*SONGS, "s9=", "s8="]
    assert data.train["song_id"].cat.codes.tolist() == [0, 3, 1]
    assert data.test["song_id"].cat.codes.tolist() == [0, 4]

    # quoting and spaces in song text, missing values
    assert data.extra["name"].tolist()[0] == "Love mode feat.PE'Z"
    assert data.songs["composer"].tolist()[1] == 'Evan "Kidd" Bogart'
    assert data.songs["artist_name"].nunique() == 2
    assert data.songs["genre_ids"].astype(str).tolist()[:2] == ["465", "465|958"]
    assert np.isnan(data.songs["language"].iloc[2])
    assert data.test["id"].dtype == np.int32
    assert pd.isna(data.members["expiration_date"].iloc[1])


def test_without_test_file(tmp_path: Path) -> None:
    folder = write_folder(tmp_path, test_csv="")
    data = load_kkbox(folder, with_test=False, show_progress=False)
    assert data.test is None
    assert list(data.song_ids) == [*SONGS, "s9="]
    with pytest.raises(InputError, match=r"file='test.csv' is missing.*kkbox-music-rec"):
        load_kkbox(folder, show_progress=False)


@pytest.mark.parametrize("name", REQUIRED_FILES)
def test_missing_file_names_file_and_folder(tmp_path: Path, name: str) -> None:
    folder = write_folder(tmp_path, **{name.replace(".csv", "_csv"): ""})
    pattern = rf"file='{name}' is missing from folder='{tmp_path}'.*Kaggle"
    with pytest.raises(InputError, match=pattern):
        load_kkbox(folder, show_progress=False)


def test_missing_column_lists_found_columns(tmp_path: Path) -> None:
    header = "msno,city,bd,sex,registered_via,registration_init_time,expiration_date"
    folder = write_folder(tmp_path, members_csv=replace_line("members.csv", 0, header))
    with pytest.raises(InputError, match=r"members.csv: column='gender' is missing.*'sex'"):
        load_kkbox(folder, show_progress=False)


@pytest.mark.parametrize(
    ("name", "line", "text", "pattern"),
    [
        ("train.csv", 3, "uA=,s2=,,Radio,radio,2", r"train.csv: column='target'.*'2' at line 4"),
        ("train.csv", 1, "uA=,s1=,a,b,c,yes", r"train.csv: column='target'.*'yes' at line 2"),
        ("train.csv", 2, "uB=,s9=,null,,radio,", r"train.csv: column='target' is empty at line 3"),
        ("songs.csv", 3, "s3=,long,,X,,,", r"songs.csv: column='song_length'.*'long' at line 4"),
        (
            "members.csv",
            2,
            "uB=,13,2.5,,9,20150628,1",
            r"members.csv: column='bd'.*'2.5' at line 3",
        ),
        (
            "members.csv",
            3,
            "uC=,5,0,male,4,2016-01-01,20171001",
            r"members.csv: column='registration_init_time'.*'2016-01-01' at line 4.*YYYYMMDD",
        ),
        (
            "members.csv",
            1,
            "uA=,1,0,,7,20110820,20171345",
            r"members.csv: column='expiration_date'.*'20171345' at line 2",
        ),
        ("test.csv", 2, "1.5,uA=,s8=,search,Search,song", r"test.csv: column='id'.*'1.5'"),
        ("test.csv", 1, "0,,s1=,discover,,song", r"test.csv: column='msno' is empty at line 2"),
    ],
)
def test_bad_value_names_file_column_value_and_line(
    tmp_path: Path, name: str, line: int, text: str, pattern: str
) -> None:
    folder = write_folder(
        tmp_path, **{name.replace(".csv", "_csv"): replace_line(name, line, text)}
    )
    with pytest.raises(InputError, match=pattern):
        load_kkbox(folder, show_progress=False)


@pytest.mark.parametrize("first", [False, True])
def test_comma_inside_quoted_field_is_repaired(tmp_path: Path, first: bool) -> None:
    # a quoted field holding a comma splits with quote rules, also on the first row (which the
    # parser would otherwise take as an index); a hopeless line is dropped with a warning
    header, *rows = TINY["songs.csv"].splitlines()
    odd = 's4=,500,465,"Earth, Wind & Fire",,,52'
    rows = [odd, *rows] if first else [*rows, odd]
    songs = "\n".join([header, *rows, "s5=,1,2,3,4,5,6,7,8"]) + "\n"
    folder = write_folder(tmp_path, songs_csv=songs)
    with pytest.warns(EncoreWarning, match=r"songs.csv: dropped 1 lines with more than 7.*line 6"):
        data = load_kkbox(folder, show_progress=False)
    by_id = data.songs.set_index(data.songs["song_id"].astype(str))
    assert sorted(by_id.index) == sorted([*SONGS, "s4="])
    assert by_id.loc["s4=", "artist_name"] == "Earth, Wind & Fire"
    assert by_id.loc["s4=", "song_length"] == 500
    assert by_id.loc["s2=", "composer"] == 'Evan "Kidd" Bogart'
    assert by_id.loc["s1=", "language"] == 52


def test_extra_columns_are_ignored(tmp_path: Path) -> None:
    lines = TINY["train.csv"].splitlines()
    train = "\n".join([lines[0] + ",extra"] + [line + ",x" for line in lines[1:]]) + "\n"
    data = load_kkbox(write_folder(tmp_path, train_csv=train), show_progress=False)
    assert list(data.train.columns) == list(SCHEMAS["train.csv"])
    assert data.train["target"].tolist() == [1, 0, 1]


def test_blank_rows_and_repeated_ids_warn(tmp_path: Path) -> None:
    test = TINY["test.csv"] + ",,,,,\n"
    members = TINY["members.csv"] + "uA=,9,30,male,7,20120101,20180101\n"
    folder = write_folder(tmp_path, test_csv=test, members_csv=members)
    with pytest.warns(EncoreWarning) as record:
        data = load_kkbox(folder, show_progress=False)
    messages = " ".join(str(w.message) for w in record)
    assert "test.csv: dropped 1 empty rows (first at line 4)" in messages
    assert "members.csv: 1 rows repeat an earlier msno" in messages
    assert data.test is not None and len(data.test) == 2
    assert data.members["city"].tolist() == [1, 13, 5]


def test_fingerprint_sees_size_head_and_tail(tmp_path: Path) -> None:
    folder = write_folder(tmp_path)
    before = data_fingerprint(folder)

    # same size, one byte changed at the end
    songs = folder / "songs.csv"
    text = songs.read_text(encoding="utf-8")
    songs.write_text(text[:-2] + "3\n", encoding="utf-8")
    changed = data_fingerprint(folder)
    assert changed != before
    assert data_fingerprint(folder) == changed

    # test.csv is optional, the others are not
    (folder / "test.csv").unlink()
    assert data_fingerprint(folder) != changed
    (folder / "members.csv").unlink()
    with pytest.raises(InputError, match="file='members.csv' is missing"):
        data_fingerprint(folder)


def test_clean_age_keeps_plausible_ages_only() -> None:
    bd = pd.Series([0, -43, 9, 10, 27, 80, 81, 1051], dtype=np.int16, name="bd", index=range(3, 11))
    age = clean_age(bd)
    assert isinstance(age, pd.Series)
    assert age.dtype == np.float32
    assert list(age.index) == list(bd.index)
    np.testing.assert_array_equal(age.to_numpy(), [np.nan] * 3 + [10, 27, 80] + [np.nan] * 2)
    array = clean_age(np.array([5, 40]))
    assert isinstance(array, np.ndarray)
    np.testing.assert_array_equal(array, np.array([np.nan, 40], dtype=np.float32))
