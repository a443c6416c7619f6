"""The KKBox data layer: the five competition CSVs read into memory-frugal, aligned frames.

:func:`load_kkbox` reads ``train.csv``, ``test.csv``, ``songs.csv``, ``members.csv`` and
``song_extra_info.csv`` from one folder into a :class:`KKBoxData`. Every column has a fixed dtype
(the ``*_SCHEMA`` constants below), every value is checked, and a malformed file raises
:class:`~embedding.errors.InputError` naming the file, the column, an example value and its line.

Two properties matter to every caller:

- ``msno`` and ``song_id`` are Categoricals with ONE category set per id kind, shared by every
  frame: the users of ``members``, ``train`` and ``test``, and the songs of ``songs``, ``extra``,
  ``train`` and ``test``. So ``.cat.codes`` is the user index and the song index everywhere, and
  ``data.user_ids[code]`` / ``data.song_ids[code]`` give the id back. Categories are sorted, so
  the codes depend only on the set of ids read (reading without ``test.csv`` gives other codes).
- Quirks of the real files are handled, not copied forward: the literal string ``null`` in
  ``source_system_tab`` stays a category while an empty field is NaN; ``songs.csv`` and
  ``song_extra_info.csv`` hold unterminated double quotes, so they are split on commas alone
  (a quote never swallows the following rows) and quotes around a field are removed afterwards;
  non-breaking spaces (U+00A0) in song text are replaced by plain spaces, so ``"Emeli\\xa0Sande"``
  and ``"Emeli Sande"`` are one artist; ``expiration_date`` 1970-01-01 is a placeholder and
  becomes NaT. Raw values are otherwise kept: ``bd`` (age) holds 0 and absurd values, cleaned
  by :func:`clean_age` when a feature wants an age.
"""

from __future__ import annotations

import csv
import hashlib
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import overload

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from embedding.errors import EncoreWarning, InputError

from ._log import logger

KAGGLE_COMPETITION = "kkbox-music-recommendation-challenge"

REQUIRED_FILES: tuple[str, ...] = (
    "train.csv",
    "test.csv",
    "songs.csv",
    "members.csv",
    "song_extra_info.csv",
)

# column -> dtype of the loaded frame; "category" columns hold strings
TRAIN_SCHEMA: dict[str, str] = {
    "msno": "category",
    "song_id": "category",
    "source_system_tab": "category",
    "source_screen_name": "category",
    "source_type": "category",
    "target": "int8",  # 0 or 1
}
TEST_SCHEMA: dict[str, str] = {
    "id": "int32",
    "msno": "category",
    "song_id": "category",
    "source_system_tab": "category",
    "source_screen_name": "category",
    "source_type": "category",
}
SONGS_SCHEMA: dict[str, str] = {
    "song_id": "category",
    "song_length": "float32",  # milliseconds
    "genre_ids": "category",  # raw "465|958" strings; features split them
    "artist_name": "category",
    "composer": "category",
    "lyricist": "category",
    "language": "float32",  # -1 is a real code, NaN is missing
}
MEMBERS_SCHEMA: dict[str, str] = {
    "msno": "category",
    "city": "int16",
    "bd": "int16",  # raw age: 0 and absurd values included, see clean_age
    "gender": "category",
    "registered_via": "int16",
    "registration_init_time": "datetime64[ns]",  # YYYYMMDD in the file
    "expiration_date": "datetime64[ns]",  # YYYYMMDD; the 19700101 placeholder becomes NaT
}
EXTRA_SCHEMA: dict[str, str] = {
    "song_id": "category",
    "name": "category",
    "isrc": "category",
}
SCHEMAS: dict[str, dict[str, str]] = {
    "train.csv": TRAIN_SCHEMA,
    "test.csv": TEST_SCHEMA,
    "songs.csv": SONGS_SCHEMA,
    "members.csv": MEMBERS_SCHEMA,
    "song_extra_info.csv": EXTRA_SCHEMA,
}

# values a column may take, beyond its dtype
ALLOWED_VALUES: dict[str, frozenset[int]] = {"target": frozenset({0, 1})}
# id columns: an empty value is an error
ID_COLUMNS = frozenset({"msno", "song_id", "id"})
# free text: U+00A0 becomes a plain space
TEXT_COLUMNS = frozenset({"artist_name", "composer", "lyricist", "name"})
# columns with up to millions of distinct values: read as strings, then hashed
MANY_VALUES = frozenset({"msno", "song_id", "song_length", "artist_name", "composer", "lyricist"})
MANY_VALUES = MANY_VALUES | {"name", "isrc"}
# a date in these columns means "unknown"
DATE_PLACEHOLDER = "19700101"
AGE_RANGE = (10, 80)
FINGERPRINT_CHUNK = 1 << 20

