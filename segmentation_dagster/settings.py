"""Every setting of the pipeline, and the ONE module that reads the environment.

Environment variables (each optional; `make` passes them through):

- SEGMENTATION_HOME: the state folder (default ``.segmentation``): DuckDB file, MLflow
  store, figures, report, models, downloads and DAGSTER_HOME.
- SEGMENTATION_SOURCE: ``synthetic`` (default), ``movielens-100k``, ``movielens-1m``, ``files``.
- SEGMENTATION_MOVIELENS_DIR: a local folder of the original MovieLens files.
- SEGMENTATION_INTERACTIONS, SEGMENTATION_ITEMS, SEGMENTATION_CUSTOMERS: the ``files`` paths.
- SEGMENTATION_SEED: the one seed behind every random choice (splits, K selection, every
  method, NMF, UNICON and torch); default 0.
- SEGMENTATION_ENGINE: where the SQL models run, ``duckdb`` (default: the state folder's
  DuckDB file) or ``spark`` (a SparkSession; needs the ``spark`` extra and Java).
- SEGMENTATION_SPARK_MASTER: the Spark master: ``local[N]`` (default ``local[2]``), a
  ``spark://host:port`` cluster or a ``sc://host:port`` Spark Connect server.
- SEGMENTATION_SPARK_CONF: further Spark settings, ``key=value`` pairs separated by commas
  (``spark.executor.memory=4g,spark.sql.shuffle.partitions=8``).
- SEGMENTATION_JOB: the job ``make run``, the daily schedule and the new-files sensor run
  (``segmentation``, ``nmf``, ``unicon``, ``case_study`` or ``all``, see automation.py);
  default ``all``. ``make run JOB=segmentation`` sets it.

Nothing else in the project calls ``os.environ``: the resources are built from these
values once (``config.build_resources``), and every path is passed on explicitly, so
resources built for different state folders can live side by side in one process.

The settings classes are Dagster resources, so every field can be changed per run in the
launchpad (``resources.<key>.config``); the keys are those of ``config.build_resources``.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import dagster as dg

# --- the environment (the only reader) ------------------------------------------------


def state_home() -> Path:
    """The state folder named by SEGMENTATION_HOME (default ``.segmentation``), absolute."""
    return Path(os.environ.get("SEGMENTATION_HOME", ".segmentation")).resolve()


def source_from_environment() -> dict[str, str]:
    """The DataSource fields that SEGMENTATION_* variables set (kind and paths)."""
    env = os.environ.get
    return {
        "kind": env("SEGMENTATION_SOURCE", "synthetic"),
        "movielens_dir": env("SEGMENTATION_MOVIELENS_DIR", ""),
        "interactions_path": env("SEGMENTATION_INTERACTIONS", ""),
        "items_path": env("SEGMENTATION_ITEMS", ""),
        "customers_path": env("SEGMENTATION_CUSTOMERS", ""),
    }


def seed_from_environment() -> int:
    value = os.environ.get("SEGMENTATION_SEED", "0")
    try:
        return int(value)
    except ValueError:
        raise ValueError(
            f"SEGMENTATION_SEED must be an integer, got {value!r}; unset it for the default 0"
        ) from None


def job_from_environment() -> str:
    """The job named by SEGMENTATION_JOB (default ``all``); automation.py checks the name."""
    return os.environ.get("SEGMENTATION_JOB", "").strip() or "all"


def engine_from_environment() -> tuple[str, dict]:
    """The engine SEGMENTATION_ENGINE names (default ``duckdb``) and its fields from
    SEGMENTATION_SPARK_MASTER and SEGMENTATION_SPARK_CONF (Spark only)."""
    name = os.environ.get("SEGMENTATION_ENGINE", "").strip().lower() or "duckdb"
    if name not in ("duckdb", "spark"):
        raise ValueError(f"SEGMENTATION_ENGINE must be duckdb or spark, got {name!r}; "
                         "unset it for the default duckdb")
    if name == "duckdb":
        return name, {}
    fields: dict = {"conf": parse_spark_conf(os.environ.get("SEGMENTATION_SPARK_CONF", ""))}
    master = os.environ.get("SEGMENTATION_SPARK_MASTER", "").strip()
    if master:
        fields["master"] = master
    return name, fields


def parse_spark_conf(text: str) -> dict[str, str]:
    """``key=value,key=value`` as a dict (SEGMENTATION_SPARK_CONF); blanks ignored."""
    conf = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"SEGMENTATION_SPARK_CONF: {part!r} is not key=value (e.g. "
                             "spark.executor.memory=4g,spark.sql.shuffle.partitions=8)")
        conf[key.strip()] = value.strip()
    return conf


def dagster_home(home: Path) -> str:
    """DAGSTER_HOME as set by the user, else ``dagster_home/`` in the state folder."""
    return os.environ.get("DAGSTER_HOME") or str(home / "dagster_home")


# --- paths in the state folder --------------------------------------------------------


def duckdb_path(home: Path) -> str:
    return str(home / "segmentation.duckdb")


def spark_warehouse(home: Path) -> str:
    """The Spark engine's tables: a Parquet folder each."""
    return str(home / "spark_warehouse")


