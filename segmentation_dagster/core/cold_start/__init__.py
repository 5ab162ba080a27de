"""The paper's cold-start protocol on MovieLens (Section 5, Tables 2, 3, 7, 8).

Per genre: movies rated at least ``train_min_ratings`` (30) times are the training set,
the others are the "new" movies to predict. Training movies with at most
``validation_max_ratings`` (50) ratings are held out as a validation set while K is chosen;
the method is then refitted on all training movies. A method predicts like for a
(user, new movie) edge iff its P(like) >= 0.5, and accuracy is the paper's aggregate:
the mean over test users of each user's share of correct predictions.

Labels follow the paper's text: like = rating >= the user's mean rating over ALL the
movies the user rated (every genre, training and test movies alike).

Users with test ratings but no training rating have no embedding and no segment; they
cannot be scored by any method, so they are dropped from the test set and counted
(``users_without_train``). The same holds for validation users without fitting edges.

Modules: ``split`` (labels, attributes, the split by rating count, held-out edges),
``method_run`` (one method: the K sweep on validation, the refits, per-user accuracy),
``run`` (per genre, and the results) and ``multi_genre`` (several genres at once).
Methods are names of ``core.registry``; the K sweep is ``core.k_sweep``'s. The results
are tidy frames; turning them into the pipeline's score rows is the shell's business
(``assets/cold_start.py``).
"""

from ..baselines import CategoryLatentClassEM
from ..category_segmenters import ContextEmbeddingSegmenter, SegmentCategoryRates
from .method_run import KS, per_user_accuracy, user_mean_accuracy
from .multi_genre import MULTI_GENRE_METHODS, MultiGenreResult, run_multi_genre
from .run import PAPER_METHODS, ColdStartResult, GenreResult, run_cold_start, run_genre
from .split import (
    AGE_BANDS,
    ColdStartSplit,
    HeldOut,
    age_group,
    demographic_attributes,
    held_out,
    like_edges,
    single_genre_movies,
    split_by_rating_count,
)

__all__ = [
    "AGE_BANDS",
    "KS",
    "MULTI_GENRE_METHODS",
    "PAPER_METHODS",
    "CategoryLatentClassEM",
    "ColdStartResult",
    "ColdStartSplit",
    "ContextEmbeddingSegmenter",
    "GenreResult",
    "HeldOut",
    "MultiGenreResult",
    "SegmentCategoryRates",
    "age_group",
    "demographic_attributes",
    "held_out",
    "like_edges",
    "per_user_accuracy",
    "run_cold_start",
    "run_genre",
    "run_multi_genre",
    "single_genre_movies",
    "split_by_rating_count",
    "user_mean_accuracy",
]