_INT_RANGES = {"int8": (-(2**7), 2**7 - 1), "int16": (-(2**15), 2**15 - 1)}
_INT_RANGES["int32"] = (-(2**31), 2**31 - 1)


@dataclass
class KKBoxData:
    """The five KKBox tables, loaded by :func:`load_kkbox`.

    ``msno`` is a Categorical with one category set shared by ``members``, ``train`` and
    ``test``; ``song_id`` one shared by ``songs``, ``extra``, ``train`` and ``test``. Hence
    ``.cat.codes`` is the user index and the song index in every frame (a song of ``train``
    missing from ``songs.csv`` still has a code; joins just find no metadata for it).

    Attributes
    ----------
    train : pd.DataFrame
        msno, song_id, source_system_tab, source_screen_name, source_type, target (int8), in
        file order (which is time order).
    test : pd.DataFrame or None
        id (int32), msno, song_id, source_system_tab, source_screen_name, source_type; None when
        loaded with ``with_test=False``.
    songs : pd.DataFrame
        song_id, song_length (float32 ms), genre_ids, artist_name, composer, lyricist, language
        (float32).
    members : pd.DataFrame
        msno, city, bd, registered_via (int16), gender, registration_init_time,
        expiration_date (datetime64[ns], NaT for the 1970-01-01 placeholder).
    extra : pd.DataFrame
        song_id, name, isrc.
    folder : Path
        The folder the tables were read from.
    """

    train: pd.DataFrame
    test: pd.DataFrame | None
    songs: pd.DataFrame
    members: pd.DataFrame
    extra: pd.DataFrame
    folder: Path

    @property
    def user_ids(self) -> pd.Index:
        """Every ``msno``, in code order: ``user_ids[code]`` is the id of user ``code``."""
        return self.members["msno"].cat.categories

    @property
    def song_ids(self) -> pd.Index:
        """Every ``song_id``, in code order: ``song_ids[code]`` is the id of song ``code``."""
        return self.songs["song_id"].cat.categories

    @property
    def n_users(self) -> int:
        """Number of distinct users over members, train and test."""
        return len(self.user_ids)

    @property
    def n_songs(self) -> int:
        """Number of distinct songs over songs, extra, train and test."""
        return len(self.song_ids)

    def memory_bytes(self) -> int:
        """Bytes held by the frames, counting a category set shared by frames once."""
        # codes and plain columns per frame, category sets once by identity
        frames = [self.train, self.songs, self.members, self.extra]
        if self.test is not None:
            frames.append(self.test)
        total = 0
        seen: dict[int, int] = {}
        for frame in frames:
            total += int(frame.index.memory_usage(deep=True))
            for _, column in frame.items():
                if isinstance(column.dtype, pd.CategoricalDtype):
                    total += column.cat.codes.to_numpy().nbytes
                    categories = column.cat.categories
                    seen[id(categories)] = int(categories.memory_usage(deep=True))
                else:
                    total += int(column.memory_usage(index=False, deep=True))
        return total + sum(seen.values())


