"""Read each data source into the same four tables, failing early and clearly on bad files.

interactions: customer_id, item_id, value, event, timestamp
items:        item_id, category, then numeric feature columns
customers:    customer_id, then demographic columns
truth:        customer_id, segment (synthetic data only; empty otherwise)

Ids are strings everywhere, so the tables join the same way whatever the source.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .core.sequence.synthetic import make_behaviour_dataset

INTERACTION_COLUMNS = ["customer_id", "item_id", "value", "event", "timestamp"]
LABEL_RULES = ("own_mean", "positive")


@dataclass(frozen=True)
class SourceTables:
    interactions: pd.DataFrame
    items: pd.DataFrame
    customers: pd.DataFrame
    truth: pd.DataFrame
    dataset: str
    label_rule: str  # own_mean: like = value >= the customer's mean; positive: value > 0


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
) -> SourceTables:
    if kind == "synthetic":
        tables = _synthetic(*synthetic_size, seed=seed)
    elif kind in ("movielens-100k", "movielens-1m"):
        tables = _movielens(kind, movielens_dir, cache_dir)
    elif kind == "files":
        tables = _files(interactions_path, items_path, customers_path)
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
    interactions_path: str | None, items_path: str | None, customers_path: str | None
) -> SourceTables:
    if not interactions_path:
        raise ValueError(
            "the files source needs an interactions file: set SEGMENTATION_INTERACTIONS"
        )
    interactions = read_table_file(interactions_path, ["customer_id", "item_id", "value"])
    interactions["value"] = _numeric(interactions, "value", interactions_path)
    if "event" not in interactions:
        interactions["event"] = "interaction"
    if "timestamp" in interactions:
        parsed = pd.to_datetime(interactions["timestamp"], errors="coerce")
        bad = parsed.isna() & interactions["timestamp"].notna()
        if bad.any():
            example = interactions.loc[bad, "timestamp"].iloc[0]
            raise ValueError(
                f"{interactions_path}: column 'timestamp' has {int(bad.sum())} values that are "
                f"not dates or times, e.g. {example!r}"
            )
        interactions["timestamp"] = parsed
    else:
        interactions["timestamp"] = pd.NaT
    interactions = interactions[INTERACTION_COLUMNS].assign(
        customer_id=_ids(interactions["customer_id"]), item_id=_ids(interactions["item_id"])
    )

    if items_path:
        items = read_table_file(items_path, ["item_id"])
        items["item_id"] = _ids(items["item_id"])
        if "category" not in items:
            items["category"] = None
    else:
        items = pd.DataFrame({"item_id": interactions["item_id"].dropna().unique()})
        items["category"] = None
    if customers_path:
        customers = read_table_file(customers_path, ["customer_id"])
        customers["customer_id"] = _ids(customers["customer_id"])
    else:
        customers = pd.DataFrame({"customer_id": interactions["customer_id"].dropna().unique()})
    binary = set(interactions["value"].dropna().unique()) <= {0, 1}
    label_rule = "positive" if binary else "own_mean"
    return SourceTables(interactions, items, customers, _no_truth(), "files", label_rule)


def read_table_file(path: str, required: list[str]) -> pd.DataFrame:
    """Read a CSV or Parquet file, naming the file in every error."""
    file = Path(path)
    if not file.exists():
        raise FileNotFoundError(f"input file {file} does not exist")
    if file.stat().st_size == 0:
        raise ValueError(f"input file {file} is empty")
    try:
        if file.suffix.lower() in (".parquet", ".pq"):
            frame = pd.read_parquet(file)
        else:
            frame = pd.read_csv(file)
    except pd.errors.EmptyDataError as error:
        raise ValueError(f"input file {file} is empty") from error
    if frame.empty:
        raise ValueError(f"input file {file} has a header but no rows")
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(
            f"input file {file} has no column {missing}; its columns are {list(frame.columns)}"
        )
    return frame


def _numeric(frame: pd.DataFrame, column: str, path: str) -> pd.Series:
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna() & frame[column].notna()
    if bad.any():
        examples = frame.loc[bad, column].astype(str).unique()[:3].tolist()
        raise ValueError(
            f"{path}: column {column!r} must be numeric; {int(bad.sum())} values are not, "
            f"e.g. {examples}"
        )
    return values.astype(float)


def _ids(values: pd.Series) -> pd.Series:
    """Ids as strings; missing ids stay missing (the input checks report them).

    Only a float column is read as numbers: 12.0 and 12 are one id when a CSV column
    of integers with a gap was read as float. Text ids ("007", "1e3") stay as written.
    """
    out = values.astype("string")
    if pd.api.types.is_float_dtype(values):
        integral = values.notna() & np.isclose(values.fillna(0) % 1, 0)
        out[integral] = values[integral].astype("int64").astype("string")
    return out.astype(object).where(values.notna(), None)
