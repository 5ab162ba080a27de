"""Read each data source into the same four tables, failing early and clearly on bad files.

interactions: customer_id, item_id, value, event, timestamp
items:        item_id, category, then numeric feature columns
customers:    customer_id, then demographic columns
truth:        customer_id, segment (synthetic data only; empty otherwise)

Ids are strings everywhere, exactly as the file wrote them: ``007``, ``7`` and ``7.0`` are
three customers, and ``1e3`` is not ``1000``. CSV id columns are read as text; Parquet
integer and text id columns keep their digits; a floating-point id column is refused
(its values are not ids as written). Items and customers files must share ids with the
interactions (at least ``min_id_overlap`` of the interactions' ids, and never none).

Values must be finite and within +-MAX_ABS_VALUE (sums and means of larger values would
overflow); any scale is accepted, negative included (InputRules can bound it).

Label rules (``label_rule``; the files source detects it, a user may force it): 0/1 values
are ``positive`` (like = 1); a column whose every value is the same positive number (all
1: a purchase-only log) is ``purchase`` (core.choice.is_purchase_only: every edge is a
purchase, the pooled model is the MNL); any other column is ``own_mean`` (like = a value
at least the customer's mean).

Timestamps: ISO strings or dates, or integer Unix seconds or milliseconds (a column of
integers whose largest absolute value is at least 1e11 is read as milliseconds).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

# pandas' default missing-value markers (public in its docs, private as a name)
from pandas._libs.parsers import STR_NA_VALUES

from .core.choice import is_purchase_only
from .core.sequence.synthetic import make_behaviour_dataset

INTERACTION_COLUMNS = ["customer_id", "item_id", "value", "event", "timestamp"]
LABEL_RULES = ("own_mean", "positive", "purchase")
ID_COLUMNS = ("customer_id", "item_id")
MAX_ABS_VALUE = 1e12
# Unix times at or above this are milliseconds: 1e11 seconds is the year 5138, while
# 1e11 milliseconds is March 1973
MILLISECONDS_FROM = 1e11


@dataclass(frozen=True)
class SourceTables:
    interactions: pd.DataFrame
    items: pd.DataFrame
    customers: pd.DataFrame
    truth: pd.DataFrame
    dataset: str
    # own_mean: like = value >= the customer's mean; positive: like = value > 0;
    # purchase: a purchase-only log (every value the same positive number), every row +1
    label_rule: str


def load_source(
    kind: str,
    movielens_dir: str | None = None,
    cache_dir: Path | None = None,
    interactions_path: str | None = None,
    items_path: str | None = None,
    customers_path: str | None = None,
    synthetic_size: tuple[int, int, int] = (1500, 300, 3),
    label_rule: str | None = None,
    seed: int = 0,
    min_id_overlap: float = 0.0,
) -> SourceTables:
    if kind == "synthetic":
        tables = _synthetic(*synthetic_size, seed=seed)
    elif kind in ("movielens-100k", "movielens-1m"):
        tables = _movielens(kind, movielens_dir, cache_dir)
    elif kind == "files":
        tables = _files(interactions_path, items_path, customers_path, min_id_overlap)
    else:
        raise ValueError(
            f"unknown source {kind!r} (SEGMENTATION_SOURCE); choose synthetic, "
            "movielens-100k, movielens-1m or files"
        )
    rule = label_rule or tables.label_rule
    if rule not in LABEL_RULES:
        raise ValueError(f"label rule must be one of {LABEL_RULES}, got {rule!r}")
    return SourceTables(
        tables.interactions, tables.items, tables.customers, tables.truth, tables.dataset, rule
    )


def _synthetic(n_customers: int, n_items: int, n_segments: int, seed: int) -> SourceTables:
    data = make_behaviour_dataset(n_customers, n_items, n_segments, seed=seed)
    interactions = data.interactions.assign(
        customer_id=lambda d: d["customer_id"].astype(str),
        item_id=lambda d: d["item_id"].astype(str),
    )
    items = data.items.assign(item_id=data.items["item_id"].astype(str))
    customers = data.customers.assign(customer_id=data.customers["customer_id"].astype(str))
    truth = data.truth.assign(customer_id=data.truth["customer_id"].astype(str))
    return SourceTables(interactions, items, customers, truth, "synthetic", "positive")


def _movielens(kind: str, folder: str | None, cache_dir: Path | None) -> SourceTables:
    from .core.movielens import detect_release, download_movielens, load_movielens

    name = kind.replace("movielens-", "ml-")
    if folder:
        release = detect_release(folder)
        if release != name:
            raise ValueError(
                f"SEGMENTATION_MOVIELENS_DIR={folder} holds {release}, not {name} "
                f"(SEGMENTATION_SOURCE={kind})"
            )
        data = load_movielens(folder)
    else:
        data = load_movielens(download_movielens(name, cache_dir))
    ratings = data.ratings
    interactions = pd.DataFrame(
        {
            "customer_id": ratings["customer_id"].astype(str),
            "item_id": ratings["item_id"].astype(str),
            "value": ratings["value"].astype(float),
            "event": "rating",
            "timestamp": pd.to_datetime(ratings["timestamp"]),
        }
    )
    items = data.movies.assign(item_id=data.movies["item_id"].astype(str))
    customers = data.users.assign(customer_id=data.users["customer_id"].astype(str))
    return SourceTables(interactions, items, customers, _no_truth(), name, "own_mean")


def _no_truth() -> pd.DataFrame:
    return pd.DataFrame({"customer_id": pd.Series(dtype=str), "segment": pd.Series(dtype=int)})


def _files(
    interactions_path: str | None, items_path: str | None, customers_path: str | None,
    min_id_overlap: float = 0.0,
) -> SourceTables:
    if not interactions_path:
        raise ValueError(
            "the files source needs an interactions file: set SEGMENTATION_INTERACTIONS"
        )
    interactions = read_table_file(interactions_path, ["customer_id", "item_id", "value"])
    interactions["value"] = _numeric(interactions, "value", interactions_path)
    if "event" not in interactions:
        interactions["event"] = pd.Series("interaction", index=interactions.index, dtype=TEXT)
    if "timestamp" in interactions:
        interactions["timestamp"] = parse_timestamps(interactions["timestamp"],
                                                     interactions_path)
    else:
        interactions["timestamp"] = pd.NaT
    interactions = interactions[INTERACTION_COLUMNS]

    if items_path:
        items = read_table_file(items_path, ["item_id"])
        _check_overlap(interactions, items, "item_id", interactions_path, items_path,
                       min_id_overlap)
        if "category" not in items:
            items["category"] = None
    else:
        items = pd.DataFrame({"item_id": interactions["item_id"].dropna().unique()})
        items["category"] = None
    if customers_path:
        customers = read_table_file(customers_path, ["customer_id"])
        _check_overlap(interactions, customers, "customer_id", interactions_path,
                       customers_path, min_id_overlap)
    else:
        customers = pd.DataFrame({"customer_id": interactions["customer_id"].dropna().unique()})
    binary = set(interactions["value"].dropna().unique()) <= {0, 1}
    label_rule = "positive" if binary else "own_mean"
    if is_purchase_only(interactions["value"].to_numpy()):
        # every value the same positive number (all 1, all 5): only WHICH items were
        # chosen is known; a constant 0 or negative column stays refused by the checks
        label_rule = "purchase"
    return SourceTables(interactions, items, customers, _no_truth(), "files", label_rule)


def _check_overlap(interactions: pd.DataFrame, other: pd.DataFrame, column: str,
                   interactions_path: str, other_path: str, min_share: float) -> None:
    """Refuse an items or customers file that shares (almost) no ids with the
    interactions: the usual cause is ids written differently (``7`` against ``007``)."""
    used = pd.Series(interactions[column].dropna().unique())
    if used.empty:
        return  # missing ids are the input checks' to report
    found = _isin(used, other[column].dropna())
    share = float(found.mean())
    if share > 0 and share >= min_share:
        return
    ours = used[~found].head(3).tolist()
    theirs = other[column].dropna().head(3).tolist()
    raise ValueError(
        f"{other_path}: column {column!r} shares {share:.0%} of the ids used in "
        f"{interactions_path} (at least {max(min_share, 0):.0%} and never none are needed); "
        f"ids are compared exactly as written, e.g. {ours} in the interactions against "
        f"{theirs} in {Path(other_path).name}. Write the ids the same way in both files."
    )


def _isin(values: pd.Series, known: pd.Series) -> np.ndarray:
    """Which ``values`` are among ``known``, both ids as text. pyarrow's hash set: pandas'
    isin on Arrow strings builds a Python list of the values (50 s for 4M items)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    def arrow(series: pd.Series) -> pa.Array:
        return pa.array(series.astype(TEXT).array)

    return pc.is_in(arrow(values), value_set=arrow(known)).to_numpy(zero_copy_only=False)


