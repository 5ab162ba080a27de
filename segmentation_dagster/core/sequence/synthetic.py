"""Synthetic customers with planted *behavioural* segments and a latent affinity.

The pipeline's default source. Customers fall in like-rate segments (the paper's alphas:
customer i likes an item with probability sigma(logit alpha_k + item effect), the effect
depending on the item's quality and price, so per-item and feature models have signal),
with demographics loosely tied to them (age shifts by segment). On top of that it plants:

- **behavioural segments**: each prefers a few item categories and moves between them
  in a typical order (a Markov chain over categories). Segments come in pairs that share
  their categories; the two run the cycle in opposite directions and are loyal to
  different brands (even vs odd brand numbers, with probability ``brand_loyalty``). A
  bag of categories therefore cannot tell a pair apart; the items can. With
  ``brand_loyalty=0.5`` the pair differs only in direction, which mean-pooled embeddings
  barely see (the average of next-category predictions is the same in both directions);
- **a latent premium affinity**: some customers start, at a random onset time, to look at
  premium items (price >= ``PREMIUM_PRICE``) and then to buy them, so some meet the rule
  "at least 3 premium purchases" before a cutoff, others only after it, having shown the
  interest (views, carts) before.

Simulation loops over event *positions* (at most the longest history), vectorised over
customers; no loop per customer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..synthetic import draw_segments

PREMIUM_PRICE = 50.0
# The business rule that goes with this generator (see lookalike.RuleSpec)
DEFAULT_RULE_FILTER = f"event = 'purchase' AND price >= {PREMIUM_PRICE:g}"
DEFAULT_RULE_MIN_COUNT = 3
START = np.datetime64("2025-01-01T00:00:00")
DAYS = 365


@dataclass(frozen=True)
class BehaviourDataset:
    """The source tables (interactions, items, customers) and the planted truth: the
    like-rate ``segment``, the ``behaviour_segment``, ``premium_affine`` and the affinity
    ``onset_day``."""

    interactions: pd.DataFrame
    items: pd.DataFrame
    customers: pd.DataFrame
    truth: pd.DataFrame
    segment_cycles: list[list[int]]


def segment_cycles(n_behaviour_segments: int, n_categories: int) -> list[list[int]]:
    """The category cycle of each segment: pairs (2p, 2p+1) share three categories and run
    the cycle in opposite directions; blocks wrap around the categories."""
    if n_behaviour_segments < 1:
        raise ValueError(f"n_behaviour_segments must be >= 1, got {n_behaviour_segments}")
    if n_categories < 3:
        raise ValueError(f"n_categories must be >= 3, got {n_categories}")
    cycles = []
    for s in range(n_behaviour_segments):
        block = [(3 * (s // 2) + j) % n_categories for j in range(3)]
        cycles.append(block if s % 2 == 0 else block[::-1])
    return cycles


def transition_matrices(
    cycles: list[list[int]], n_categories: int, follow: float, stay: float
) -> np.ndarray:
    """[S, C, C] category transitions: follow the segment's cycle with probability
    ``follow``, stay with ``stay``, else any category uniformly. A category outside the
    cycle moves to the cycle's first category with probability ``follow``."""
    rest = 1.0 - follow - stay
    if rest < 0:
        raise ValueError(f"follow + stay must be <= 1, got {follow} + {stay}")
    matrices = np.full((len(cycles), n_categories, n_categories), rest / n_categories)
    for s, cycle in enumerate(cycles):
        for c in range(n_categories):
            matrices[s, c, c] += stay
            nxt = cycle[(cycle.index(c) + 1) % len(cycle)] if c in cycle else cycle[0]
            matrices[s, c, nxt] += follow
    return matrices


