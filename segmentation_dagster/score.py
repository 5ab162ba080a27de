"""Segments for customers the last fit never saw, from the stored models, without a refit.

A fitted run stores everything needed to place a new customer (``customer_segments``
writes them; the published release carries them):

- ``source_info.label_rule``: how raw values become likes and dislikes;
- ``chosen_segmentation``: the pooled model, normalisation and embedding kind;
- ``pooled_model_items`` / ``pooled_model_summary``: the pooled model, as one probability
  per item of the fitted item universe (a like-probability, or for a purchase-only log
  the choice probability pi_j);
- ``segment_centres``: the clustering's centres (one row per cluster, before small
  clusters were folded into large ones) and the stable segment id each cluster maps to.

A customer is embedded under the stored pooled model exactly as the fitted customers
were (core.embedding.embed, or core.choice.choice_embedding for a purchase-only log),
goes to the nearest stored centre, and takes that cluster's stable id: the same steps
as ``SegmentedModelEmbedding.assign`` / ``SegmentedPurchaseModel.assign``. Edges to items
the fit never saw are dropped (the stored model has no probability for them); a customer
left with none gets no segment. Not supported yet: the per-category vector embedding
(its low-rank factors are not stored); such a release raises a clear error when asked to
assign anyone.

Command line, without Dagster, from the published release of a state folder::

    python -m segmentation_dagster.score INTERACTIONS_FILE [--out FILE] [--home STATE]

INTERACTIONS_FILE is a CSV or Parquet file with customer_id, item_id, value and
optionally event and timestamp (the ``files`` source's format). Every customer in it is
assigned; ``--out`` writes the assignments as CSV or Parquet (by the suffix).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from .core.choice import MNLPooledModel, choice_embedding
from .core.clustering import as_2d
from .core.embedding import embed
from .core.graph import PreferenceGraph
from .core.pooled import StoredPooledModel
from .resources import model_statement

STORED_TABLES = ("source_info", "chosen_segmentation", "pooled_model_items",
                 "pooled_model_summary", "segment_centres", "customer_segments")
ASSIGNMENT_COLUMNS = ["customer_id", "segment", "segment_name", "edges", "known_edges"]


@dataclass(frozen=True)
class StoredSegmentation:
    """The models of one fitted run, read back from its DuckDB tables (see the module
    doc). ``centres`` is (clusters, dimension); ``cluster_segment`` the stable id of each
    cluster."""

    fitted_run_id: str
    label_rule: str
    pooled: str
    normalisation: str
    category_rank: int | None
    item_ids: np.ndarray
    item_proba: np.ndarray
    alpha_pool: float
    centres: np.ndarray
    cluster_segment: np.ndarray

    @classmethod
    def read(cls, con: duckdb.DuckDBPyConnection) -> StoredSegmentation:
        """Read the stored models from an open connection: the working store, or a
        release's database opened read-only."""
        present = set(con.execute(
            "SELECT table_name FROM duckdb_tables() "
            "WHERE database_name = current_database() AND schema_name = 'main'"
        ).df()["table_name"])
        missing = [t for t in STORED_TABLES if t not in present]
        if missing:
            raise ValueError(
                f"the fitted run's stored models are incomplete: no table {missing}. They are "
                "written by customer_segments (segment_centres) and published with it; run "
                "the segmentation job once more to store them"
            )

        def table(sql: str) -> pd.DataFrame:
            return con.execute(sql).df()

        spec = table("SELECT * FROM chosen_segmentation").iloc[0]
        items = table("SELECT item_id, p_like FROM pooled_model_items ORDER BY item_id")
        centres = table("SELECT cluster, segment, centre FROM segment_centres "
                        "ORDER BY cluster")
        run_ids = table("SELECT DISTINCT run_id FROM customer_segments")["run_id"]
        return cls(
            fitted_run_id=str(run_ids.iloc[0]) if len(run_ids) else "",
            label_rule=str(table("SELECT label_rule FROM source_info").iloc[0, 0]),
            pooled=str(spec["pooled"]),
            normalisation=str(spec["normalisation"]),
            category_rank=None if pd.isna(spec["category_rank"]) else int(spec["category_rank"]),
            item_ids=items["item_id"].astype(str).to_numpy(dtype=object),
            item_proba=items["p_like"].to_numpy(dtype=float),
            alpha_pool=float(table("SELECT alpha_pool FROM pooled_model_summary")
                             .iloc[0, 0]),
            centres=np.array([np.asarray(c, dtype=float) for c in centres["centre"]]),
            cluster_segment=centres["segment"].to_numpy(dtype=np.int64),
        )

    @property
    def purchase_log(self) -> bool:
        return self.label_rule == "purchase"

    def embed(self, graph: PreferenceGraph) -> np.ndarray:
        """The customers' embedding under the stored pooled model ((m,) scalar)."""
        if self.category_rank is not None:
            raise ValueError(
                "assigning new customers is not supported yet for the per-category vector "
                f"embedding (category_rank {self.category_rank}): its low-rank factors are "
                "not stored. Refit (run the segmentation job), or pin method_settings."
                "embedding to scalar"
            )
        if self.purchase_log:
            # the fitted MNL's attributes, rebuilt from its stored choice probabilities:
            # choice_embedding reads item_proba_, entropy_ and n_items_ only
            pooled = MNLPooledModel()
            pooled.item_proba_ = self.item_proba / self.item_proba.sum()
            p = pooled.item_proba_[pooled.item_proba_ > 0]
            pooled.entropy_ = float(-(p * np.log(p)).sum())
            pooled.n_items_ = len(self.item_proba)
            return choice_embedding(graph, pooled, self.normalisation)
        return embed(graph, StoredPooledModel(self.item_proba, self.alpha_pool),
                     self.normalisation)

    def nearest(self, embedding: np.ndarray) -> np.ndarray:
        """Stable segment id of the nearest stored centre (squared distance, as
        SegmentClusterer.predict and ModelEmbeddingSegmenter.assign)."""
        x = as_2d(embedding)
        distances = ((x[:, None, :] - self.centres[None]) ** 2).sum(axis=2)
        return self.cluster_segment[distances.argmin(axis=1)]

    def assign(self, edges: pd.DataFrame) -> pd.DataFrame:
        """Segments of the customers of labelled ``edges`` (customer_id, item_id, label
        +1/-1): one row per customer, ASSIGNMENT_COLUMNS; ``segment`` is missing for a
        customer none of whose items the fit knew."""
        edges = edges.assign(customer_id=edges["customer_id"].astype(str),
                             item_id=edges["item_id"].astype(str))
        counts = edges.groupby("customer_id").size()
        known = edges[edges["item_id"].isin(pd.Index(self.item_ids))]
        known_counts = known.groupby("customer_id").size().reindex(counts.index, fill_value=0)
        segment = pd.Series(pd.NA, index=counts.index, dtype="Int64")
        if len(known):
            if len(self.centres) == 1:  # K = 1: one segment, nothing to embed
                segment[known_counts > 0] = int(self.cluster_segment[0])
            else:
                graph = PreferenceGraph.from_edges(known, item_ids=self.item_ids)
                segment[graph.customer_ids] = self.nearest(self.embed(graph))
        frame = pd.DataFrame({
            "customer_id": counts.index.astype(str), "segment": segment.to_numpy(),
            "edges": counts.to_numpy(dtype=np.int64),
            "known_edges": known_counts.to_numpy(dtype=np.int64),
        })
        frame["segment_name"] = segment_names(frame["segment"])
        return frame[ASSIGNMENT_COLUMNS].reset_index(drop=True)