def parse_timestamps(values: pd.Series, path: str) -> pd.Series:
    """ISO strings or dates, or integer Unix seconds or milliseconds (see the module
    docstring); anything else is refused, naming the file and an example."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return values
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.notna().any() and (numbers.notna() == values.notna()).all():
        finite = numbers.dropna()
        if not np.isfinite(finite).all() or not np.allclose(finite % 1, 0):
            raise ValueError(
                f"{path}: column 'timestamp' holds numbers that are not whole Unix seconds "
                f"or milliseconds, e.g. {finite[(finite % 1) != 0].head(1).tolist()}; write "
                "integer Unix times or ISO dates (2025-01-31 or 2025-01-31T08:00:00)"
            )
        unit = "ms" if finite.abs().max() >= MILLISECONDS_FROM else "s"
        return pd.to_datetime(numbers, unit=unit)
    parsed = pd.to_datetime(values, errors="coerce", format="mixed")
    bad = parsed.isna() & values.notna()
    if bad.any():
        example = values[bad].iloc[0]
        raise ValueError(
            f"{path}: column 'timestamp' has {int(bad.sum())} values that are not dates or "
            f"times, e.g. {example!r}; write ISO dates (2025-01-31 or 2025-01-31T08:00:00) "
            "or integer Unix seconds or milliseconds"
        )
    return parsed


def read_table_file(path: str, required: list[str]) -> pd.DataFrame:
    """Read a CSV or Parquet file, naming the file in every error; id columns as text,
    exactly as written."""
    file = Path(path)
    if not file.exists():
        raise FileNotFoundError(f"input file {file} does not exist")
    if not file.is_file():
        raise ValueError(f"input file {file} is a directory, not a file: name a CSV or "
                         "Parquet file")
    if file.stat().st_size == 0:
        raise ValueError(f"input file {file} is empty")
    try:
        if file.suffix.lower() in (".parquet", ".pq"):
            frame = _read_parquet(file)
        else:
            frame = _read_csv(file)
    except pd.errors.EmptyDataError as error:
        raise ValueError(f"input file {file} is empty") from error
    if frame.empty:
        raise ValueError(f"input file {file} has a header but no rows")
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(
            f"input file {file} has no column {missing}; its columns are {list(frame.columns)}"
        )
    for column in ID_COLUMNS:
        if column in frame:
            frame[column] = _ids(frame[column], file, column)
    return frame


# Text columns stay Arrow strings: a Python object per cell would cost most of the time of
# reading, checking and writing a log of millions of rows (10x on 5M rows), and DuckDB
# reads Arrow strings without copying them one by one
TEXT = pd.StringDtype("pyarrow")


def _read_parquet(file: Path) -> pd.DataFrame:
    """A Parquet file with its text columns as Arrow-backed strings."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    text = {pa.string(): TEXT, pa.large_string(): TEXT, pa.string_view(): TEXT}
    return pq.read_table(file).to_pandas(types_mapper=text.get)


