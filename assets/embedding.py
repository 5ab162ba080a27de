"""The choice of the segmentation (pooled model, normalisation, embedding, K), the pooled
model, and the customer embeddings."""

import dagster as dg
import mlflow
import numpy as np
import pandas as pd

from segmentation_dagster.core.choice import (
    PURCHASE_POOLED,
    TINY,
    MNLPooledModel,
    PurchaseSelector,
    purchase_embedding,
)
from segmentation_dagster.core.clustering import kde_modes
from segmentation_dagster.core.embedding import embed
from segmentation_dagster.core.plots import embedding_density, selection_chart
from segmentation_dagster.core.pooled import (
    StoredPooledModel,
    edge_log_likelihood,
    make_pooled_model,
)
from segmentation_dagster.core.segmenters import ModelEmbeddingSegmenter
from segmentation_dagster.core.selection import SegmentationSelector
from segmentation_dagster.core.value_segments import engine_selector_options
from segmentation_dagster.core.vector_scale import SampledLowRankEmbedding, pivot_scores
from segmentation_dagster.engine import SQLEngine
from segmentation_dagster.resources import DuckDBStore, MLflowTracker, StateFolder
from segmentation_dagster.settings import MethodSettings, RandomSeed

from .common import (
    chosen_spec,
    figure_metadata,
    inline_chart,
    inline_density,
    is_purchase_log,
    load_split_graphs,
    segments_in_engine,
    table_metadata,
    usable_item_features,
)

K_SELECTION_EXPERIMENT = "k_selection"
# the prior pseudo-edges of the pooled item model (core.pooled.ItemBernoulli's default)
POOLED_PRIOR_STRENGTH = 2.0
# customers drawn for the embedding's density figure and modes when there are more
DENSITY_SAMPLE = 20_000


@dg.asset(deps=["edge_split"], group_name="graph", kinds={"sql"})
def edge_sample(
    duckdb: DuckDBStore, engine: SQLEngine, method_settings: MethodSettings,
    random_seed: RandomSeed,
) -> dg.MaterializeResult:
    """The edges of the customers the in-memory methods use (dbt_like_sql/edge_sample.sql):
    all of them, or a seeded sample of ``in_memory_customers`` when there are more.

    It also decides where the segmentation of every customer is computed
    (``edge_sample_info.in_engine``): in memory when every customer is in the sample and
    the engine is DuckDB, else by the engine's SQL models."""
    limit = method_settings.in_memory_customers or 2**62
    rows = engine.run_model("edge_sample", {"seed": random_seed.value,
                                            "sample_customers": limit})
    engine.copy_to_store(duckdb, "edge_sample")
    counts = engine.query(
        "SELECT (SELECT count(DISTINCT customer_id) FROM edge_split) AS customers, "
        "(SELECT count(DISTINCT customer_id) FROM edge_sample) AS sampled").iloc[0]
    customers, sampled = int(counts["customers"]), int(counts["sampled"])
    in_engine = (engine.name != "duckdb" or method_settings.segments_in_engine
                 or sampled < customers)
    duckdb.write_table("edge_sample_info", pd.DataFrame({
        "customers": [customers], "sampled_customers": [sampled], "engine": [engine.name],
        "in_engine": [in_engine]}))
    return dg.MaterializeResult(metadata={
        "dagster/row_count": rows, "customers": customers, "sampled_customers": sampled,
        "engine": engine.name,
        "segments_computed": "by the engine (SQL)" if in_engine else "in memory",
    })


@dg.asset(deps=[edge_sample, "raw_items"], group_name="embedding",
          kinds={"python", "duckdb", "mlflow"})
