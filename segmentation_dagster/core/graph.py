"""The preference graph: customers x items, with a binary label on each observed edge.

Labels are stored as +1 (like, purchase, click) and -1 (dislike, no purchase, no click)
in the ``data`` array of a scipy CSR matrix, so an absent edge (0) is never confused
with a label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

LIKE = 1
DISLIKE = -1


@dataclass(frozen=True)
class PreferenceGraph:
    """A sparse customer x item graph with +1/-1 edge labels and id maps.

    Build it with :meth:`from_edges`; do not fill the fields by hand.

    Attributes
    ----------
    matrix : scipy.sparse.csr_matrix, shape (m, n), int8 data in {-1, +1}
    customer_ids, item_ids : arrays of the original ids, row and column order
    item_categories : optional array of length n with each item's category
    """

    matrix: sp.csr_matrix
    customer_ids: np.ndarray
    item_ids: np.ndarray
    item_categories: np.ndarray | None = None

    @classmethod
    def from_edges(
        cls,
        edges: pd.DataFrame,
        customer_col: str = "customer_id",
        item_col: str = "item_id",
        label_col: str = "label",
        item_categories: pd.Series | None = None,
        item_ids: np.ndarray | None = None,
        customer_ids: np.ndarray | None = None,
    ) -> PreferenceGraph:
        """Build the graph from a long table of (customer, item, label) rows.

        Labels must be +1 or -1 (see :mod:`segmentation_dagster.core.labels` for the
        transforms from ratings, purchases and clicks).

        Duplicate (customer, item) pairs: the LAST row in table order wins, so sort the
        table by time first to keep the latest observation.

        ``item_ids`` / ``customer_ids`` fix the row and column order (for instance the
        item universe of a stored pooled model); rows with ids outside them are dropped.
        ``item_categories`` is a Series indexed by item id.
        """
        for col in (customer_col, item_col, label_col):
            if col not in edges.columns:
                raise ValueError(
                    f"edge table has no column {col!r}; columns are {list(edges.columns)}"
                )
        if len(edges) == 0:
            raise ValueError("the edge table is empty: a preference graph needs edges")
        for col in (customer_col, item_col):
            if edges[col].isna().any():
                raise ValueError(f"column {col!r} has {int(edges[col].isna().sum())} null ids")
        labels = pd.to_numeric(edges[label_col], errors="coerce").to_numpy(dtype=float)
        bad = ~np.isin(labels, (LIKE, DISLIKE))
        if bad.any():
            examples = pd.unique(edges[label_col].to_numpy()[bad])[:5]
            raise ValueError(
                f"column {label_col!r} must hold only +1 or -1; found {int(bad.sum())} other "
                f"values, e.g. {list(examples)}"
            )
        table = pd.DataFrame(
            {"c": edges[customer_col].to_numpy(), "i": edges[item_col].to_numpy(), "y": labels}
        ).drop_duplicates(subset=["c", "i"], keep="last")

        customers = _index(table["c"], customer_ids, "customer_ids")
        items = _index(table["i"], item_ids, "item_ids")
        rows = customers.get_indexer(table["c"])
        cols = items.get_indexer(table["i"])
        keep = (rows >= 0) & (cols >= 0)
        if not keep.any():
            raise ValueError("no edge falls inside the given customer and item ids")
        matrix = sp.csr_matrix(
            (table["y"].to_numpy()[keep].astype(np.int8), (rows[keep], cols[keep])),
            shape=(len(customers), len(items)),
        )
        matrix.sort_indices()
        categories = None
        if item_categories is not None:
            categories = item_categories.reindex(items).to_numpy()
            if pd.isna(categories).any():
                missing = items[pd.isna(categories)][:5].tolist()
                raise ValueError(f"items without a category, e.g. {missing}")
        return cls(matrix, customers.to_numpy(), items.to_numpy(), categories)

    @classmethod
    def from_arrays(
        cls,
        rows: np.ndarray,
        cols: np.ndarray,
        labels: np.ndarray,
        customer_ids: np.ndarray | None = None,
        item_ids: np.ndarray | None = None,
        item_categories: np.ndarray | None = None,
    ) -> PreferenceGraph:
        """Build the graph from parallel arrays of edges, for large data.

        ``rows`` and ``cols`` are integer positions (0-based) into ``customer_ids`` and
        ``item_ids``; without them the ids are 0..max position. ``labels`` are +1/-1.
        Duplicate (row, col) pairs follow the same rule as :meth:`from_edges`: the LAST
        one in array order wins. Customers without edges are kept (see
        :meth:`restrict_customers` to drop them). ``item_categories`` is an array in
        item order.

        Faster than :meth:`from_edges` on millions of edges: one sort of the (row, col)
        keys both drops the duplicates and puts the edges in CSR order, so the matrix is
        assembled directly, without pandas or a COO round trip.
        """
        rows = _positions(rows, "rows")
        cols = _positions(cols, "cols")
        labels = np.asarray(labels)
        if not (len(rows) == len(cols) == len(labels)):
            raise ValueError(
                f"rows, cols and labels must have the same length; got {len(rows)}, "
                f"{len(cols)} and {len(labels)}"
            )
        if len(rows) == 0:
            raise ValueError("no edges: a preference graph needs edges")
        bad = ~np.isin(labels, (LIKE, DISLIKE))
        if bad.any():
            raise ValueError(
                f"labels must hold only +1 or -1; found {int(bad.sum())} other values, "
                f"e.g. {list(pd.unique(labels[bad])[:5])}"
            )
        m = int(rows.max()) + 1 if customer_ids is None else len(customer_ids)
        n = int(cols.max()) + 1 if item_ids is None else len(item_ids)
        for name, positions, size in (("rows", rows, m), ("cols", cols, n)):
            if positions.max() >= size:
                raise ValueError(
                    f"{name} has position {int(positions.max())}, outside the {size} given ids"
                )
        customers = _index(None, customer_ids, "customer_ids", default_size=m)
        items = _index(None, item_ids, "item_ids", default_size=n)
        key = rows * np.int64(n) + cols
        # unique of the reversed keys keeps each pair's last occurrence (first when reversed)
        unique_key, first_reversed = np.unique(key[::-1], return_index=True)
        last = len(key) - 1 - first_reversed
        sorted_rows = unique_key // n
        indptr = np.concatenate([[0], np.cumsum(np.bincount(sorted_rows, minlength=m))])
        matrix = sp.csr_matrix(
            (labels[last].astype(np.int8), (unique_key % n).astype(np.int32), indptr),
            shape=(m, n),
        )
        categories = None
        if item_categories is not None:
            categories = np.asarray(item_categories)
            if len(categories) != n:
                raise ValueError(
                    f"item_categories has {len(categories)} entries for {n} items"
                )
            if pd.isna(categories).any():
                missing = items[pd.isna(categories)][:5].tolist()
                raise ValueError(f"items without a category, e.g. {missing}")
        return cls(matrix, customers.to_numpy(), items.to_numpy(), categories)

    @property
    def n_customers(self) -> int:
        return self.matrix.shape[0]

    @property
    def n_items(self) -> int:
        return self.matrix.shape[1]

    @property
    def n_edges(self) -> int:
        return self.matrix.nnz

    def edges(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, cols, labels) of every edge, in CSR order."""
        rows = np.repeat(np.arange(self.n_customers), np.diff(self.matrix.indptr))
        return rows, self.matrix.indices, self.matrix.data

    def customer_degrees(self) -> np.ndarray:
        return np.diff(self.matrix.indptr)

    def item_degrees(self) -> np.ndarray:
        return np.bincount(self.matrix.indices, minlength=self.n_items)

    def customer_likes(self) -> np.ndarray:
        """Number of +1 edges per customer."""
        return self.customer_sums(np.ones(self.n_items), np.zeros(self.n_items))

    def customer_sums(self, if_like: np.ndarray, if_dislike: np.ndarray) -> np.ndarray:
        """Per customer, the sum over their edges (i, j) of ``if_like[j]`` when the label is
        +1 and ``if_dislike[j]`` when it is -1 (both of length n_items).

        Two sparse matrix-vector products over the CSR arrays, with no per-edge array:
        each term is (like + dislike) / 2 + label * (like - dislike) / 2.
        """
        if_like = np.asarray(if_like, dtype=float)
        if_dislike = np.asarray(if_dislike, dtype=float)
        m = self.matrix
        pattern = sp.csr_matrix((np.ones(m.nnz), m.indices, m.indptr), shape=m.shape)
        signs = sp.csr_matrix((m.data.astype(float), m.indices, m.indptr), shape=m.shape)
        return pattern @ ((if_like + if_dislike) / 2) + signs @ ((if_like - if_dislike) / 2)

    def item_likes(self) -> np.ndarray:
        _, cols, labels = self.edges()
        return np.bincount(cols, weights=labels == LIKE, minlength=self.n_items)

    def restrict_items(self, mask: np.ndarray) -> PreferenceGraph:
        """The graph on the items where ``mask`` is true (all customers are kept)."""
        matrix = self.matrix[:, np.flatnonzero(mask)].tocsr()
        cats = None if self.item_categories is None else self.item_categories[mask]
        return PreferenceGraph(matrix, self.customer_ids, self.item_ids[mask], cats)

    def restrict_customers(self, mask: np.ndarray) -> PreferenceGraph:
        """The graph on the customers where ``mask`` is true (all items are kept)."""
        mask = np.asarray(mask, dtype=bool)
        if len(mask) != self.n_customers:
            raise ValueError(f"mask has {len(mask)} entries for {self.n_customers} customers")
        matrix = self.matrix[mask]
        return PreferenceGraph(matrix, self.customer_ids[mask], self.item_ids, self.item_categories)

    def to_frame(self) -> pd.DataFrame:
        """The edges as a long table with the original ids."""
        rows, cols, labels = self.edges()
        return pd.DataFrame(
            {
                "customer_id": self.customer_ids[rows],
                "item_id": self.item_ids[cols],
                "label": labels.astype(np.int8),
            }
        )