def segment_names(segments: pd.Series) -> pd.Series:
    """'segment <stable id>', as the exports name them; missing stays missing."""
    names = "segment " + segments.astype("Int64").astype("string")
    return names.astype("string")


def label_edges(interactions: pd.DataFrame, label_rule: str) -> pd.DataFrame:
    """The preference edges of raw interactions (customer_id, item_id, value, event,
    timestamp) under ``label_rule``: the pipeline's own SQL model
    (dbt_like_sql/preference_edges.sql), run on an in-memory DuckDB, so a file is labelled
    exactly as the pipeline labels its source."""
    with duckdb.connect() as con:
        con.register("raw_interactions", interactions)
        con.execute(*model_statement("preference_edges", {"label_rule": label_rule}))
        return con.execute("SELECT customer_id, item_id, label FROM preference_edges").df()


def read_interactions(path: str) -> pd.DataFrame:
    """An interactions file in the ``files`` source's format, read and checked as the
    pipeline reads it."""
    from .sources import INTERACTION_COLUMNS, _numeric, parse_timestamps, read_table_file

    frame = read_table_file(path, ["customer_id", "item_id", "value"])
    frame["value"] = _numeric(frame, "value", path)
    if "event" not in frame:
        frame["event"] = "interaction"
    frame["timestamp"] = (parse_timestamps(frame["timestamp"], path) if "timestamp" in frame
                          else pd.NaT)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"])
    return frame[INTERACTION_COLUMNS].dropna(subset=["customer_id", "item_id", "value"])


