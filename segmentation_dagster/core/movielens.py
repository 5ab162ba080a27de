"""MovieLens: read GroupLens' original ml-100k and ml-1m files, and fetch them.

The licence forbids redistributing the data, so nothing here ships it: pass the folder
of an unzipped copy (the pipeline's ``SEGMENTATION_MOVIELENS_DIR`` setting), or let
:func:`download_movielens` fetch the official zip into a cache folder and check its
checksum. Nothing here reads the environment: every folder is an argument.

Tables use the project's names: ratings (customer_id, item_id, value, timestamp), movies
(item_id, title, year, one 0/1 ``genre_<slug>`` column per genre, category = the first
listed genre), users (customer_id, age, gender, occupation, zip).
"""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import tempfile
import urllib.request
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

# where downloads go when the caller names no cache folder (the pipeline always names one)
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "segmentation_dagster"

BASE_URL = "https://files.grouplens.org/datasets/movielens"
# The md5 sums GroupLens publishes beside each zip (ml-100k.zip.md5, ml-1m.zip.md5).
PUBLISHED_MD5 = {
    "ml-100k": "0e33842e24a9c977be4e0107933c0723",
    "ml-1m": "c4d9eecfca2ab87c1945afe126590906",
}
# Files whose presence identifies each release (and that the loader needs).
REQUIRED_FILES = {
    "ml-100k": ("u.data", "u.item", "u.user", "u.genre"),
    "ml-1m": ("ratings.dat", "movies.dat", "users.dat"),
}
# ml-1m codes occupations as integers; names from its README.
ML1M_OCCUPATIONS = (
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student",
    "customer service", "doctor/health care", "executive/managerial", "farmer", "homemaker",
    "K-12 student", "lawyer", "programmer", "retired", "sales/marketing", "scientist",
    "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed", "writer",
)
ENCODING = "latin-1"  # titles in both releases are ISO-8859-1, not UTF-8


@dataclass(frozen=True)
class MovieLens:
    """One MovieLens release as three tidy tables.

    ``genres`` lists the genre names in file order; ``genre_column(g)`` is the column of
    ``movies`` flagging genre g. In ml-1m ``users.age`` is the lower bound of the age band
    GroupLens publishes (1 = under 18, 18, 25, 35, 45, 50, 56 = 56+), not an exact age.
    """

    name: str
    ratings: pd.DataFrame
    movies: pd.DataFrame
    users: pd.DataFrame
    genres: tuple[str, ...]


def genre_column(genre: str) -> str:
    """The movies column of a genre: 'Sci-Fi' -> 'genre_sci_fi', "Children's" ->
    'genre_childrens' (SQL-friendly names)."""
    slug = re.sub(r"[^a-z0-9]+", "_", genre.lower().replace("'", "")).strip("_")
    return f"genre_{slug}"


def genre_items(movies: pd.DataFrame, genre: str) -> np.ndarray:
    """Item ids of the movies tagged with ``genre`` (any of their genres, not only the first)."""
    column = genre_column(genre)
    if column not in movies.columns:
        known = [c[len("genre_"):] for c in movies.columns if c.startswith("genre_")]
        raise ValueError(f"no genre {genre!r} (column {column!r}); genres are {known}")
    return movies.loc[movies[column].astype(bool), "item_id"].to_numpy()


