"""Co-segmentation of customers and products by non-negative matrix factorisation (NMF).

The customers x products purchase matrix V (1 if ever bought, or purchase counts) is
factorised as V ~ W H with W >= 0 (customers x k) and H >= 0 (k x products). Each of the
k "bases" is at once a customer segment (the customers with large weight in that column
of W) and a product segment (the products with large weight in that row of H).

The package, one module per concern:
- :mod:`.matrix`: :func:`purchase_matrix`, long (customer, item[, value]) table -> sparse
  V with id maps (:class:`PurchaseMatrix`);
- :mod:`.estimator`: :class:`CoSegmentation`, the estimator (scikit-learn ``NMF`` on the
  sparse V), and :class:`NMFSegmenter`, its customer segments as a segmentation method;
- :mod:`.rank`: :func:`rank_sweep` / :func:`choose_rank`, choosing k by reconstruction
  error and the stability of the segments over random restarts (consensus matrix and its
  cophenetic correlation, as the R NMF package's ``nmfEstimateRank`` does);
- :mod:`.plots`: :func:`block_order` and the ``plot_*`` functions, heatmaps and
  rank-selection curves.

V is only ever held sparse; every quantity is computed from its non-zeros and the small
factors (no dense customers x products matrix).
"""

from .estimator import INITS, LOSSES, CoSegmentation, NMFSegmenter
from .matrix import PurchaseMatrix, purchase_matrix
from .plots import (
    block_order,
    plot_consensus,
    plot_customer_heatmap,
    plot_product_heatmap,
    plot_rank_selection,
)
from .rank import (
    CONSENSUS_SAMPLE_SIZE,
    RANK_RULES,
    RankSweep,
    choose_rank,
    consensus_matrix,
    cophenetic_correlation,
    dispersion,
    rank_sweep,
)

__all__ = [
    "CONSENSUS_SAMPLE_SIZE",
    "INITS",
    "LOSSES",
    "RANK_RULES",
    "CoSegmentation",
    "NMFSegmenter",
    "PurchaseMatrix",
    "RankSweep",
    "block_order",
    "choose_rank",
    "consensus_matrix",
    "cophenetic_correlation",
    "dispersion",
    "plot_consensus",
    "plot_customer_heatmap",
    "plot_product_heatmap",
    "plot_rank_selection",
    "purchase_matrix",
    "rank_sweep",
]