def load_kkbox(
    folder: str | Path, *, with_test: bool = True, show_progress: bool = True
) -> KKBoxData:
    """Read the KKBox competition CSVs from ``folder``.

    Parameters
    ----------
    folder : str or Path
        A folder holding ``train.csv``, ``test.csv``, ``songs.csv``, ``members.csv`` and
        ``song_extra_info.csv`` as downloaded from the Kaggle competition
        ``kkbox-music-recommendation-challenge``. Extra columns are ignored.
    with_test : bool, optional (default=True)
        Read ``test.csv`` too; False skips it (the file may then be absent) and sets
        ``test`` to None.
    show_progress : bool, optional (default=True)
        Show a tqdm bar over the files.

    Returns
    -------
    KKBoxData
        The tables with the dtypes of the ``*_SCHEMA`` constants; ``msno`` and ``song_id``
        codes align across frames.

    Raises
    ------
    InputError
        A file is missing or unreadable, a column is missing, or a value has the wrong type
        (a ``target`` other than 0/1, a non-numeric ``song_length``, a non-integer ``bd``, a
        date not written YYYYMMDD, an empty id). The message names the file, the column, an
        example value and its line.

    Examples
    --------
    >>> data = load_kkbox("data/kkbox")  # doctest: +SKIP
    >>> data.train["msno"].cat.codes  # the user index, the same in data.members  # doctest: +SKIP
    """
    # check the folder before reading anything
    folder = Path(folder).expanduser().resolve()
    names = [n for n in REQUIRED_FILES if with_test or n != "test.csv"]
    for name in names:
        _require_file(folder, name, with_test=with_test)

    # read each file, members and songs first (small), then the events
    order = ["members.csv", "songs.csv", "song_extra_info.csv", "train.csv"]
    if with_test:
        order.append("test.csv")
    frames: dict[str, pd.DataFrame] = {}
    start = time.perf_counter()
    bar = tqdm(order, desc="kkbox", unit="file", disable=not show_progress)
    for name in bar:
        bar.set_postfix_str(name)
        frames[name] = _read_table(folder / name)
    bar.close()

    # one category set per id kind, so codes align across frames
    user_frames = [frames["members.csv"], frames["train.csv"]]
    song_frames = [frames["songs.csv"], frames["song_extra_info.csv"], frames["train.csv"]]
    if with_test:
        user_frames.append(frames["test.csv"])
        song_frames.append(frames["test.csv"])
    _share_categories(user_frames, "msno")
    _share_categories(song_frames, "song_id")

    # the catalogue tables index by id: keep the first row of a repeated id
    for name, column in [
        ("members.csv", "msno"),
        ("songs.csv", "song_id"),
        ("song_extra_info.csv", "song_id"),
    ]:
        frames[name] = _drop_repeated_ids(frames[name], column, name)

    data = KKBoxData(
        train=frames["train.csv"],
        test=frames.get("test.csv"),
        songs=frames["songs.csv"],
        members=frames["members.csv"],
        extra=frames["song_extra_info.csv"],
        folder=folder,
    )
    logger.info(
        "loaded KKBox from %s in %.1f s: %d users, %d songs, %.0f MB in memory",
        folder,
        time.perf_counter() - start,
        data.n_users,
        data.n_songs,
        data.memory_bytes() / 2**20,
    )
    return data


def data_fingerprint(folder: str | Path) -> str:
    """A cheap fingerprint of the KKBox files in ``folder``, to tell whether the data changed.

    It hashes, for each of the five files present (``test.csv`` may be absent), its name, its
    size and its first and last megabyte; it reads at most 2 MB per file, whatever the size.

    Parameters
    ----------
    folder : str or Path
        The folder given to :func:`load_kkbox`.

    Returns
    -------
    str
        A sha256 hex digest (64 characters).

    Raises
    ------
    InputError
        A file other than ``test.csv`` is missing.
    """
    # every file but test.csv is required
    folder = Path(folder).expanduser().resolve()
    digest = hashlib.sha256()
    for name in REQUIRED_FILES:
        path = folder / name
        if name == "test.csv" and not path.is_file():
            digest.update(b"test.csv:absent;")
            continue
        _require_file(folder, name, with_test=True)

        # name, size, head and tail
        size = path.stat().st_size
        digest.update(f"{name}:{size};".encode())
        with path.open("rb") as f:
            digest.update(f.read(FINGERPRINT_CHUNK))
            if size > FINGERPRINT_CHUNK:
                f.seek(max(size - FINGERPRINT_CHUNK, FINGERPRINT_CHUNK))
                digest.update(f.read(FINGERPRINT_CHUNK))
    return digest.hexdigest()


@overload
def clean_age(bd: pd.Series) -> pd.Series: ...
@overload
def clean_age(bd: np.ndarray) -> np.ndarray: ...
def clean_age(bd: pd.Series | np.ndarray) -> pd.Series | np.ndarray:
    """The raw ``bd`` column as an age: float32, NaN outside 10..80 years.

    ``members.csv`` writes an unknown age as 0 (58 % of members) and also holds negative and
    four-digit values; none of them is an age.

    Parameters
    ----------
    bd : pd.Series or np.ndarray
        Raw ``bd`` values, any numeric dtype.

    Returns
    -------
    pd.Series or np.ndarray
        float32 ages, NaN where ``bd`` was outside ``AGE_RANGE`` (inclusive) or missing; a
        Series keeps the index and name of ``bd``.
    """
    # mask out-of-range values, keeping the container type
    low, high = AGE_RANGE
    values = np.asarray(bd, dtype=np.float32)
    age = np.where((values >= low) & (values <= high), values, np.float32(np.nan))
    age = age.astype(np.float32)
    if isinstance(bd, pd.Series):
        return pd.Series(age, index=bd.index, name=bd.name)
    return age