def _index(
    values: pd.Series | None, given: np.ndarray | None, name: str, default_size: int = 0
) -> pd.Index:
    if given is None:
        if values is None:
            return pd.RangeIndex(default_size)
        return pd.Index(pd.unique(values.to_numpy())).sort_values()
    index = pd.Index(given)
    if index.hasnans:
        raise ValueError(f"{name} has {int(index.isna().sum())} null ids")
    if index.has_duplicates:
        dup = index[index.duplicated()][:5].tolist()
        raise ValueError(f"{name} has duplicate ids, e.g. {dup}")
    return index


def _positions(values: np.ndarray, name: str) -> np.ndarray:
    """Validated integer positions (int64) from an array of edge endpoints."""
    values = np.asarray(values)
    if values.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array")
    if values.dtype.kind == "f":
        if np.isnan(values).any():
            raise ValueError(f"{name} has {int(np.isnan(values).sum())} NaN positions")
        if (values != np.round(values)).any():
            raise ValueError(f"{name} must hold integer positions")
    elif values.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer positions, got dtype {values.dtype}")
    values = values.astype(np.int64)
    if len(values) and values.min() < 0:
        raise ValueError(f"{name} has negative positions")
    return values


def category_cells(
    graph: PreferenceGraph, rows: np.ndarray, cols: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(categories, cells): the graph's sorted distinct item categories, and the flat
    (customer, category) cell ``row * B + category`` of every edge (rows, cols)."""
    if graph.item_categories is None:
        raise ValueError("the graph has no item_categories")
    categories, item_category = np.unique(graph.item_categories, return_inverse=True)
    return categories, rows * len(categories) + item_category[cols]


def category_counts(graph: PreferenceGraph) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(likes, degrees, categories): (m, B) like and edge counts per customer and category."""
    rows, cols, labels = graph.edges()
    categories, cells = category_cells(graph, rows, cols)
    b = len(categories)
    size = graph.n_customers * b
    likes = np.bincount(cells, weights=labels == LIKE, minlength=size).reshape(-1, b)
    degrees = np.bincount(cells, minlength=size).astype(float).reshape(-1, b)
    return likes, degrees, categories


def require_edges_per_customer(graph: PreferenceGraph) -> None:
    """Raise if some customer has no edge: such a customer has no embedding."""
    empty = graph.customer_degrees() == 0
    if empty.any():
        ids = graph.customer_ids[empty][:5].tolist()
        raise ValueError(
            f"{int(empty.sum())} customers have no edges (e.g. {ids}); "
            "drop them or collect observations before embedding"
        )