def _sample_rows(cumulative: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One categorical draw per row of a row-wise cumulative probability matrix."""
    u = rng.random(len(cumulative)) * cumulative[:, -1]
    return np.minimum((cumulative < u[:, None]).sum(axis=1), cumulative.shape[1] - 1)


def make_behaviour_dataset(
    n_customers: int = 1500,
    n_items: int = 300,
    n_segments: int = 3,
    n_behaviour_segments: int = 4,
    n_categories: int = 8,
    mean_events: float = 30.0,
    affine_share: float = 0.3,
    follow: float = 0.6,
    stay: float = 0.15,
    brand_loyalty: float = 0.8,
    seed: int = 0,
) -> BehaviourDataset:
    """Interactions (customer_id, item_id, value, event, timestamp), items (item_id,
    category, brand, price, quality), customers (customer_id, age, gender, region) and the
    truth (customer_id, segment, behaviour_segment, premium_affine, onset_day).

    ``n_segments`` like-rate segments (value = thumbs up or down drawn from
    sigma(logit alpha_k + item effect): a star rating read through the paper's own-mean
    rule would erase exactly the per-customer like-rate that separates them);
    ``n_behaviour_segments`` behavioural segments drawn independently of them. Customers
    may meet an item more than once (a view, then a purchase).
    """
    if n_customers < 1 or n_items < 2 * n_categories:
        raise ValueError(
            f"need n_customers >= 1 and n_items >= 2 * n_categories ({2 * n_categories}); "
            f"got {n_customers} customers and {n_items} items"
        )
    rng = np.random.default_rng(seed)
    alphas, _, segments = draw_segments(n_customers, n_segments, rng)
    behaviour = rng.integers(n_behaviour_segments, size=n_customers)

    # items: every category gets regular and (about 15 %) premium items
    category = np.arange(n_items) % n_categories
    rng.shuffle(category)
    premium = rng.random(n_items) < 0.15
    for c in range(n_categories):  # at least one of each kind per category
        members = np.flatnonzero(category == c)
        premium[members[0]], premium[members[1]] = True, False
    price = np.where(
        premium,
        PREMIUM_PRICE * np.exp(np.abs(rng.normal(0.3, 0.3, n_items))),
        np.minimum(np.exp(rng.normal(3.0, 0.4, n_items)), PREMIUM_PRICE - 1.0),
    ).round(2)
    brand = np.where(premium, rng.integers(0, 4, n_items), rng.integers(4, 16, n_items))
    quality = rng.normal(size=n_items)
    item_effect = 0.6 * quality - 0.2 * (np.log(price) - 3.0)
    # popularity within each (category, premium) group: Zipf-like weights
    popularity = 1.0 / (1.0 + rng.permutation(n_items)) ** 0.3

    # customers: activity window, number of events, premium affinity and its onset
    join = rng.uniform(0, 0.85 * DAYS, n_customers)
    n_events = 1 + rng.poisson(max(mean_events - 1.0, 0.0), n_customers)
    affine = rng.random(n_customers) < affine_share
    onset = np.where(affine, rng.uniform(join, DAYS * 1.1), np.inf)
    ramp_days = 0.2 * DAYS

    cycles = segment_cycles(n_behaviour_segments, n_categories)
    cumulative = np.cumsum(transition_matrices(cycles, n_categories, follow, stay), axis=2)
    longest = int(n_events.max())
    start_category = np.array([c[0] for c in cycles])[behaviour]
    start_category = np.where(
        rng.random(n_customers) < 0.5,
        np.array([c[1] for c in cycles])[behaviour],
        start_category,
    )
    categories = np.empty((n_customers, longest), dtype=np.int16)
    categories[:, 0] = start_category
    for t in range(1, longest):
        previous = categories[:, t - 1]
        categories[:, t] = _sample_rows(cumulative[behaviour, previous], rng)

    # flatten to one row per event; times sorted within each customer's window
    rows = np.repeat(np.arange(n_customers), n_events)
    starts = np.concatenate([[0], np.cumsum(n_events)[:-1]])
    position = np.arange(len(rows)) - starts[rows]
    day = join[rows] + rng.random(len(rows)) * (DAYS - join[rows])
    order = np.lexsort((day, rows))
    day = day[order]  # rows are already sorted, so only the days are reordered
    event_category = categories[rows, position]

    ramp = np.clip((day - onset[rows]) / ramp_days, 0.0, 1.0)
    want_premium = rng.random(len(rows)) < 0.05 + 0.55 * ramp
    loyal = rng.random(len(rows)) < brand_loyalty
    want_parity = np.where(loyal, behaviour[rows] % 2, 1 - behaviour[rows] % 2)
    parity = brand % 2
    items = np.empty(len(rows), dtype=np.int64)
    for c in range(n_categories):  # a loop over item groups, vectorised over events
        for kind in (False, True):
            for side in (0, 1):
                members = np.flatnonzero((category == c) & (premium == kind) & (parity == side))
                if not len(members):  # a tiny catalogue: any brand of the kind
                    members = np.flatnonzero((category == c) & (premium == kind))
                chosen = (event_category == c) & (want_premium == kind) & (want_parity == side)
                weights = np.cumsum(popularity[members])
                u = rng.random(int(chosen.sum())) * weights[-1]
                items[chosen] = members[np.searchsorted(weights, u)]

    is_premium = premium[items]
    p_purchase = np.where(is_premium, 0.08 + 0.4 * ramp, 0.1)
    u = rng.random(len(rows))
    # codes, then shared label objects: np.where on strings would make 10M new strings
    event_code = np.where(u < p_purchase, 2, np.where(u < p_purchase + 0.15, 1, 0))
    event = np.array(["view", "cart", "purchase"], dtype=object)[event_code]
    logit = np.log(alphas / (1 - alphas))[segments[rows]] + item_effect[items]
    likes = rng.random(len(rows)) < 1 / (1 + np.exp(-logit))
    # whole seconds, strictly increasing within a customer (the input checks want no
    # repeated (customer, item, timestamp)): a running maximum of second - position,
    # offset per customer so that it restarts at each customer
    offset = rows.astype(np.int64) * 10**10
    raw = np.round(day * 86400).astype(np.int64) - position + offset
    seconds = (np.maximum.accumulate(raw) - offset + position).astype("timedelta64[s]")

    interactions = pd.DataFrame(
        {
            "customer_id": rows,
            "item_id": items,
            "value": likes.astype(float),
            "event": event,
            "timestamp": START + seconds,
        }
    )
    item_table = pd.DataFrame(
        {
            "item_id": np.arange(n_items),
            "category": np.array([f"cat_{c}" for c in category]),
            "brand": np.array([f"brand_{b:02d}" for b in brand]),
            "price": price,
            "quality": quality,
        }
    )
    age = np.clip(rng.normal(25 + 12 * segments, 8), 18, 80).round().astype(int)
    customers = pd.DataFrame(
        {
            "customer_id": np.arange(n_customers),
            "age": age,
            "gender": rng.choice(["F", "M"], size=n_customers),
            "region": rng.choice(["north", "south", "east", "west"], size=n_customers),
        }
    )
    truth = pd.DataFrame(
        {
            "customer_id": np.arange(n_customers),
            "segment": segments,
            "behaviour_segment": behaviour,
            "premium_affine": affine,
            "onset_day": np.where(affine, onset, np.nan),
        }
    )
    return BehaviourDataset(interactions, item_table, customers, truth, cycles)