def score_file(interactions_path: str, home: Path) -> tuple[pd.DataFrame, StoredSegmentation,
                                                            pd.DataFrame]:
    """Assign every customer of an interactions file under the published release of
    ``home``; returns (assignments, the stored models, the published segments)."""
    from .publishing import published_database

    database = published_database(home)
    if not database.exists():
        raise FileNotFoundError(
            f"no published segmentation in {home} (no {database}): run the segmentation "
            "job first (make run), or point --home at the state folder that has one"
        )
    with duckdb.connect(str(database.resolve()), read_only=True) as con:
        stored = StoredSegmentation.read(con)
        published = con.execute("SELECT customer_id, segment FROM customer_segments").df()
    interactions = read_interactions(interactions_path)
    assignments = stored.assign(label_edges(interactions, stored.label_rule))
    assignments["fitted_run_id"] = stored.fitted_run_id
    assignments["assigned_at"] = datetime.now(UTC).replace(tzinfo=None)
    return assignments, stored, published


def summary(assignments: pd.DataFrame, published: pd.DataFrame, stored: StoredSegmentation,
            out: Path | None) -> str:
    """The few lines the command prints."""
    assigned = assignments["segment"].notna()
    known = assignments.merge(published, on="customer_id", how="inner",
                              suffixes=("", "_published"))
    lines = [
        f"scored {len(assignments)} customers under the models of fitted run "
        f"{stored.fitted_run_id} (no refit)",
        f"  assigned: {int(assigned.sum())}; without any item the fit knew: "
        f"{int((~assigned).sum())}",
        f"  edges to items the fit never saw, ignored: "
        f"{int((assignments['edges'] - assignments['known_edges']).sum())}",
    ]
    if len(known):
        same = int((known["segment"] == known["segment_published"]).sum())
        lines.append(f"  already in the published segmentation: {len(known)} "
                     f"({same} in the same segment)")
    sizes = assignments.loc[assigned, "segment"].value_counts().sort_index()
    lines.append("  segment sizes: " + ", ".join(f"{int(s)}: {int(n)}" for s, n in sizes.items()))
    if out is not None:
        lines.append(f"  written to {out}")
    return "\n".join(lines)


def write_assignments(frame: pd.DataFrame, out: Path) -> None:
    """CSV or Parquet by the suffix, written then renamed (a reader never sees half)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    if out.suffix.lower() in (".parquet", ".pq"):
        frame.to_parquet(partial, index=False)
    elif out.suffix.lower() == ".csv":
        frame.to_csv(partial, index=False)
    else:
        raise ValueError(f"--out {out}: name a .csv or .parquet file")
    partial.replace(out)


def main(argv: list[str] | None = None) -> int:
    from . import settings

    parser = argparse.ArgumentParser(
        prog="python -m segmentation_dagster.score",
        description="Assign the customers of an interactions file to the published "
                    "segments, from the stored models, without a refit.")
    parser.add_argument("interactions", help="CSV or Parquet: customer_id, item_id, value "
                                             "[, event, timestamp]")
    parser.add_argument("--out", type=Path, help="write the assignments (.csv or .parquet)")
    parser.add_argument("--home", type=Path,
                        help="the state folder (default SEGMENTATION_HOME or .segmentation)")
    args = parser.parse_args(argv)
    home = (args.home or settings.state_home()).resolve()
    try:
        assignments, stored, published = score_file(args.interactions, home)
        if args.out is not None:
            write_assignments(assignments, args.out)
    except (FileNotFoundError, ValueError) as error:
        print(f"score: {error}", file=sys.stderr)
        return 1
    print(summary(assignments, published, stored, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