def k_selection(
    context: dg.AssetExecutionContext,
    duckdb: DuckDBStore,
    mlflow_tracker: MLflowTracker,
    method_settings: MethodSettings,
    random_seed: RandomSeed,
    state_folder: StateFolder,
) -> dg.MaterializeResult:
    """Choose the pooled model, the normalisation, the embedding (scalar or per category)
    and K on the VALIDATION edges: every candidate segments the training customers, its
    per-segment models score the validation edges, and the simplest candidate within one
    standard error of the best wins (core.selection). Settings pin any choice.

    The table shows every candidate on one stated scale (``scale``) with its standard
    error and gap to the best; each candidate is an MLflow run, the chosen one tagged.

    A purchase-only log (label rule ``purchase``) is chosen the same way among the MNL
    choice models (core.choice.PurchaseSelector): pooled ``mnl`` or per category
    ``mnl:category`` (a pinned ``pooled`` setting naming a category model pins the
    latter, any other the former), scored by the validation log-likelihood of the
    held-out purchases; the segment model is then ``choice``.

    When the engine segments every customer (edge_sample), the choice runs on the sample
    and among the candidates the SQL models implement (scalar embeddings of the global,
    per-category and per-item pooled models)."""
    split = load_split_graphs(duckdb)
    in_engine = segments_in_engine(duckdb)
    selector, segment_model = fit_selector(duckdb, split, method_settings, random_seed.value,
                                           in_engine)
    table = selector.table_.assign(k=selector.table_["n_clusters"])
    duckdb.write_table("k_selection", table)
    duckdb.write_table("chosen_segmentation", pd.DataFrame([{
        "pooled": selector.spec_.pooled, "normalisation": selector.spec_.normalisation,
        "category_rank": selector.spec_.category_rank, "k": selector.spec_.n_segments,
        "segment_model": segment_model, "strength": selector.strength_,
        "min_share": method_settings.min_segment_share, "in_engine": in_engine,
    }]).astype({"category_rank": "Int64"}))
    figure, path = figure_metadata(selection_chart(table), "k_selection",
                                   state_folder.folder("figures"))
    links = log_candidates(mlflow_tracker, context, table, path)
    chosen = table[table["chosen"]].iloc[0]
    positions = list(table.index)
    return dg.MaterializeResult(metadata={
        "chosen_k": int(chosen["k"]),
        "chosen": str(chosen["candidate"]),
        "chosen_score": float(chosen["score"]),
        "candidates": len(table),
        "scale": str(table["scale"].iloc[0]),
        "scores": table_metadata(table[["candidate", "score", "se", "gap_to_best", "eligible",
                                        "chosen", "note"]], 40),
        # inline (short SVG markdown shows without a click); the full figure behind one
        "score_by_candidate": inline_chart(
            "validation log-likelihood per customer by K (+-1 SE; red: chosen)",
            [str(k) for k in table["k"]], list(table["score"]), list(table["se"]),
            marked=positions.index(chosen.name)),
        "score_by_candidate_figure": figure,
        "mlflow_run": dg.MetadataValue.url(links[chosen["candidate"]]),
        "mlflow_experiment": dg.MetadataValue.url(mlflow_tracker.experiment_link(
            K_SELECTION_EXPERIMENT, ["validation_log_likelihood", "standard_error",
                                     "gap_to_best"], context)),
    })


def fit_selector(duckdb: DuckDBStore, split, method_settings: MethodSettings, seed: int,
                 in_engine: bool = False):
    """The fitted selector of this log's kind, and the segment model it implies."""
    options = method_settings.selector_options()
    if in_engine and is_purchase_log(duckdb):
        info = duckdb.read_table("edge_sample_info").iloc[0]
        raise ValueError(
            f"purchase-only logs are segmented in memory, and this one has "
            f"{info['customers']} customers (in_memory_customers="
            f"{method_settings.in_memory_customers}) on the {info['engine']} engine. Raise "
            "method_settings.in_memory_customers to at least the number of customers "
            "(or 0 for all), on the duckdb engine.")
    if in_engine:
        options = engine_selector_options(options)
    if is_purchase_log(duckdb):
        selector = PurchaseSelector(**purchase_selector_options(options), random_state=seed)
        return selector.fit(split.train, validation=split.validation), "choice"
    # the engine has no item-feature model (engine_selector_options leaves none to try)
    features = None if in_engine else usable_item_features(duckdb, split.train.item_ids)
    selector = SegmentationSelector(**options, item_features=features, random_state=seed)
    return selector.fit(split.train, validation=split.validation), method_settings.segment_model


def purchase_selector_options(options: dict) -> dict:
    """MethodSettings.selector_options() for PurchaseSelector: a pinned pooled model
    maps to its choice-model counterpart (per category or not); the item-level segment
    model setting has no purchase counterpart (the segment model is the choice model)."""
    pooled = options["pooled"]
    if pooled is not None:
        pooled = [p if p in PURCHASE_POOLED else
                  ("mnl:category" if p.startswith("category") else "mnl") for p in pooled]
    kept = ("normalisations", "category_ranks", "ks", "k_candidates", "min_share",
            "strength_grid")
    return {"pooled": pooled, **{name: options[name] for name in kept}}