def detect_release(folder: str | Path) -> str:
    """'ml-100k' or 'ml-1m', from the files present in ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"MovieLens folder {folder} does not exist")
    for name, files in REQUIRED_FILES.items():
        if (folder / files[0]).is_file():
            missing = [f for f in files if not (folder / f).is_file()]
            if missing:
                raise FileNotFoundError(f"{name} folder {folder} lacks {', '.join(missing)}")
            return name
    raise FileNotFoundError(
        f"{folder} holds neither ml-100k (u.data) nor ml-1m (ratings.dat) files"
    )


def load_movielens(folder: str | Path) -> MovieLens:
    """Read an unzipped ml-100k or ml-1m folder (detected from the files present)."""
    folder = Path(folder)
    name = detect_release(folder)
    if name == "ml-100k":
        return _load_100k(folder)
    return _load_1m(folder)


def _read(path: Path, sep: str, names: list[str], **kwargs) -> pd.DataFrame:
    """Read a headerless GroupLens table as strings; wrong field counts name the file."""
    if not path.is_file():
        raise FileNotFoundError(f"missing MovieLens file {path}")
    raw = path.read_bytes()
    if len(sep) > 1:
        # '::' would force pandas' slow python engine; no field contains a tab, so swap it
        raw = raw.replace(sep.encode(), b"\t")
        sep = "\t"
    try:
        with warnings.catch_warnings():
            # pandas only warns when the first line has more fields than names
            warnings.simplefilter("error", pd.errors.ParserWarning)
            table = pd.read_csv(
                io.BytesIO(raw), sep=sep, header=None, names=names, dtype=str,
                encoding=ENCODING, keep_default_na=False, quoting=3, index_col=False, **kwargs,
            )
    except (pd.errors.ParserError, pd.errors.ParserWarning) as error:
        raise ValueError(
            f"{path.name} is malformed (expected {len(names)} fields a line): {error}"
        ) from None
    # empty fields read as '' here, so NaN can only mean a line with too few fields
    short = table.isna().any(axis=1).to_numpy()
    if short.any():
        line = int(np.flatnonzero(short)[0]) + 1
        raise ValueError(
            f"{path.name} is malformed: line {line} has fewer than {len(names)} fields"
        )
    return table


def _integers(table: pd.DataFrame, column: str, path: Path) -> pd.Series:
    values = pd.to_numeric(table[column], errors="coerce")
    bad = values.isna() | (values != values.round())
    if bad.any():
        line = int(np.flatnonzero(bad.to_numpy())[0]) + 1
        raise ValueError(
            f"{path.name}: column {column!r} must hold integers; {int(bad.sum())} rows do not, "
            f"first on line {line}: {table[column].iloc[line - 1]!r}"
        )
    return values.astype(np.int64)


def _ratings(table: pd.DataFrame, path: Path) -> pd.DataFrame:
    ratings = pd.DataFrame(
        {
            "customer_id": _integers(table, "customer_id", path),
            "item_id": _integers(table, "item_id", path),
            "value": _integers(table, "value", path),
            "timestamp": pd.to_datetime(_integers(table, "timestamp", path), unit="s"),
        }
    )
    off_scale = ~ratings["value"].between(1, 5)
    if off_scale.any():
        raise ValueError(
            f"{path.name}: column 'value' must be 1-5 stars; {int(off_scale.sum())} are not"
        )
    return ratings


def _check_references(data: MovieLens) -> MovieLens:
    for table, column, known in (
        ("movies", "item_id", data.movies["item_id"]),
        ("users", "customer_id", data.users["customer_id"]),
    ):
        if getattr(data, table)[column].duplicated().any():
            raise ValueError(f"{data.name} {table}: duplicate {column}s")
        unknown = ~data.ratings[column].isin(known)
        if unknown.any():
            raise ValueError(
                f"{data.name}: {int(unknown.sum())} ratings name a {column} absent from {table}"
            )
    return data


def _movies(
    item_ids: pd.Series, titles: pd.Series, years: pd.Series, flags: pd.DataFrame,
    genres: tuple[str, ...],
) -> pd.DataFrame:
    movies = pd.DataFrame({"item_id": item_ids, "title": titles.str.strip(), "year": years})
    flags = flags.astype(np.int8)
    flags.columns = [genre_column(g) for g in genres]
    has_genre = flags.to_numpy().any(axis=1)
    first = np.asarray(genres, dtype=object)[flags.to_numpy().argmax(axis=1)]
    movies = pd.concat([movies, flags.set_index(movies.index)], axis=1)
    movies["category"] = np.where(has_genre, first, "unknown")
    return movies


def _title_year(titles: pd.Series) -> pd.Series:
    return pd.to_numeric(titles.str.extract(r"\((\d{4})\)\s*$")[0], errors="coerce")


def _load_100k(folder: Path) -> MovieLens:
    path = folder / "u.data"
    ratings = _ratings(_read(path, "\t", ["customer_id", "item_id", "value", "timestamp"]), path)

    path = folder / "u.genre"
    genre_table = _read(path, "|", ["genre", "index"])
    genre_table = genre_table[genre_table["genre"].str.strip() != ""]
    index = _integers(genre_table, "index", path)
    genres = tuple(genre_table["genre"].to_numpy()[np.argsort(index.to_numpy())])

    path = folder / "u.item"
    names = ["item_id", "title", "release_date", "video_release_date", "url"] + [
        f"g{k}" for k in range(len(genres))
    ]
    table = _read(path, "|", names)
    flags = pd.DataFrame({g: _integers(table, f"g{k}", path) for k, g in enumerate(genres)})
    if not flags.isin([0, 1]).all().all():
        raise ValueError(f"{path.name}: genre flags must be 0 or 1")
    release = pd.to_datetime(table["release_date"], format="%d-%b-%Y", errors="coerce")
    # a few movies have no release date; the title's '(year)' is then the best we have
    year = release.dt.year.fillna(_title_year(table["title"])).astype("Int64")
    movies = _movies(_integers(table, "item_id", path), table["title"], year, flags, genres)

    path = folder / "u.user"
    table = _read(path, "|", ["customer_id", "age", "gender", "occupation", "zip"])
    users = pd.DataFrame(
        {
            "customer_id": _integers(table, "customer_id", path),
            "age": _integers(table, "age", path),
            "gender": table["gender"],
            "occupation": table["occupation"],
            "zip": table["zip"],
        }
    )
    _check_gender(users, path)
    return _check_references(MovieLens("ml-100k", ratings, movies, users, genres))


def _load_1m(folder: Path) -> MovieLens:
    path = folder / "ratings.dat"
    ratings = _ratings(
        _read(path, "::", ["customer_id", "item_id", "value", "timestamp"]), path
    )

    path = folder / "movies.dat"
    table = _read(path, "::", ["item_id", "title", "genres"])
    listed = table["genres"].str.split("|")
    # genres in order of first appearance, so the column order is stable for a release
    genres = tuple(pd.unique(listed.explode().loc[lambda s: s.str.len() > 0]))
    flags = table["genres"].str.get_dummies(sep="|").reindex(columns=list(genres), fill_value=0)
    first = listed.str[0]
    movies = _movies(
        _integers(table, "item_id", path), table["title"],
        _title_year(table["title"]).astype("Int64"), flags, genres,
    )
    # ml-1m lists genres in its own order; the primary genre is the first one written
    movies["category"] = np.where(first.str.len() > 0, first, "unknown")

    path = folder / "users.dat"
    table = _read(path, "::", ["customer_id", "gender", "age", "occupation", "zip"])
    occupation = _integers(table, "occupation", path)
    if not occupation.between(0, len(ML1M_OCCUPATIONS) - 1).all():
        raise ValueError(f"{path.name}: column 'occupation' has codes outside 0-20")
    users = pd.DataFrame(
        {
            "customer_id": _integers(table, "customer_id", path),
            "age": _integers(table, "age", path),
            "gender": table["gender"],
            "occupation": np.asarray(ML1M_OCCUPATIONS, dtype=object)[occupation.to_numpy()],
            "zip": table["zip"],
        }
    )
    _check_gender(users, path)
    return _check_references(MovieLens("ml-1m", ratings, movies, users, genres))


def _check_gender(users: pd.DataFrame, path: Path) -> None:
    bad = ~users["gender"].isin(["M", "F"])
    if bad.any():
        raise ValueError(
            f"{path.name}: column 'gender' must be M or F; found {users['gender'][bad].iloc[0]!r}"
        )


# --- download -------------------------------------------------------------------------


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _parse_checksum(checksum: str) -> tuple[str, str]:
    algorithm, _, value = checksum.partition(":")
    if algorithm not in ("md5", "sha256") or not re.fullmatch(r"[0-9a-fA-F]+", value or ""):
        raise ValueError(f"checksum must be 'md5:<hex>' or 'sha256:<hex>', got {checksum!r}")
    return algorithm, value.lower()


def download_movielens(
    name: str = "ml-100k",
    cache_dir: str | Path | None = None,
    url: str | None = None,
    checksum: str | None = None,
) -> Path:
    """Fetch and unzip a MovieLens release into ``cache_dir`` (default
    :data:`DEFAULT_CACHE_DIR`); return the data folder.

    A folder already unzipped in the cache is returned at once. Otherwise the zip is
    fetched from ``url`` (default: GroupLens; any urllib URL, file:// included) and its
    checksum is verified before extraction: ``checksum`` ('md5:<hex>' or 'sha256:<hex>'),
    else GroupLens' published md5 for the official URL. With a custom URL and no checksum
    the first download's sha256 is recorded in the cache (trust on first use) and every
    later download must match it. On a mismatch the zip is deleted and ValueError raised.
    """
    if name not in REQUIRED_FILES:
        raise ValueError(
            f"unknown MovieLens release {name!r}; choose from {sorted(REQUIRED_FILES)}"
        )
    cache = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
    folder = cache / name
    if all((folder / f).is_file() for f in REQUIRED_FILES[name]):
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    record = cache / f"{name}.zip.sha256"
    if checksum is None and url is None:
        checksum = f"md5:{PUBLISHED_MD5[name]}"
    elif checksum is None and record.is_file():
        checksum = f"sha256:{record.read_text().strip()}"
    url = url or f"{BASE_URL}/{name}.zip"

    archive = cache / f"{name}.zip"
    partial = archive.with_suffix(".zip.part")
    with urllib.request.urlopen(url, timeout=120) as response, open(partial, "wb") as out:
        shutil.copyfileobj(response, out)
    partial.replace(archive)
    if checksum is not None:
        algorithm, expected = _parse_checksum(checksum)
        actual = file_digest(archive, algorithm)
        if actual != expected:
            archive.unlink()
            raise ValueError(
                f"{name}.zip from {url} has {algorithm} {actual}, expected {expected}; "
                "the download was deleted"
            )
    else:
        record.write_text(file_digest(archive, "sha256") + "\n")
    _extract(archive, cache, name)
    archive.unlink()
    detect_release(folder)  # the zip must hold the release's files
    return folder


def _extract(archive: Path, cache: Path, name: str) -> None:
    """Unzip into a scratch folder, then move the release folder into place, so an
    interrupted extraction never leaves a half-filled cache folder that looks complete."""
    with zipfile.ZipFile(archive) as zipped:
        for member in zipped.namelist():
            # refuse absolute paths and '..' (zip slip) before writing anything
            if member.startswith(("/", "\\")) or ".." in Path(member).parts:
                raise ValueError(f"{archive.name} holds an unsafe path {member!r}")
        with tempfile.TemporaryDirectory(dir=cache) as scratch:
            zipped.extractall(scratch)
            source = Path(scratch) / name
            if not source.is_dir():
                raise ValueError(f"{archive.name} has no top-level folder {name}/")
            target = cache / name
            if target.exists():
                shutil.rmtree(target)
            source.replace(target)


def movielens_folder(
    name: str = "ml-100k",
    folder: str | Path | None = None,
    cache_dir: str | Path | None = None,
) -> Path:
    """The data folder: ``folder`` if given (it must hold a release), else a (cached)
    download of ``name`` into ``cache_dir``."""
    if folder:
        folder = Path(folder)
        detect_release(folder)
        return folder
    return download_movielens(name, cache_dir)