def _read_csv(file: Path) -> pd.DataFrame:
    """A CSV with its id columns as text, exactly as written: read as numbers, 007 and 7
    would merge and 1e3 become 1000. In an id column only an empty cell is missing (an id
    may be "NA" or "None"); the other columns keep pandas' usual missing markers."""
    columns = pd.read_csv(file, nrows=0).columns
    default_missing = sorted(STR_NA_VALUES)
    missing = {c: ([""] if c in ID_COLUMNS else default_missing) for c in columns}
    return pd.read_csv(file, dtype={c: "string" for c in ID_COLUMNS if c in columns},
                       keep_default_na=False, na_values=missing)


def _numeric(frame: pd.DataFrame, column: str, path: str) -> pd.Series:
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna() & frame[column].notna()
    if bad.any():
        examples = frame.loc[bad, column].astype(str).unique()[:3].tolist()
        raise ValueError(
            f"{path}: column {column!r} must be numeric; {int(bad.sum())} values are not, "
            f"e.g. {examples}"
        )
    values = values.astype(float)
    out_of_range = values.notna() & ~(values.abs() <= MAX_ABS_VALUE)  # inf and nan too
    if out_of_range.any():
        examples = values[out_of_range].unique()[:3].tolist()
        raise ValueError(
            f"{path}: column {column!r} has {int(out_of_range.sum())} values that are not "
            f"finite numbers within +-{MAX_ABS_VALUE:g}, e.g. {examples}; remove them or "
            "rescale the column"
        )
    return values


def _ids(values: pd.Series, file: Path, column: str) -> pd.Series:
    """Ids as text exactly as written; missing ids stay missing (the input checks report
    them). A floating-point column (Parquet) is refused: 7.0 is not an id as written."""
    if pd.api.types.is_float_dtype(values):
        raise ValueError(
            f"input file {file}: column {column!r} holds floating-point numbers "
            f"(e.g. {values.dropna().head(2).tolist()}); ids must be integers or text. "
            "Write the column as integers or strings."
        )
    return values.astype(TEXT)