def log_candidates(mlflow_tracker: MLflowTracker, context: dg.AssetExecutionContext,
                   table: pd.DataFrame, figure_path) -> dict[str, str]:
    """One MLflow run per candidate (the figure beside the chosen one's numbers)."""
    links = {}
    for row in table.itertuples(index=False):
        tags = {"chosen": str(bool(row.chosen)), "eligible": str(bool(row.eligible))}
        with mlflow_tracker.run(K_SELECTION_EXPERIMENT, row.candidate, context, tags) as run:
            mlflow.log_params({"pooled": row.pooled, "normalisation": row.normalisation,
                               "embedding": row.embedding, "k": row.k,
                               "segments_kept": row.n_segments})
            metrics = {"validation_log_likelihood": row.score, "standard_error": row.se,
                       "gap_to_best": row.gap_to_best, "strength": row.strength,
                       "smallest_segment_share": row.smallest_segment_share}
            mlflow.log_metrics({m: float(v) for m, v in metrics.items() if np.isfinite(v)})
            if row.chosen:
                mlflow.log_artifact(str(figure_path))
            links[row.candidate] = mlflow_tracker.run_link(run)
    return links


@dg.asset(deps=[k_selection], group_name="embedding", kinds={"python", "sql"})
def pooled_model(duckdb: DuckDBStore, engine: SQLEngine) -> dg.MaterializeResult:
    """ONE model of the chosen class fitted to every customer's training edges pooled
    (step 1 of the method).

    Stored as each item's like-probability in ``pooled_model_items`` and a one-row
    ``pooled_model_summary``, so embeddings and new customers use it without a refit.

    Purchase-only logs: the pooled model is the MNL choice model (``mnl``, or
    ``mnl:category``: P(category) P(item | category)), and the column ``p_like`` holds
    each item's CHOICE probability pi_j (summing to 1 over the items), not a
    like-probability; ``alpha_pool`` is 1 (every edge is a purchase) and the validation
    log-likelihood is the mean log pi_j of the validation purchases.

    When the engine segments every customer, the engine fits it on every training edge
    (dbt_like_sql/pooled_item_terms.sql, the item terms the embedding sums).
    """
    spec = chosen_spec(duckdb)
    if spec["in_engine"]:
        return pooled_model_in_engine(duckdb, engine, spec["pooled"])
    split = load_split_graphs(duckdb)
    rows, cols, labels = split.validation
    if is_purchase_log(duckdb):
        choice = MNLPooledModel(by_category=spec["pooled"] == "mnl:category").fit(split.train)
        item_proba, alpha_pool = choice.item_proba_, 1.0
        validation_ll = float(np.log(np.maximum(choice.item_proba_[cols], TINY)).mean())
    else:
        kwargs = {}
        if "features" in spec["pooled"]:
            kwargs["item_features"] = usable_item_features(duckdb, split.train.item_ids)
        model = make_pooled_model(spec["pooled"], **kwargs).fit(split.train)
        item_proba = model.predict_proba(np.arange(split.train.n_items))
        alpha_pool = float(model.alpha_pool_)
        validation_ll = float(edge_log_likelihood(model.predict_proba(cols), labels).mean())
    items = pd.DataFrame({"item_id": split.train.item_ids, "p_like": item_proba})
    duckdb.write_table("pooled_model_items", items)
    duckdb.write_table("pooled_model_summary", pd.DataFrame(
        {"pooled": [spec["pooled"]], "alpha_pool": [alpha_pool]}))
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(items),
            "pooled_model": spec["pooled"],
            "alpha_pool": alpha_pool,
            "validation_mean_log_likelihood": validation_ll,
            "train_edges": split.train.n_edges,
        }
    )