def _require_file(folder: Path, name: str, *, with_test: bool) -> None:
    """Raise an InputError when ``folder / name`` is not a file."""
    if (folder / name).is_file():
        return
    needed = [n for n in REQUIRED_FILES if with_test or n != "test.csv"]
    hint = "" if with_test else " (test.csv is optional with with_test=False)"
    raise InputError(
        f"file={name!r} is missing from folder={str(folder)!r}; the folder must hold the "
        f"KKBox CSVs {', '.join(needed)}{hint}: download them from the Kaggle competition "
        f"'{KAGGLE_COMPETITION}' and unzip them there"
    )


def _read_table(path: Path) -> pd.DataFrame:
    """Read one KKBox file, check its columns and values, and convert it to its schema."""
    # header first, to name missing columns
    start = time.perf_counter()
    schema = SCHEMAS[path.name]
    found = _read_header(path)
    for column in schema:
        if column not in found:
            raise InputError(
                f"{path.name}: column={column!r} is missing; expected {list(schema)}, found "
                f"{found} in {path}; is this the KKBox {path.name}?"
            )

    # every column as a category; only commas split fields, so stray quotes swallow nothing
    raw = _categorize(_read_raw(path, found, list(schema)))

    # rows with every field empty carry nothing
    empty = raw.isna().all(axis=1).to_numpy()
    if empty.any():
        first = int(np.flatnonzero(empty)[0])
        _warn(
            f"{path.name}: dropped {int(empty.sum())} empty rows (first at line {first + 2}); "
            "remove them from the file to silence this"
        )
        raw = raw.loc[~empty].reset_index(drop=True)

    # convert and check column by column
    frame = pd.DataFrame(
        {
            column: _convert(raw[column], path.name, column, dtype)
            for column, dtype in schema.items()
        }
    )
    logger.info("read %s: %d rows in %.1f s", path.name, len(frame), time.perf_counter() - start)
    return frame


def _read_header(path: Path) -> list[str]:
    """The column names of a CSV, or an InputError when it has none."""
    try:
        with path.open(encoding="utf-8", newline="") as f:
            line = f.readline()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path.name}: cannot read {path} as UTF-8 text ({exc})") from exc
    if not line.strip():
        raise InputError(f"{path.name}: file={str(path)!r} is empty; expected a CSV header line")
    return [name.strip().strip('"') for name in line.rstrip("\r\n").split(",")]


def _read_raw(path: Path, header: list[str], columns: list[str]) -> pd.DataFrame:
    """``columns`` of ``path``, split on commas alone, as strings or Categoricals.

    A line with too many fields (a comma inside a quoted field) is split again with quote
    rules; a line that still does not fit is dropped with a warning.
    """
    # the parser would take a long first row as an index, so that row is checked here
    with path.open(encoding="utf-8", newline="") as f:
        f.readline()
        first = f.readline().rstrip("\r\n")
    fits = not first or first.count(",") == len(header) - 1

    # the fast path: the C parser, quotes taken literally; every line must fit the header
    dtypes = {c: object if c in MANY_VALUES else "category" for c in header}
    if fits:
        try:
            raw = pd.read_csv(
                path,
                dtype=dtypes,
                index_col=False,
                keep_default_na=False,
                na_values=[""],
                quoting=csv.QUOTE_NONE,
                encoding="utf-8",
            )
            return raw[columns]
        except UnicodeDecodeError as exc:
            raise InputError(f"{path.name}: cannot read {path} as UTF-8 text ({exc})") from exc
        except pd.errors.ParserError as exc:
            logger.info("%s: %s; splitting the odd lines again with quote rules", path.name, exc)
    return _read_lines(path, header)[columns]