def mlflow_tracking_uri(home: Path) -> str:
    return f"sqlite:///{home / 'mlflow.db'}"


def mlflow_artifact_root(home: Path) -> str:
    return str(home / "mlflow-artifacts")


def downloads_dir(home: Path) -> str:
    """Where MovieLens zips are downloaded when no local folder is given."""
    return str(home / "downloads")


# --- settings resources ---------------------------------------------------------------


class RandomSeed(dg.ConfigurableResource):
    """The one seed (resource key ``random_seed``): the edge split, K selection, every
    segmentation method, NMF, UNICON and torch all derive their randomness from it."""

    value: int = 0


class MethodSettings(dg.ConfigurableResource):
    """Choices of the segmentation method, shared by the assets that use them.

    ``auto`` lets ``k_selection`` choose on the validation edges (never the test edges),
    by the one-standard-error rule toward the simpler choice; any other value pins it:

    - ``pooled``: auto, global, item, category:global, category:item, features;
    - ``normalisation``: auto, entropy (Alg. 3), degree (Alg. 2);
    - ``embedding``: auto, scalar, vector (Alg. 4, per-category scores completed to
      ``category_rank``);
    - ``segment_model``: item (per-segment item rates shrunk toward the pooled item
      model), or pooled (the pooled model's own class: one rate per segment for global);
    - ``segment_strength``: the segment models' shrinkage; 0 chooses it on validation;
    - ``k``: 0 chooses K in [k_min, k_max]; ``k_candidates``: all, or kde (only the Ks
      next to the number of modes of the embedding's density, the paper's rule);
    - ``min_segment_share``: smaller segments are artefacts, folded into the nearest one.

    Scale: the choice, the baselines, NMF, the classifiers and the profiles work in
    memory on at most ``in_memory_customers`` customers (a seeded sample; 0: all). When
    the data hold more, or the engine is Spark, or ``segments_in_engine`` is set, the
    pooled model, the embeddings, the segments and the segment models of EVERY customer
    are computed by the engine's SQL (assets/embedding.py, assets/segments.py); the
    choice is then among the scalar embeddings the SQL models implement.

    The synthetic source pins the paper's setting (config.PAPER_SETTINGS).
    """

    pooled: str = "auto"
    normalisation: str = "auto"
    embedding: str = "auto"
    category_rank: int = 2
    segment_model: str = "item"
    segment_strength: float = 0.0
    k: int = 0
    k_min: int = 2
    k_max: int = 6
    k_candidates: str = "all"
    min_segment_share: float = 0.02
    test_percent: int = 20
    validation_percent: int = 10
    max_customers_for_pairwise: int = 20000
    in_memory_customers: int = 50_000
    segments_in_engine: bool = False

    def selector_options(self) -> dict:
        """SegmentationSelector's choices as these settings pin them."""
        return {
            "pooled": None if self.pooled == "auto" else [self.pooled],
            "normalisations": (("entropy", "degree") if self.normalisation == "auto"
                               else (self.normalisation,)),
            "category_ranks": {"auto": (None, self.category_rank), "scalar": (None,),
                               "vector": (self.category_rank,)}[self.embedding],
            "ks": (self.k,) if self.k else tuple(range(self.k_min, self.k_max + 1)),
            "k_candidates": "all" if self.k else self.k_candidates,
            "min_share": self.min_segment_share,
            "segment_model": self.segment_model,
            "strength_grid": (self.segment_strength,) if self.segment_strength else None,
        }


class RefreshSettings(dg.ConfigurableResource):
    """How far a refresh may drift from the previous published run before the
    ``segmentation_is_stable`` check warns (resource key ``refresh_settings``): the
    adjusted Rand index on the customers of both runs below ``min_ari``, or a segment's
    share of the customers moving by more than ``max_share_change``. The warning never
    stops a run."""

    min_ari: float = 0.8
    max_share_change: float = 0.1