def pooled_model_in_engine(duckdb: DuckDBStore, engine: SQLEngine,
                           pooled: str) -> dg.MaterializeResult:
    """The pooled model fitted by the engine on every customer's training edges, its
    item probabilities copied into the store (for new customers and publishing)."""
    rows = engine.run_model("pooled_item_terms", {"pooled": pooled,
                                                  "prior_strength": POOLED_PRIOR_STRENGTH})
    summary = engine.query(
        "SELECT max(alpha_pool) AS alpha_pool, sum(train_edges) AS train_edges "
        "FROM pooled_item_terms").iloc[0]
    validation_ll = float(engine.query(
        "SELECT avg(CASE WHEN s.label = 1 THEN -t.like_nll ELSE -t.dislike_nll END) AS ll "
        "FROM edge_split AS s JOIN pooled_item_terms AS t ON s.item_id = t.item_id "
        "WHERE s.split = 'validation'").iloc[0, 0])
    engine.copy_to_store(duckdb, "pooled_item_terms")
    duckdb.execute("CREATE OR REPLACE TABLE pooled_model_items AS "
                   "SELECT item_id, p_like FROM pooled_item_terms")
    alpha_pool = float(summary["alpha_pool"])
    duckdb.write_table("pooled_model_summary", pd.DataFrame(
        {"pooled": [pooled], "alpha_pool": [alpha_pool]}))
    return dg.MaterializeResult(metadata={
        "dagster/row_count": rows, "pooled_model": pooled, "alpha_pool": alpha_pool,
        "validation_mean_log_likelihood": validation_ll,
        "train_edges": int(summary["train_edges"]), "computed_by": engine.name,
    })


def load_pooled(duckdb: DuckDBStore, item_ids: np.ndarray) -> StoredPooledModel:
    items = duckdb.read_table("pooled_model_items").set_index("item_id")["p_like"]
    alpha = duckdb.read_table("pooled_model_summary")["alpha_pool"].iloc[0]
    return StoredPooledModel(items.reindex(item_ids).fillna(alpha).to_numpy(), alpha)


@dg.asset(deps=[pooled_model], group_name="embedding", kinds={"python", "sql"})
def customer_embeddings(
    duckdb: DuckDBStore, engine: SQLEngine, random_seed: RandomSeed,
    state_folder: StateFolder,
) -> dg.MaterializeResult:
    """Each customer's normalised negative log-likelihood under the pooled model (step 2):
    one number (scalar), or per category completed to a low rank (vector, Alg. 4), whose
    first principal coordinate is ``embedding`` and whole vector ``embedding_vector``.
    Purchase-only logs: the normalised negative log-likelihood of the items chosen under
    the MNL choice model (core.choice.purchase_embedding). When the engine segments every
    customer, the engine computes the scalar embedding of each
    (dbt_like_sql/customer_embeddings.sql); the figure shows a sample."""
    spec = chosen_spec(duckdb)
    if spec["in_engine"]:
        return embeddings_in_engine(duckdb, engine, spec, random_seed.value, state_folder)
    split = load_split_graphs(duckdb)
    if is_purchase_log(duckdb):
        pooled = MNLPooledModel(by_category=spec["pooled"] == "mnl:category").fit(split.train)
        embedded = purchase_embedding(split.train, pooled, spec["normalisation"],
                                      spec["category_rank"], random_seed.value)
        vectors = None if spec["category_rank"] is None else embedded
        values = embedded if vectors is None else vectors[:, 0]
    elif spec["category_rank"] is None:
        values = embed(split.train, load_pooled(duckdb, split.train.item_ids),
                       spec["normalisation"])
        vectors = None
    else:
        vectors = ModelEmbeddingSegmenter(
            pooled=spec["pooled"], normalisation=spec["normalisation"],
            category_rank=spec["category_rank"], random_state=random_seed.value,
        ).embed(split.train)
        values = vectors[:, 0]
    frame = pd.DataFrame({
        "customer_id": split.train.customer_ids,
        "embedding": values,
        "degree": split.train.customer_degrees(),
        "likes": split.train.customer_likes(),
    })
    if vectors is not None:
        frame["embedding_vector"] = list(vectors)
    duckdb.write_table("customer_embeddings", frame)
    return embedding_result(len(frame), values, spec, state_folder,
                            "scalar" if vectors is None else f"vector (rank {vectors.shape[1]})")