def _read_lines(path: Path, header: list[str]) -> pd.DataFrame:
    """Every column of ``path`` as strings, line by line, repairing lines with quoted commas."""
    # split on commas; a line that does not fit is split again with quote rules
    n_fields = len(header)
    rows: list[list[str]] = []
    dropped: list[int] = []
    with path.open(encoding="utf-8", newline="") as f:
        f.readline()
        for number, line in enumerate(f, start=2):
            line = line.rstrip("\r\n")
            if not line:
                continue
            fields = line.split(",")
            if len(fields) > n_fields:
                fields = next(csv.reader([line]), [])
            if len(fields) > n_fields:
                dropped.append(number)
                continue
            rows.append(fields + [""] * (n_fields - len(fields)))
    if dropped:
        _warn(
            f"{path.name}: dropped {len(dropped)} lines with more than {n_fields} fields even "
            f"with quote rules (first at line {dropped[0]}); fix those lines to keep them"
        )

    # empty fields are missing values
    table = np.array(rows, dtype=object).reshape(len(rows), n_fields)
    table[table == ""] = None
    return pd.DataFrame(table, columns=header, dtype=object)


def _categorize(raw: pd.DataFrame) -> pd.DataFrame:
    """``raw`` with its string columns turned into Categoricals in order of first appearance."""
    # hashing keeps first-seen order and avoids sorting millions of strings
    for column in raw.columns:
        if not isinstance(raw[column].dtype, pd.CategoricalDtype):
            codes, uniques = pd.factorize(raw[column].to_numpy(), use_na_sentinel=True)
            categories = pd.Index(uniques, dtype=object).astype(str)
            raw[column] = pd.Categorical.from_codes(codes, categories=categories)
    return raw


def _convert(raw: pd.Series, file: str, column: str, dtype: str) -> pd.Series:
    """One raw categorical column in its schema dtype, or an InputError naming a bad value."""
    # categories: strings, unquoted, and one space kind in free text
    if dtype == "category":
        values = _as_text(raw)
        if column in TEXT_COLUMNS:
            values = _map_categories(values, lambda s: s.replace("\u00a0", " "))
        if column in ID_COLUMNS:
            _forbid_empty(values, file, column)
        return values

    # numbers and dates are parsed once per distinct value
    categories = raw.cat.categories
    codes = raw.cat.codes.to_numpy()
    if dtype.startswith("datetime64"):
        parsed, bad = _parse_dates(categories)
        missing: np.ndarray = np.array(np.datetime64("NaT"), dtype=dtype)
    else:
        parsed, bad = _parse_numbers(categories, dtype, ALLOWED_VALUES.get(column))
        missing = np.array(np.nan, dtype=np.float64)
    if bad.any():
        _raise_bad_value(categories, codes, bad, file, column, _expectation(column, dtype))

    # integers have no missing value; floats and dates take NaN / NaT
    if dtype.startswith("int"):
        _forbid_empty(raw, file, column)
        return pd.Series(parsed.astype(dtype)[codes], name=column)
    table = np.append(parsed, missing).astype(dtype)
    return pd.Series(table[codes], name=column)


def _as_text(raw: pd.Series) -> pd.Series:
    """A categorical with string categories, with the quotes of a quoted field removed."""
    # the parser turns all-numeric categories into numbers; ids and text stay strings
    categories = raw.cat.categories
    if categories.dtype.kind in "iufb":
        raw = raw.cat.rename_categories(list(categories.astype(str)))
    if raw.cat.categories.str.contains('"', regex=False).any():
        raw = _map_categories(raw, _unquote)
    return raw


def _unquote(value: str) -> str:
    """Undo CSV quoting of a field read with quotes taken literally."""
    # only a field that starts with a quote was quoted; an unterminated one lacks the closing one
    if not value.startswith('"'):
        return value
    value = value[1:]
    if value.endswith('"') and not value.endswith('""') or value.endswith('"""'):
        value = value[:-1]
    return value.replace('""', '"')


def _map_categories(raw: pd.Series, func: Callable[[str], str]) -> pd.Series:
    """Apply ``func`` to every category, merging categories that become equal."""
    # map only the categories that change
    categories = raw.cat.categories
    mapped = pd.Index([func(c) for c in categories], dtype=categories.dtype)
    if mapped.equals(categories):
        return raw

    # factorize the mapped names and move the codes along
    new_codes, uniques = pd.factorize(mapped)
    codes = raw.cat.codes.to_numpy()
    recoded = np.where(codes >= 0, new_codes[np.maximum(codes, 0)], -1)
    result = pd.Categorical.from_codes(recoded, categories=pd.Index(uniques))
    return pd.Series(result, name=raw.name, index=raw.index)