class ColdStartSettings(dg.ConfigurableResource):
    """Genres to evaluate (any genre of the source) and the K range of the protocol."""

    genres: list[str] = ["Action", "Comedy", "Drama"]
    ks: list[int] = [2, 3, 4, 5]
    multi_genre: bool = True


class NMFSettings(dg.ConfigurableResource):
    """NMF choices, recorded with every fit. ``k`` overrides the rank selection."""

    k_min: int = 2
    k_max: int = 6
    n_restarts: int = 5
    loss: str = "frobenius"
    init: str = "nndsvd"
    binary: bool = True
    k: int | None = None


class UniconModelSettings(dg.ConfigurableResource):
    """The UNICON sequences and transformer (resource key ``unicon_model_settings``): used
    by customer_sequences, unicon_model and the networks of lookalike_audience.

    The default model is small (d=32, 2 layers, 2 heads, at most 15 epochs) so that
    ``make run`` stays within its budget; larger data deserve d_model=64, max_events=200.

    Every network fit (the next-item model, and the lookalike pretraining and classifier,
    each on its own) is bounded by ``max_epochs`` and by ``max_seconds`` of wall-clock
    time: at the budget it stops within a batch, keeps the best validated weights so far
    and reports ``stopped_by: budget``. The run log shows each epoch with an estimate of
    the time left.

    ``threads``: the CPU threads torch may use, capped by the cores this process may run on
    (its CPU affinity, ``os.sched_getaffinity``, and a cgroup CPU quota such as
    ``docker --cpus``); 0 takes every such core. More threads than free cores make each
    parallel operation wait for a descheduled thread (an epoch ran 10x slower next to one
    busy process): on a shared machine use 1. The load of other processes is not read,
    so a seeded run gives the same model on a quiet and on a busy machine.
    """

    max_events: int = 50
    d_model: int = 32
    n_heads: int = 2
    n_layers: int = 2
    dropout: float = 0.1
    learning_rate: float = 3e-3
    batch_size: int = 128
    max_epochs: int = 15
    max_seconds: float = 600.0
    patience: int = 3
    threads: int = 2
    # "auto": a CUDA GPU when the installed torch build sees one, else the CPU
    device: str = "auto"

    def unicon_config(self, seed: int, **overrides):
        """The training configuration: every UniconConfig field these settings share by
        name (model size, optimiser, threads, device), the run's seed, then ``overrides``."""
        # imported here: torch is heavy, and only the UNICON assets need it
        from .core.sequence.train import UniconConfig

        shared = {f.name for f in dataclasses.fields(UniconConfig)} & set(type(self).model_fields)
        fields = {name: getattr(self, name) for name in shared}
        return UniconConfig(**(fields | {"seed": seed} | overrides))


class BehaviourSegmentSettings(dg.ConfigurableResource):
    """Data-driven behaviour segments (resource key ``behaviour_segment_settings``): used
    by behaviour_segments and unicon_evaluation."""

    k_min: int = 2
    k_max: int = 8
    similarity_pairs: int = 20000
    representative_items: int = 20
    representative_radius_quantile: float = 0.5
    max_category_share: float = 0.3
    backfill_share: float = 0.2

    def k_values(self) -> tuple[int, ...]:
        """Every K from k_min to k_max."""
        return tuple(range(self.k_min, self.k_max + 1))


class LookalikeSettings(dg.ConfigurableResource):
    """The lookalike audience (resource key ``lookalike_settings``): the business rule
    (an SQL predicate over an interaction joined with its item, and a minimum count;
    empty: the source's default rule), the cutoff, the split and the training lengths.
    The network's size comes from ``unicon_model_settings``."""

    rule_filter: str = ""
    rule_min_count: int = 0
    cutoff: str = ""
    cutoff_quantile: float = 0.75
    new_customer_days: int = 7
    negatives_per_positive: float = 3.0
    validation_share: float = 0.25
    positive_history: str = "before_rule"  # or "full" (the paper: core histories as is)
    pretrain_epochs: int = 10
    # a few hundred labelled customers: small batches give the optimiser enough steps
    # (with 128, 30 epochs were ~90 steps and training stalled for some seeds)
    classifier_epochs: int = 60
    classifier_batch_size: int = 32
    classifier_patience: int = 5
    classifier_learning_rate: float = 3e-3

    def classifier_overrides(self) -> dict:
        """The UniconConfig fields of the fine-tuning that differ from the model's."""
        return {"max_epochs": self.classifier_epochs, "batch_size": self.classifier_batch_size,
                "patience": self.classifier_patience,
                "learning_rate": self.classifier_learning_rate}
