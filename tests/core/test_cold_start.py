import numpy as np
import pandas as pd
import pytest

from segmentation_dagster.core import cold_start as cs
from segmentation_dagster.core.baselines import LatentClassEM
from segmentation_dagster.core.graph import PreferenceGraph
from segmentation_dagster.core.movielens import genre_column
from segmentation_dagster.core.registry import MethodContext

N_A, N_B = 120, 80  # two planted user groups with opposite tastes
FIT_COUNTS = [80] * 10  # > 50 ratings: used to fit
VALIDATION_COUNTS = [40] * 5  # 30..50 ratings: validation
TEST_COUNTS = [10] * 20  # < 30 ratings: the "new" movies
LONELY_USERS = (1000, 1001)  # rate only new movies of genre X: unscorable


def _planted_ratings(seed: int = 0, z_genre: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Ratings in {1, 5}: group A gives 5 to genre X with probability 0.8 and to genre Y
    with probability 0.2; group B the reverse. Every user rates about as many X as Y
    movies, so their mean rating sits near 3 and 5 = like, 1 = dislike.

    Returns (ratings, movies) with movies holding item_id and genre_x / genre_y (/ genre_z).
    """
    rng = np.random.default_rng(seed)
    users = np.arange(N_A + N_B)
    taste_x = np.where(users < N_A, 0.8, 0.2)
    rows = []
    movie_genres = []
    item = 0

    def rate(raters, p_five):
        nonlocal rows
        fives = rng.random(len(raters)) < p_five
        rows += [(u, item, 5 if f else 1) for u, f in zip(raters, fives, strict=True)]

    for count in FIT_COUNTS + VALIDATION_COUNTS + TEST_COUNTS:
        raters = rng.choice(users, count, replace=False)
        rate(raters, taste_x[raters])
        movie_genres.append("X")
        item += 1
    # the lonely users rate two new X movies (counts stay below 30) and some Y movies
    test_items = np.arange(item - len(TEST_COUNTS), item)
    for u in LONELY_USERS:
        for j in test_items[:2]:
            rows.append((u, int(j), 5))
    for _ in range(10):
        raters = rng.choice(users, 100, replace=False)
        rate(raters, 1 - taste_x[raters])
        for u in LONELY_USERS:
            rows.append((u, item, 1))
        movie_genres.append("Y")
        item += 1
    if z_genre:
        for _ in range(10):
            raters = rng.choice(users, 60, replace=False)
            rate(raters, np.full(len(raters), 0.5))
            movie_genres.append("Z")
            item += 1
    ratings = pd.DataFrame(rows, columns=["customer_id", "item_id", "value"])
    genres = np.array(movie_genres)
    movies = pd.DataFrame({"item_id": np.arange(item)})
    for g in ("X", "Y", "Z") if z_genre else ("X", "Y"):
        movies[genre_column(g)] = (genres == g).astype(np.int8)
    return ratings, movies


@pytest.fixture(scope="module")
def planted():
    ratings, movies = _planted_ratings()
    edges = cs.like_edges(ratings)
    x_items = movies.loc[movies["genre_x"] == 1, "item_id"].to_numpy()
    return edges, x_items


def _methods():
    return ["population", "model_embedding", "latent_class", "empirical_bayes"]


def test_like_labels_use_the_users_mean_over_all_ratings():
    ratings = pd.DataFrame(
        {"customer_id": [1, 1, 1, 2, 2], "item_id": [1, 2, 3, 1, 2], "value": [5, 3, 1, 2, 2]}
    )
    edges = cs.like_edges(ratings)
    assert edges["label"].tolist() == [1, 1, -1, 1, 1]
    with pytest.raises(ValueError, match="value"):
        cs.like_edges(ratings.drop(columns="value"))


def test_split_by_rating_count_sizes(planted):
    edges, x_items = planted
    split = cs.split_by_rating_count(edges[edges["item_id"].isin(x_items)])
    assert split.fit["item_id"].nunique() == len(FIT_COUNTS)
    assert split.validation["item_id"].nunique() == len(VALIDATION_COUNTS)
    assert split.train["item_id"].nunique() == len(FIT_COUNTS) + len(VALIDATION_COUNTS)
    assert split.test["item_id"].nunique() == len(TEST_COUNTS)
    assert len(split.test) == sum(TEST_COUNTS) + 2 * len(LONELY_USERS)
    assert len(split.validation) == sum(VALIDATION_COUNTS)
    assert len(split.train) == len(split.fit) + len(split.validation)
    with pytest.raises(ValueError, match="validation_max_ratings"):
        cs.split_by_rating_count(edges, 30, 20)


def test_protocol_on_planted_groups(planted):
    edges, x_items = planted
    result = cs.run_genre(edges, x_items, _methods(), genre="X")
    stats = result.stats
    assert stats["train_movies"] == len(FIT_COUNTS) + len(VALIDATION_COUNTS)
    assert stats["fit_movies"] == len(FIT_COUNTS)
    assert stats["test_movies"] == len(TEST_COUNTS)
    # the lonely users have no training rating: counted, and dropped from the test set
    assert stats["users_without_train"] == len(LONELY_USERS)
    assert stats["test_ratings_dropped"] == 2 * len(LONELY_USERS)
    assert stats["test_ratings"] == sum(TEST_COUNTS)
    assert stats["train_users"] == N_A + N_B

    acc = result.summary.set_index("method")["accuracy"]
    assert acc["model_embedding"] > acc["population"] + 0.15
    assert acc["model_embedding"] > 0.7
    assert result.summary.set_index("method").loc["population", "n_segments"] == 1
    assert len(result.k_sweep) == 2 * len(cs.KS)  # model_embedding and latent_class

    # Table 3: the planted groups show up as a low-alpha and a high-alpha segment
    seg = result.segments
    assert seg["size"].sum() == N_A + N_B
    assert seg["alpha_k"].is_monotonic_increasing
    assert seg["alpha_k"].iloc[0] < 0.35 and seg["alpha_k"].iloc[-1] > 0.65
    assert (seg["accuracy_model_embedding"] >= seg["accuracy_population"] - 1e-12).all()


def test_k_is_chosen_on_validation_only(planted):
    edges, x_items = planted
    methods = ["model_embedding", "latent_class"]
    first = cs.run_genre(edges, x_items, methods, genre="X")
    # flip every label of the new movies: test accuracies change, the choice of K must not
    counts = edges["item_id"].map(edges["item_id"].value_counts())
    flipped = edges.assign(label=np.where(counts < 30, -edges["label"], edges["label"]))
    second = cs.run_genre(flipped, x_items, methods, genre="X")
    for result in (first, second):
        sweep = result.k_sweep
        for method, rows in sweep.groupby("method"):
            best = rows.loc[rows["validation_accuracy"].idxmax(), "n_segments"]
            chosen = result.summary.set_index("method").loc[method, "n_segments"]
            assert chosen == best
    a = first.summary.set_index("method")
    b = second.summary.set_index("method")
    pd.testing.assert_series_equal(a["n_segments"], b["n_segments"])
    pd.testing.assert_series_equal(a["validation_accuracy"], b["validation_accuracy"])
    assert (a["accuracy"] - b["accuracy"]).abs().max() > 0.1


def test_all_default_methods_run_with_demographics(planted):
    edges, x_items = planted
    rng = np.random.default_rng(7)
    n = N_A + N_B
    # drawn independently of the planted groups
    users = pd.DataFrame(
        {
            "customer_id": np.arange(n),
            "age": np.r_[20, 30, 50, 70, rng.choice([20, 30, 50, 70], n - 4)],
            "gender": rng.choice(["M", "F"], n),
        }
    )
    attributes = cs.demographic_attributes(users)
    assert attributes["age_group"].iloc[:4].tolist() == ["<=24", "25-44", "45-64", "65+"]
    methods = cs.PAPER_METHODS
    paper_order = [
        "population", "model_embedding", "latent_class", "empirical_bayes", "demographic",
        "kmedoids", "spectral",
    ]
    assert list(methods) == paper_order
    result = cs.run_genre(edges, x_items, methods, ks=(2, 3), genre="X",
                          context=MethodContext(customer_attributes=attributes))
    assert list(result.summary["method"]) == paper_order
    summary = result.summary.set_index("method")
    assert summary.loc["demographic", "n_segments"] == 8
    assert set(result.k_sweep["method"]) == {"model_embedding", "latent_class", "kmedoids",
                                             "spectral"}
    # demographics here are unrelated to taste: no better than the population model
    assert summary.loc["demographic", "accuracy"] < summary.loc["model_embedding", "accuracy"]
    # without attributes the registry cannot build 'demographic': the protocol skips it
    without = cs.run_genre(edges, x_items, ["population", "demographic"], ks=(2,), genre="X")
    assert list(without.summary["method"]) == ["population"]
    # (the score rows built from this summary are tested with the shell,
    # tests/pipeline/test_nmf_and_cold_start_assets.py)


def test_run_cold_start_stacks_genres():
    ratings, movies = _planted_ratings(seed=1)
    edges = cs.like_edges(ratings)
    items = {g: movies.loc[movies[genre_column(g)] == 1, "item_id"] for g in ("X", "Y")}
    with pytest.raises(ValueError, match="genre 'Y'"):
        # genre Y has no movie with fewer than 30 ratings: no test set
        cs.run_cold_start(edges, items, _methods(), ks=(2,))
    result = cs.run_cold_start(edges, {"X": items["X"]}, _methods(), ks=(2,))
    assert set(result.summary["genre"]) == {"X"}
    assert result.stats.loc[0, "genre"] == "X"


def test_category_latent_class_matches_latent_class_on_one_category():
    rng = np.random.default_rng(0)
    edges = pd.DataFrame(
        {
            "customer_id": rng.integers(0, 150, 3000),
            "item_id": rng.integers(0, 40, 3000),
            "label": rng.choice([-1, 1], 3000),
        }
    )
    graph = PreferenceGraph.from_edges(
        edges, item_categories=pd.Series("only", index=np.arange(40))
    )
    ours = cs.CategoryLatentClassEM(3).fit(graph)
    theirs = LatentClassEM(3).fit(graph)
    # one EM engine serves both, so with one category the fits are the same to the bit
    np.testing.assert_array_equal(ours.alpha_[:, 0], theirs.alpha_)
    np.testing.assert_array_equal(ours.responsibilities_, theirs.responsibilities_)
    assert ours.log_posterior_ == theirs.log_posterior_
    assert ours.n_iter_ == theirs.n_iter_
    rows = np.arange(graph.n_customers)
    np.testing.assert_allclose(
        ours.predict_proba(rows, np.zeros_like(rows)), theirs.predict_proba(rows), atol=1e-6
    )


def test_multi_genre_run_uses_per_genre_rates():
    ratings, movies = _planted_ratings(seed=2, z_genre=True)
    # genre Y and Z need new movies too: give each a few rarely rated movies
    rng = np.random.default_rng(5)
    extra, item = [], int(movies["item_id"].max()) + 1
    new_movies = []
    for genre, p_a in (("Y", 0.2), ("Z", 0.5)):
        for _ in range(10):
            raters = rng.choice(N_A + N_B, 10, replace=False)
            p = np.where(raters < N_A, p_a, 1 - p_a if genre == "Y" else 0.5)
            extra += [(u, item, 5 if r else 1) for u, r in
                      zip(raters, rng.random(10) < p, strict=True)]
            new_movies.append({"item_id": item, genre_column(genre): 1})
            item += 1
    ratings = pd.concat([ratings, pd.DataFrame(extra, columns=ratings.columns)])
    movies = pd.concat([movies, pd.DataFrame(new_movies)]).fillna(0)
    item_genre = cs.single_genre_movies(movies, ["X", "Y", "Z"])
    assert item_genre.value_counts().to_dict() == {"X": 35, "Y": 20, "Z": 20}
    edges = cs.like_edges(ratings)
    result = cs.run_multi_genre(edges, item_genre, ks=(2, 3))
    acc = result.summary.set_index(["genre", "method"])["accuracy"]
    assert acc[("all", "model_embedding")] > acc[("all", "population")] + 0.1
    for genre in ("X", "Y"):
        assert acc[(genre, "model_embedding")] > acc[(genre, "population")]
    stats = result.stats.set_index("genre")
    assert stats.loc["all", "test_movies"] == 40
    assert stats.loc["X", "test_movies"] == 20
    me = result.models["model_embedding"]
    assert me.alpha_.shape == (me.n_segments_, 3)
    assert (result.summary["genre"] == "all").sum() == 3  # one per method
    assert list(result.summary["method"].unique()) == list(cs.MULTI_GENRE_METHODS)


def test_context_embedding_uses_other_genres_but_no_held_out_movie(planted):
    ratings, movies = _planted_ratings()
    edges = cs.like_edges(ratings)
    category = pd.Series(np.where(movies["genre_x"] == 1, "X", "Y"), index=movies["item_id"])
    x_items = movies.loc[movies["genre_x"] == 1, "item_id"].to_numpy()
    split = cs.split_by_rating_count(edges[edges["item_id"].isin(x_items)])
    train = PreferenceGraph.from_edges(split.train)
    # rank 1 < B = 2 categories: a rank-2 "completion" of 2 columns would keep the noise
    fitted = cs.ContextEmbeddingSegmenter(2, edges, category, rank=1).fit(train)
    n_y = int((movies["genre_y"] == 1).sum())
    assert fitted.context_items_ == train.n_items + n_y  # new X movies left out
    # relabelling the held-out (new) movies inside the context changes nothing
    counts = edges["item_id"].map(edges["item_id"].value_counts())
    scrambled = edges.assign(label=np.where(counts < 30, -edges["label"], edges["label"]))
    again = cs.ContextEmbeddingSegmenter(2, scrambled, category, rank=1).fit(train)
    np.testing.assert_array_equal(fitted.labels_, again.labels_)
    # the planted groups are found from X and Y together
    truth = (train.customer_ids < N_A).astype(int)
    agreement = (fitted.labels_ == 1 - truth).mean()
    assert max(agreement, 1 - agreement) > 0.95
    context = MethodContext(context_edges=edges, item_categories=category,
                            embedding={"category_rank": 1})
    result = cs.run_genre(edges, x_items, ["model_embedding_context", "population"],
                          ks=(2, 3), genre="X", context=context)
    acc = result.summary.set_index("method")["accuracy"]
    assert acc["model_embedding_context"] > acc["population"] + 0.15


def test_random_state_reaches_every_method(planted):
    edges, x_items = planted
    result = cs.run_genre(edges, x_items, ["model_embedding", "latent_class", "kmedoids"],
                          ks=(2,), genre="X", random_state=7)
    assert {name: model.random_state for name, model in result.models.items()} == {
        "model_embedding": 7, "latent_class": 7, "kmedoids": 7}
    multi = cs.MULTI_GENRE_METHODS
    assert set(multi) == {"population", "model_embedding", "latent_class"}
    with pytest.raises(ValueError, match="unknown segmentation methods"):
        cs.run_genre(edges, x_items, ["no_such_method"], genre="X")


def test_category_estimators_have_scikit_learn_manners(planted):
    from sklearn.base import clone
    from sklearn.exceptions import NotFittedError

    from segmentation_dagster.core.baselines import PopulationModel

    ratings, movies = _planted_ratings()
    edges = cs.like_edges(ratings)
    category = pd.Series(np.where(movies["genre_x"] == 1, "X", "Y"), index=movies["item_id"])
    graph = PreferenceGraph.from_edges(edges, item_categories=category)
    rates = cs.SegmentCategoryRates(PopulationModel(), prior=0.0)
    with pytest.raises(NotFittedError, match="not fitted"):
        rates.predict_proba([0], [0])
    copy = clone(rates)
    assert copy.get_params()["prior"] == 0.0 and copy.segmenter is not rates.segmenter
    rates.fit(graph)
    assert not hasattr(rates.segmenter, "labels_")  # the given segmenter stays unfitted
    assert rates.alpha_.shape == (1, 2)
    context = clone(cs.ContextEmbeddingSegmenter(2, edges, category, rank=1))
    assert context.get_params()["rank"] == 1
    with pytest.raises(ValueError, match="context_edges and item_category are required"):
        cs.ContextEmbeddingSegmenter(2).fit(graph)