def _parse_numbers(
    categories: pd.Index, dtype: str, allowed: frozenset[int] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Numeric values of ``categories`` and a mask of those unfit for ``dtype``."""
    # strings that are not numbers become NaN
    values = pd.to_numeric(pd.Series(categories, dtype=object), errors="coerce").to_numpy(
        dtype=np.float64
    )
    bad = ~np.isfinite(values)

    # integers must be whole, in range, and in the allowed set when there is one
    if dtype.startswith("int"):
        low, high = _INT_RANGES[dtype]
        with np.errstate(invalid="ignore"):
            bad |= (values != np.round(values)) | (values < low) | (values > high)
    if allowed is not None:
        bad |= ~np.isin(values, sorted(allowed))
    return np.where(bad, 0.0, values), bad


def _parse_dates(categories: pd.Index) -> tuple[np.ndarray, np.ndarray]:
    """Dates of YYYYMMDD ``categories`` and a mask of those that are not such dates."""
    # eight digits that make a calendar date; the placeholder becomes NaT
    text = pd.Index(categories.astype(str), dtype=object)
    eight_digits = np.asarray(text.str.fullmatch(r"\d{8}"), dtype=bool)
    dates = pd.to_datetime(pd.Series(text), format="%Y%m%d", errors="coerce")
    bad = ~eight_digits | dates.isna().to_numpy()
    dates = dates.mask((text == DATE_PLACEHOLDER) | bad)
    return dates.to_numpy(dtype="datetime64[ns]"), bad


def _expectation(column: str, dtype: str) -> str:
    """How the values of a column must look, for error messages."""
    if column in ALLOWED_VALUES:
        return f"one of {sorted(ALLOWED_VALUES[column])}"
    if dtype.startswith("datetime64"):
        return "a date written YYYYMMDD, e.g. 20170131"
    if dtype.startswith("int"):
        low, high = _INT_RANGES[dtype]
        return f"an integer in {low}..{high}"
    return "a number"


def _raise_bad_value(
    categories: pd.Index,
    codes: np.ndarray,
    bad: np.ndarray,
    file: str,
    column: str,
    expected: str,
) -> None:
    """Raise an InputError naming the first row whose value is flagged in ``bad``."""
    row = int(np.flatnonzero(np.isin(codes, np.flatnonzero(bad)))[0])
    value = categories[codes[row]]
    value = str(value.item() if isinstance(value, np.generic) else value)
    raise InputError(
        f"{file}: column={column!r} holds value={value!r} at line {row + 2} "
        f"({int(bad.sum())} distinct bad values); expected {expected}; fix or remove those rows"
    )


def _forbid_empty(values: pd.Series, file: str, column: str) -> None:
    """Raise an InputError when a column that may not be empty has an empty field."""
    empty = values.isna().to_numpy()
    if empty.any():
        row = int(np.flatnonzero(empty)[0])
        raise InputError(
            f"{file}: column={column!r} is empty at line {row + 2} ({int(empty.sum())} empty "
            "rows); every row needs a value there; fix or remove those rows"
        )


def _share_categories(frames: list[pd.DataFrame], column: str) -> None:
    """Give ``column`` of every frame one category set, in order of first appearance, in place."""
    # the union of the ids in frame order, shared by one dtype object
    parts = [f[column].cat.categories.to_numpy(dtype=object) for f in frames]
    union = pd.Index(pd.unique(np.concatenate(parts)), dtype=object).astype(str)
    dtype = pd.CategoricalDtype(union, ordered=False)
    for frame in frames:
        # move the codes by category, not by row; every frame holds the same dtype object
        old = frame[column]
        moved = dtype.categories.get_indexer(old.cat.categories)
        codes = old.cat.codes.to_numpy()
        shared = np.where(codes >= 0, moved[np.maximum(codes, 0)], -1)
        frame[column] = pd.Categorical.from_codes(shared, dtype=dtype)


def _drop_repeated_ids(frame: pd.DataFrame, column: str, file: str) -> pd.DataFrame:
    """``frame`` without the later rows of a repeated id, with a warning when there were any."""
    repeated = frame[column].duplicated().to_numpy()
    if not repeated.any():
        return frame
    first = frame[column].iloc[int(np.flatnonzero(repeated)[0])]
    _warn(
        f"{file}: {int(repeated.sum())} rows repeat an earlier {column} (e.g. {column}={first!r}); "
        "kept the first row of each"
    )
    return frame.loc[~repeated].reset_index(drop=True)


def _warn(message: str) -> None:
    """Log and warn about data that loads, but not as it should."""
    logger.warning("%s", message)
    warnings.warn(message, EncoreWarning, stacklevel=3)
