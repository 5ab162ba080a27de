"""The purchase matrix V: customers x products, held sparse, with its id maps.

:func:`purchase_matrix` builds V from one row per interaction; :func:`_as_sparse` is the
one gate every NMF entry point passes V through (a :class:`PurchaseMatrix`, a scipy
sparse matrix or a small array; V >= 0, finite, not empty).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp


@dataclass(frozen=True)
class PurchaseMatrix:
    """A sparse customers x products matrix with its id maps.

    Attributes
    ----------
    V : scipy.sparse.csr_matrix, float64, shape (m, n); no all-zero row or column
    customer_ids, item_ids : original ids in row and column order (sorted)
    n_dropped_customers, n_dropped_items : all-zero rows / columns removed when building
    binary : True if entries are 1 (ever bought), False if they are summed values
    """

    V: sp.csr_matrix
    customer_ids: np.ndarray
    item_ids: np.ndarray
    n_dropped_customers: int = 0
    n_dropped_items: int = 0
    binary: bool = True

    @property
    def shape(self) -> tuple[int, int]:
        return self.V.shape


def purchase_matrix(
    customer_ids: Iterable,
    item_ids: Iterable,
    values: Iterable | None = None,
    binary: bool = True,
) -> PurchaseMatrix:
    """Build the purchase matrix V from one row per interaction.

    Parameters
    ----------
    customer_ids, item_ids : equal-length sequences, one entry per interaction
    values : optional non-negative amounts per interaction (quantities, counts); default 1
    binary : if True, V[i, j] = 1 when customer i's summed value on j is > 0 ("ever
        bought"); if False, V[i, j] is the summed value (a count matrix).

    Customers or products whose row / column of V is all zero (e.g. only zero-quantity
    lines) are dropped, and their numbers reported in the result. Negative values raise a
    ValueError: NMF needs V >= 0, and a return should be netted out upstream, not here.
    """
    customers = np.asarray(customer_ids)
    items = np.asarray(item_ids)
    if customers.ndim != 1 or items.ndim != 1 or len(customers) != len(items):
        raise ValueError(
            f"customer_ids and item_ids must be 1-D of equal length; got shapes "
            f"{customers.shape} and {items.shape}"
        )
    if len(customers) == 0:
        raise ValueError("no interactions: the purchase matrix would be empty")
    for name, ids in (("customer_ids", customers), ("item_ids", items)):
        n_null = int(pd.isna(ids).sum())
        if n_null:
            raise ValueError(f"{name} has {n_null} null ids")
    if values is None:
        data = np.ones(len(customers))
    else:
        data = pd.to_numeric(pd.Series(np.asarray(values)), errors="coerce").to_numpy(float)
        if len(data) != len(customers):
            raise ValueError(
                f"values has length {len(data)} but there are {len(customers)} interactions"
            )
        n_bad = int((~np.isfinite(data)).sum())
        if n_bad:
            raise ValueError(f"values has {n_bad} missing, non-numeric or infinite entries")
        n_negative = int((data < 0).sum())
        if n_negative:
            raise ValueError(
                f"values has {n_negative} negative entries; purchase counts must be >= 0 "
                "(NMF needs a non-negative matrix)"
            )
    row_codes, row_ids = pd.factorize(customers, sort=True)
    col_codes, col_ids = pd.factorize(items, sort=True)
    V = sp.csr_matrix(
        (data, (row_codes, col_codes)), shape=(len(row_ids), len(col_ids))
    )  # duplicates are summed
    V.sum_duplicates()
    if binary:
        V.data = (V.data > 0).astype(float)
    V.eliminate_zeros()
    keep_rows = np.diff(V.indptr) > 0
    keep_cols = np.bincount(V.indices, minlength=V.shape[1]) > 0
    if not keep_rows.any():
        raise ValueError("every value is zero: the purchase matrix has no non-zero entry")
    # dropping empty columns cannot empty a row, so one pass suffices
    V = V[keep_rows][:, keep_cols].tocsr()
    return PurchaseMatrix(
        V=V,
        customer_ids=np.asarray(row_ids)[keep_rows],
        item_ids=np.asarray(col_ids)[keep_cols],
        n_dropped_customers=int((~keep_rows).sum()),
        n_dropped_items=int((~keep_cols).sum()),
        binary=binary,
    )


def _as_sparse(V) -> tuple[sp.csr_matrix, np.ndarray | None, np.ndarray | None]:
    """Accept a PurchaseMatrix, a scipy sparse matrix or a small array; check V >= 0."""
    if isinstance(V, PurchaseMatrix):
        X, customer_ids, item_ids = V.V, V.customer_ids, V.item_ids
    else:
        X, customer_ids, item_ids = V, None, None
    X = sp.csr_matrix(X, dtype=float)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"V must be a non-empty 2-D matrix; got shape {X.shape}")
    if not np.isfinite(X.data).all():
        raise ValueError(f"V has {int((~np.isfinite(X.data)).sum())} NaN or infinite entries")
    n_negative = int((X.data < 0).sum())
    if n_negative:
        raise ValueError(f"V has {n_negative} negative entries; NMF needs V >= 0")
    if X.nnz == 0:
        raise ValueError("V has no non-zero entry")
    return X, customer_ids, item_ids
