import csv
import hashlib
import os
import shutil
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from segmentation_dagster.core import movielens as ml
from segmentation_dagster.core.cold_start import like_edges


def _shared_ml100k() -> Path | None:
    # the test finds its data itself; the library never reads the environment
    given = os.environ.get("SEGMENTATION_MOVIELENS_DIR")
    candidates = [Path(given)] if given else []
    candidates.append(Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "ml-100k")
    for folder in candidates:
        if (folder / "u.data").is_file():
            return folder
    return None


SHARED = _shared_ml100k()
needs_shared = pytest.mark.skipif(SHARED is None, reason="MovieLens-100K copy not present")

GENRES_100K = ["unknown", "Action", "Comedy", "Drama", "Sci-Fi"]


def _write_100k(folder: Path, ratings: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.genre").write_text(
        "".join(f"{g}|{i}\n" for i, g in enumerate(GENRES_100K)) + "\n"
    )
    (folder / "u.item").write_bytes(
        "1|Toy Story (1995)|01-Jan-1995||http://x|0|0|1|0|0\n"
        "2|Caf\xe9 Lumi\xe8re (2003)|||http://x|0|0|1|1|0\n"
        "3|Alien (1979)|01-Jan-1979||http://x|0|1|0|0|1\n"
        "4|unknown|||http://x|1|0|0|0|0\n".encode("latin-1")
    )
    (folder / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n")
    (folder / "u.data").write_text(
        ratings
        if ratings is not None
        else "1\t1\t5\t881250949\n1\t3\t1\t881250950\n2\t2\t4\t891717742\n2\t4\t2\t891717743\n"
    )
    return folder


def _write_1m(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.dat").write_text("1::1193::5::978300760\n1::661::3::978302109\n"
                                        "2::1193::4::978298413\n")
    (folder / "movies.dat").write_bytes(
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
        "661::Star Wars: Episode IV - A New Hope (1977)::Action|Adventure|Sci-Fi\n"
        "7::Am\xe9lie (2001)::Comedy|Romance\n".encode("latin-1")
    )
    (folder / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    return folder


def test_load_small_ml100k(tmp_path):
    data = ml.load_movielens(_write_100k(tmp_path / "ml-100k"))
    assert data.name == "ml-100k"
    assert data.genres == tuple(GENRES_100K)
    movies = data.movies.set_index("item_id")
    assert movies.loc[2, "title"] == "Café Lumière (2003)"
    # no release date: the year comes from the title; none at all stays missing
    assert movies.loc[2, "year"] == 2003 and pd.isna(movies.loc[4, "year"])
    assert movies["category"].tolist() == ["Comedy", "Comedy", "Action", "unknown"]
    assert movies.loc[2, "genre_drama"] == 1 and movies.loc[3, "genre_sci_fi"] == 1
    np.testing.assert_array_equal(ml.genre_items(data.movies, "Comedy"), [1, 2])
    np.testing.assert_array_equal(ml.genre_items(data.movies, "Sci-Fi"), [3])
    utc = datetime.fromtimestamp(881250949, tz=UTC).replace(tzinfo=None)
    assert data.ratings["timestamp"].iloc[0] == pd.Timestamp(utc)
    assert data.users.set_index("customer_id").loc[2, "occupation"] == "other"
    with pytest.raises(ValueError, match="Horror"):
        ml.genre_items(data.movies, "Horror")


def test_load_small_ml1m(tmp_path):
    data = ml.load_movielens(_write_1m(tmp_path / "ml-1m"))
    assert data.name == "ml-1m"
    movies = data.movies.set_index("item_id")
    assert movies.loc[661, "title"].startswith("Star Wars: Episode IV")
    assert movies.loc[661, "category"] == "Action"
    assert movies.loc[7, "category"] == "Comedy" and movies.loc[7, "genre_romance"] == 1
    assert movies.loc[661, "year"] == 1977
    assert movies.loc[1193, "genre_action"] == 0
    users = data.users.set_index("customer_id")
    assert users.loc[1, "occupation"] == "K-12 student"
    assert users.loc[2, "occupation"] == "self-employed" and users.loc[2, "age"] == 56
    assert data.ratings["value"].tolist() == [5, 3, 4]


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither"):
        ml.load_movielens(tmp_path)
    folder = _write_100k(tmp_path / "a")
    (folder / "u.user").unlink()
    with pytest.raises(FileNotFoundError, match="u.user"):
        ml.load_movielens(folder)

    folder = _write_100k(tmp_path / "b", ratings="1\t1\tfive\t881250949\n")
    with pytest.raises(ValueError, match="'value'"):
        ml.load_movielens(folder)
    folder = _write_100k(tmp_path / "c", ratings="1\t1\t5\t881250949\n1\t3\t1\n")
    with pytest.raises(ValueError, match="u.data.*line 2"):
        ml.load_movielens(folder)
    folder = _write_100k(tmp_path / "d", ratings="1\t1\t5\t881250949\t7\n")
    with pytest.raises(ValueError, match="u.data is malformed"):
        ml.load_movielens(folder)
    folder = _write_100k(tmp_path / "e", ratings="1\t1\t9\t881250949\n")
    with pytest.raises(ValueError, match="1-5 stars"):
        ml.load_movielens(folder)
    folder = _write_100k(tmp_path / "f", ratings="1\t99\t5\t881250949\n")
    with pytest.raises(ValueError, match="item_id absent from movies"):
        ml.load_movielens(folder)


def _zip_release(tmp_path: Path, name: str = "ml-100k", extra: str = "") -> Path:
    source = _write_100k(tmp_path / "src" / name)
    (source / "README").write_text("tiny test copy" + extra)
    archive = tmp_path / f"{name}-{abs(hash(extra))}.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in source.iterdir():
            zipped.write(path, f"{name}/{path.name}")
    return archive


def test_download_checks_the_checksum(tmp_path):
    archive = _zip_release(tmp_path)
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    cache = tmp_path / "cache"

    with pytest.raises(ValueError, match="sha256"):
        ml.download_movielens("ml-100k", cache, url=archive.as_uri(), checksum="sha256:" + "0" * 64)
    assert not (cache / "ml-100k.zip").exists() and not (cache / "ml-100k").exists()

    folder = ml.download_movielens("ml-100k", cache, url=archive.as_uri(), checksum=f"sha256:{sha}")
    assert folder == cache / "ml-100k"
    assert len(ml.load_movielens(folder).ratings) == 4
    assert not (cache / "ml-100k.zip").exists()
    # a complete cached folder is returned without fetching anything
    assert ml.download_movielens("ml-100k", cache, url=(tmp_path / "gone.zip").as_uri()) == folder

    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    other = ml.download_movielens("ml-100k", tmp_path / "c2", url=archive.as_uri(),
                                  checksum=f"md5:{md5}")
    assert (other / "u.data").is_file()
    with pytest.raises(ValueError, match="checksum must be"):
        ml.download_movielens("ml-100k", tmp_path / "c3", url=archive.as_uri(), checksum="crc:1")


def test_download_trusts_the_first_checksum(tmp_path):
    cache = tmp_path / "cache"
    first = _zip_release(tmp_path)
    folder = ml.download_movielens("ml-100k", cache, url=first.as_uri())
    record = cache / "ml-100k.zip.sha256"
    assert record.read_text().strip() == hashlib.sha256(first.read_bytes()).hexdigest()
    # the same archive again passes; a different one is refused and deleted
    shutil.rmtree(folder)
    ml.download_movielens("ml-100k", cache, url=first.as_uri())
    shutil.rmtree(folder)
    changed = _zip_release(tmp_path / "v2", extra=" changed")
    with pytest.raises(ValueError, match="expected"):
        ml.download_movielens("ml-100k", cache, url=changed.as_uri())
    assert not (cache / "ml-100k.zip").exists() and not folder.exists()


def test_download_refuses_unsafe_zips(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("../outside.txt", "x")
    with pytest.raises(ValueError, match="unsafe"):
        ml.download_movielens("ml-100k", tmp_path / "cache", url=archive.as_uri())
    assert not (tmp_path / "outside.txt").exists()
    with pytest.raises(ValueError, match="unknown MovieLens release"):
        ml.download_movielens("ml-25m", tmp_path / "cache")


def test_folder_given_explicitly(tmp_path, monkeypatch):
    folder = _write_1m(tmp_path / "mine")
    assert ml.movielens_folder(folder=folder) == folder
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ml.movielens_folder(folder=tmp_path / "nowhere")
    # the environment is the settings module's business, not the library's
    monkeypatch.setenv("SEGMENTATION_MOVIELENS_DIR", str(tmp_path / "nowhere"))
    assert ml.movielens_folder(folder=folder) == folder


@pytest.fixture(scope="module")
def ml100k():
    return ml.load_movielens(SHARED)


@needs_shared
def test_shared_ml100k_sizes(ml100k):
    if ml100k.name != "ml-100k":
        pytest.skip("the configured folder is not ml-100k")
    assert len(ml100k.ratings) == 100_000
    assert ml100k.ratings["customer_id"].nunique() == len(ml100k.users) == 943
    assert ml100k.ratings["item_id"].nunique() == len(ml100k.movies) == 1682
    assert ml100k.ratings["value"].between(1, 5).all()
    # the README's collection period: 1997-09-19 to 1998-04-22
    assert ml100k.ratings["timestamp"].min() >= pd.Timestamp("1997-09-19")
    assert ml100k.ratings["timestamp"].max() < pd.Timestamp("1998-04-24")
    assert set(ml100k.users["gender"]) == {"M", "F"}
    assert len(ml100k.genres) == 19 and ml100k.genres[1] == "Action"


@needs_shared
def test_shared_ml100k_genres_match_the_raw_file(ml100k):
    # an independent parse of u.item with the csv module
    with open(SHARED / "u.item", encoding="latin-1", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="|"))
    flags = np.array([[int(v) for v in row[5:]] for row in rows])
    ids = np.array([int(row[0]) for row in rows])
    for k, genre in enumerate(ml100k.genres):
        np.testing.assert_array_equal(
            np.sort(ml.genre_items(ml100k.movies, genre)), np.sort(ids[flags[:, k] == 1])
        )
    first = np.array(ml100k.genres, dtype=object)[flags.argmax(axis=1)]
    assert (ml100k.movies.set_index("item_id").loc[ids, "category"].to_numpy() == first).all()


@needs_shared
def test_shared_ml100k_like_labels_are_balanced(ml100k):
    edges = like_edges(ml100k.ratings)
    share = float((edges["label"] == 1).mean())
    assert 0.45 < share < 0.65
    per_user = (edges["label"] == 1).groupby(edges["customer_id"]).mean()
    # a rating at or above one's own mean: every user likes something, most dislike something
    assert (per_user > 0).all() and (per_user < 1).mean() > 0.95