def embeddings_in_engine(duckdb: DuckDBStore, engine: SQLEngine, spec: dict, seed: int,
                         state_folder: StateFolder) -> dg.MaterializeResult:
    """Every customer's scalar embedding computed by the engine and copied into the
    store; the density is drawn from the distinct values (a sample when many). The
    per-category vector embedding: vector_embeddings_in_engine."""
    if spec["category_rank"] is not None:
        return vector_embeddings_in_engine(duckdb, engine, spec, seed, state_folder)
    rows = engine.run_model("customer_embeddings", {"normalisation": spec["normalisation"]})
    engine.copy_to_store(duckdb, "customer_embeddings")
    engine.run_model("embedding_values")
    distinct = engine.read_table("embedding_values")
    counts = distinct["customers"].to_numpy()
    values = distinct["embedding"].to_numpy(dtype=float)
    if counts.sum() <= DENSITY_SAMPLE:
        values = np.repeat(values, counts)
    else:  # a seeded sample of customers, drawn through their values
        drawn = np.random.default_rng(seed).choice(len(distinct), size=DENSITY_SAMPLE,
                                                   p=counts / counts.sum())
        values = values[drawn]
    return embedding_result(rows, values, spec, state_folder, "scalar",
                            computed_by=engine.name, distinct_values=len(distinct))


def vector_embeddings_in_engine(duckdb: DuckDBStore, engine: SQLEngine, spec: dict,
                                seed: int, state_folder: StateFolder) -> dg.MaterializeResult:
    """Every customer's per-category vector embedding (Alg. 4) by the engine:

    1. the per-(customer, category) scores in long format (category_embeddings.sql);
    2. the SAMPLE's rows (edge_sample's customers) pivoted to a small dense matrix, whose
       low-rank completion gives the category factors Y and principal axes T exactly as
       in memory (core.vector_scale.SampledLowRankEmbedding), written back as the small
       tables ``category_factors`` and ``vector_axes``;
    3. every customer's coordinates by ridge on the fixed Y (vector_coordinates.sql).

    The store's ``customer_embeddings`` holds the first principal coordinate as
    ``embedding`` and the whole vector as ``embedding_vector``, as in memory."""
    rank = int(spec["category_rank"])
    engine.run_model("category_embeddings", {"normalisation": spec["normalisation"]})
    sample = engine.query(
        "SELECT e.customer_id, e.category, e.value FROM category_embeddings AS e "
        "JOIN (SELECT DISTINCT customer_id FROM edge_sample) AS s "
        "ON e.customer_id = s.customer_id")
    scores, customers, categories = pivot_scores(sample["customer_id"], sample["category"],
                                                 sample["value"])
    low_rank = SampledLowRankEmbedding(rank, random_state=seed).fit(scores)
    engine.write_table("category_factors", low_rank.factors_table(categories))
    engine.write_table("vector_axes", low_rank.axes_table())
    rows = engine.run_model("vector_coordinates", {"regularisation": low_rank.regularisation})
    engine.copy_to_store(duckdb, "vector_coordinates")
    vector = ", ".join(f"e{a}" for a in range(rank))
    duckdb.execute(
        "CREATE OR REPLACE TABLE customer_embeddings AS SELECT customer_id, e0 AS embedding, "
        f"degree, likes, [{vector}] AS embedding_vector FROM vector_coordinates")
    # the density of the first coordinate on a seeded sample of customers (one float each)
    values = duckdb.query("SELECT embedding FROM customer_embeddings ORDER BY customer_id"
                          )["embedding"].to_numpy(dtype=float)
    if len(values) > DENSITY_SAMPLE:
        values = values[np.random.default_rng(seed).choice(len(values), DENSITY_SAMPLE,
                                                           replace=False)]
    return embedding_result(rows, values, spec, state_folder, f"vector (rank {rank})",
                            computed_by=engine.name, sample_customers=len(customers),
                            categories=len(categories))


def embedding_result(rows: int, values: np.ndarray, spec: dict, state_folder: StateFolder,
                     kind: str, **extra) -> dg.MaterializeResult:
    """The embeddings' metadata: the density (inline and as a figure) and its modes."""
    plot, _ = figure_metadata(embedding_density(values, title="Embedding density"), "embeddings",
                              state_folder.folder("figures"))
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "normalisation": spec["normalisation"],
            "embedding": kind,
            "kde_modes": len(kde_modes(values)[0]),
            "mean": float(np.nanmean(values)),
            "nan_embeddings": int(np.isnan(values).sum()),
            "density": inline_density(values, None, "Embedding density"),
            "density_figure": plot,
            **extra,
        }
    )
