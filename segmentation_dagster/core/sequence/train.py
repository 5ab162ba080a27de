"""Training: next-item prediction (data-driven) and core-segment classification (lookalike).

Both are seeded and deterministic on CPU: :func:`torch_session` fixes the seed, the
thread count and ``torch.use_deterministic_algorithms(True)`` for the duration of a fit
and restores them afterwards (the pipeline runs many assets in one process).

``UniconConfig.device`` picks where the network runs: ``"auto"`` (the default) takes the
first CUDA GPU when the installed torch build sees one, else the CPU; ``"cpu"``,
``"cuda"`` or ``"cuda:1"`` ask for one. On a GPU, results are seeded but not bit-for-bit
reproducible: some CUDA kernels have no deterministic version, so determinism only warns.

Every fit is bounded: ``max_epochs`` and ``max_seconds`` (a wall-clock budget, None for
none). The budget is checked after every batch: at the budget the fit stops in the middle
of an epoch, drops that unvalidated epoch and keeps the best validated weights so far;
``stopped_by_`` says what ended it ("budget", "patience" or "max_epochs"). Each epoch is
logged (logger ``segmentation_dagster.core.sequence.train``, and ``on_epoch``) with an
estimate of the time left.

The CPU thread count is ``UniconConfig.threads`` capped by the cores this process may
actually use (:func:`available_cores`): more threads than cores makes every parallel
operation wait for a descheduled thread, so one busy neighbour slowed an epoch tenfold.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.metrics import average_precision_score
from sklearn.utils.validation import check_is_fitted
from torch import nn

from .data import SequenceData, Vocabulary
from .metrics import hit_rate, ndcg, rank_targets, top_k
from .model import ClassAttentionHead, LookalikeNetwork, UniconNetwork

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class UniconConfig:
    d_model: int = 64
    n_heads: int = 2
    n_layers: int = 2
    dropout: float = 0.2
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 128
    max_epochs: int = 50
    patience: int = 3
    seed: int = 0
    # the CPU threads wanted; capped by available_cores(); 0: every available core
    threads: int = 2
    # the wall-clock budget of one fit, in seconds (None: no budget, max_epochs only)
    max_seconds: float | None = None
    eval_k: int = 10
    # inference batch (no gradients, so larger)
    inference_batch_size: int = 512
    device: str = "auto"


def resolve_device(name: str) -> torch.device:
    """``"auto"``: the first CUDA GPU if torch sees one, else the CPU; otherwise the device
    named, which must exist (a CUDA request on a CPU-only torch build is an error, not a
    silent fall-back to a much slower run)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"unknown torch device {name!r}: use 'auto', 'cpu' or 'cuda[:n]'") \
            from error
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {name!r} was asked for, but this torch build "
                f"({torch.__version__}) sees no CUDA GPU; install the CUDA wheel (README) "
                "or use device='auto'"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} GPU(s)")
    elif device.type != "cpu":
        raise ValueError(f"device {name!r} is not supported: use 'auto', 'cpu' or 'cuda[:n]'")
    return device


def available_cores() -> int:
    """The CPU cores this process may run on: its CPU affinity (``taskset``, a container's
    cpuset), further capped by a cgroup v2 CPU quota (``docker --cpus``), at least 1.

    The load of other processes is deliberately not used: the thread count changes the
    order of floating-point reductions, so a seeded fit would give different results on a
    busy and on a quiet machine. On a machine shared with busy neighbours, set the
    ``threads`` setting to 1.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as handle:
            quota, period = handle.read().split()[:2]
        if quota != "max":
            cores = min(cores, max(math.floor(int(quota) / int(period)), 1))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota readable: the affinity is the limit
    return max(cores, 1)


def thread_count(threads: int) -> int:
    """The torch threads of a fit: ``threads`` (0: all) capped by :func:`available_cores`."""
    if int(threads) < 0:
        raise ValueError(f"threads must be 0 (every available core) or positive, got {threads}")
    cores = available_cores()
    return cores if int(threads) == 0 else min(int(threads), cores)


class _Clock:
    """The budget of one fit: elapsed time, whether it is spent, and an estimate of the
    time left (the mean epoch so far times the epochs left, at most the budget left)."""

    def __init__(self, max_seconds: float | None, max_epochs: int) -> None:
        if max_seconds is not None and not max_seconds > 0:
            raise ValueError(f"max_seconds must be positive or None, got {max_seconds}")
        if int(max_epochs) < 1:
            raise ValueError(f"max_epochs must be at least 1, got {max_epochs}")
        self.max_seconds, self.max_epochs = max_seconds, int(max_epochs)
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def spent(self) -> bool:
        return self.max_seconds is not None and self.elapsed() >= self.max_seconds

    def seconds_left(self, epochs_done: int) -> float:
        elapsed = self.elapsed()
        left = elapsed / max(epochs_done, 1) * (self.max_epochs - epochs_done)
        if self.max_seconds is not None:
            left = min(left, max(self.max_seconds - elapsed, 0.0))
        return left

    def progress(self, what: str, epoch: int, detail: str) -> None:
        """Log one epoch with the time left (the patience may stop the fit earlier)."""
        budget = f" of {self.max_seconds:g}" if self.max_seconds is not None else ""
        logger.info("%s epoch %d/%d: %s; %.1f s%s elapsed, at most about %.0f s left",
                    what, epoch, self.max_epochs, detail, self.elapsed(), budget,
                    self.seconds_left(epoch))


@contextlib.contextmanager
def torch_session(seed: int | None, threads: int,
                  device: torch.device | None = None) -> Iterator[None]:
    """Seed (unless None: inference needs none, and re-seeding in the middle of training
    would replay the same dropout masks), thread count and deterministic algorithms for a
    block; the thread count and the deterministic flag are restored after."""
    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    previous_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    previous_fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.set_num_threads(thread_count(threads))
    # CUDA has ops without a deterministic kernel (and cuBLAS needs an environment
    # variable set before start-up): there determinism is asked for but only warns
    on_gpu = device is not None and device.type == "cuda"
    torch.use_deterministic_algorithms(True, warn_only=on_gpu)
    # filling every new tensor with NaN (a debugging aid of deterministic mode) cost ~20 %
    # of inference time and changes no result
    torch.utils.deterministic.fill_uninitialized_memory = False
    if seed is not None:
        torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_num_threads(previous_threads)
        torch.use_deterministic_algorithms(previous_deterministic,
                                           warn_only=previous_warn_only)
        torch.utils.deterministic.fill_uninitialized_memory = previous_fill


def _batch(data: SequenceData, rows: np.ndarray,
           device: torch.device | None = None) -> tuple[torch.Tensor, ...]:
    """Tensors for ``rows`` on ``device``, cropped to the longest of them."""
    width = max(int(data.lengths[rows].max(initial=1)), 1)
    arrays = (data.items[rows, :width], data.events[rows, :width], data.features[rows],
              data.lengths[rows])
    return tuple(torch.from_numpy(a.astype(np.int64)).to(device) for a in arrays)


def _shuffled_batches(lengths: np.ndarray, rows: np.ndarray, size: int,
                      rng: np.random.Generator) -> list[np.ndarray]:
    """Random batches of similar lengths: rows are shuffled, sorted by length within
    windows of 8 batches, cut into batches, and the batches shuffled. Each batch is
    cropped to its longest row, so this saves most of the padding (2-3x faster on
    MovieLens, whose history lengths are very skewed)."""
    order = rng.permutation(rows)
    window = 8 * size
    for start in range(0, len(order), window):
        chunk = order[start:start + window]
        order[start:start + window] = chunk[np.argsort(lengths[chunk], kind="stable")]
    batches = [order[s:s + size] for s in range(0, len(order), size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _length_batches(data: SequenceData, size: int) -> Iterator[np.ndarray]:
    """Row batches of similar lengths (inference crops each batch to its longest)."""
    order = np.argsort(data.lengths, kind="stable")
    for start in range(0, len(order), size):
        yield order[start:start + size]


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    train_loss: float
    validation_hr: float
    validation_ndcg: float
    seconds: float
    # since the fit started, and the estimate of the time left (see _Clock)
    elapsed: float = float("nan")
    seconds_left: float = float("nan")


def seen_so_far(items: torch.Tensor, n_items: int, predicting: torch.Tensor) -> torch.Tensor:
    """[P, n_items] bool, one row per True in ``predicting`` [B, L - 1] (the outputs at
    events t that predict a next event t + 1, in row-major order): whether item code
    c + 1 occurs among events 0..t of that customer (``items`` [B, L], 0 = padding).
    Built from each item's first position, never as a [B, L, n_items] array."""
    batch, length = items.shape
    first = torch.full((batch, n_items + 1), length, dtype=torch.long, device=items.device)
    positions = torch.arange(length, device=items.device).expand(batch, length)
    first.scatter_reduce_(1, items, positions, reduce="amin")
    # the [P, n_items] gather dominates: 16-bit positions make it 4x smaller than int64
    # (a MovieLens-100K training epoch took 4.9 s instead of 5.5 s)
    small = torch.int16 if length < 2**15 else torch.int32
    rows, steps = predicting.nonzero(as_tuple=True)
    return first.to(small)[rows, 1:] <= steps.to(small)[:, None]


class NextItemModel(BaseEstimator):
    """The transformer trained to predict each next item (softmax cross-entropy over all
    items), early-stopped on validation NDCG@k; its mean output over a customer's events
    is the consumer embedding.

    With ``exclude_seen`` (customers never repeat an item), items a customer already has
    are left out of the ranking, and out of the training softmax too: the objective then
    matches the evaluation, and no capacity goes to pushing down items that cannot come
    next (on MovieLens-100K: validation NDCG@10 0.118 against 0.108, HR@10 0.230 against
    0.223).

    ``fit(train, vocabulary, validation=(inputs, targets))`` keeps the weights of the best
    validation epoch; ``history_`` has one :class:`EpochRecord` per finished epoch;
    ``stopped_by_`` is "budget" (``config.max_seconds`` reached), "patience" or
    "max_epochs"; ``threads_`` the CPU threads it trained with.
    """

    def __init__(self, config: UniconConfig | None = None) -> None:
        self.config = config or UniconConfig()

    # ---------------------------------------------------------------- training
    def fit(
        self,
        train: SequenceData,
        vocabulary: Vocabulary,
        validation: tuple[SequenceData, np.ndarray] | None = None,
        exclude_seen: bool = False,
        max_len: int | None = None,
        on_epoch: Callable[[EpochRecord], None] | None = None,
    ) -> NextItemModel:
        c = self.config
        trainable = np.flatnonzero(train.lengths >= 2)
        if not len(trainable):
            raise ValueError("no customer has two events: nothing to learn a next item from")
        if exclude_seen and train.has_repeats():
            raise ValueError("exclude_seen=True needs customers who never repeat an item: "
                             "a repeated item would be a next item that cannot be predicted")
        self.vocabulary_ = vocabulary
        self.exclude_seen_ = bool(exclude_seen)
        max_len = max(int(max_len or train.max_len), train.max_len, 1)
        if validation is not None and validation[0].max_len > max_len:
            max_len = validation[0].max_len
        device = resolve_device(c.device)
        clock = _Clock(c.max_seconds, c.max_epochs)
        with torch_session(c.seed, c.threads, device):
            self.threads_ = torch.get_num_threads()
            self.network_ = UniconNetwork(vocabulary, max_len, c.d_model, c.n_heads,
                                          c.n_layers, c.dropout).to(device)
            optimiser = torch.optim.AdamW(self.network_.parameters(), lr=c.learning_rate,
                                          weight_decay=c.weight_decay)
            rng = np.random.default_rng(c.seed)
            self.history_: list[EpochRecord] = []
            self.stopped_by_ = "max_epochs"
            best_score, best_state, waited = -np.inf, None, 0
            for epoch in range(1, c.max_epochs + 1):
                started = time.perf_counter()
                loss = self._train_epoch(train, trainable, optimiser, rng, clock)
                if loss is None:  # the budget ran out in the middle of this epoch
                    self.stopped_by_ = "budget"
                    if self.history_:
                        break  # drop the unfinished epoch: the best finished one is kept
                    # not one epoch in the budget: keep (and score) what was learned
                    loss = float("nan")
                hr = score = float("nan")
                if validation is not None:
                    ranks = self.rank(*validation)
                    hr, score = hit_rate(ranks, c.eval_k), ndcg(ranks, c.eval_k)
                record = EpochRecord(epoch, loss, hr, score, time.perf_counter() - started,
                                     clock.elapsed(), clock.seconds_left(epoch))
                self.history_.append(record)
                clock.progress("next-item", epoch,
                               f"loss {loss:.3f}, validation NDCG@{c.eval_k} {score:.4f}")
                if on_epoch is not None:
                    on_epoch(record)
                if self.stopped_by_ == "budget":
                    break
                if validation is not None:
                    if score > best_score:
                        best_score, waited = score, 0
                        best_state = copy.deepcopy(self.network_.state_dict())
                    else:
                        waited += 1
                        if waited >= c.patience:
                            self.stopped_by_ = "patience"
                            break
                if clock.spent():
                    self.stopped_by_ = "budget"
                    break
            if best_state is not None:
                self.network_.load_state_dict(best_state)
        self.best_epoch_ = (
            max(self.history_, key=lambda r: r.validation_ndcg).epoch
            if validation is not None else len(self.history_)
        )
        return self

    def _train_epoch(self, train, trainable, optimiser, rng, clock: _Clock) -> float | None:
        """The epoch's mean loss per predicted event; None when the budget ran out first."""
        network = self.network_.train()
        total, tokens = 0.0, 0
        for rows in _shuffled_batches(train.lengths, trainable, self.config.batch_size, rng):
            if clock.spent():
                return None
            items, events, features, _ = _batch(train, rows, self.device_)
            hidden = network(items, events, features)
            # the output at event t (model position t + 1) predicts event t + 1
            outputs, targets = hidden[:, 1:-1], items[:, 1:]
            valid = targets > 0
            logits = network.next_item_logits(outputs[valid])
            if self.exclude_seen_:
                seen = seen_so_far(items, network.n_items, valid)
                logits = logits.masked_fill(seen, float("-inf"))
            loss = nn.functional.cross_entropy(logits, targets[valid] - 1)
            optimiser.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(network.parameters(), 1.0)
            optimiser.step()
            total += loss.item() * int(valid.sum())
            tokens += int(valid.sum())
        return total / max(tokens, 1)

    # ---------------------------------------------------------------- inference
    def _check_fitted(self) -> None:
        check_is_fitted(self, "network_", msg="%(name)s is not fitted; call fit first")

    @property
    def device_(self) -> torch.device:
        """Where the fitted network lives (inputs are sent there)."""
        return next(self.network_.parameters()).device

    @torch.no_grad()
    def last_outputs(self, data: SequenceData) -> np.ndarray:
        """[n, d] output at each customer's last event (what predicts the next one)."""
        self._check_fitted()
        if (data.lengths < 1).any():
            raise ValueError("every sequence needs at least one event")
        network = self.network_.eval()
        out = np.zeros((len(data), network.final_norm.normalized_shape[0]), np.float32)
        with torch_session(None, self.config.threads, self.device_):
            for rows in _length_batches(data, self.config.inference_batch_size):
                items, events, features, lengths = _batch(data, rows, self.device_)
                hidden = network(items, events, features)
                out[rows] = hidden[torch.arange(len(rows)), lengths].cpu().numpy()
        return out

    @torch.no_grad()
    def next_item_scores(self, data: SequenceData) -> np.ndarray:
        """[n, n_items] scores of the next item for each customer (full ranking)."""
        hidden = torch.from_numpy(self.last_outputs(data)).to(self.device_)
        return self.network_.next_item_logits(hidden).cpu().numpy()

    def rank(self, inputs: SequenceData, targets: np.ndarray,
             seen: np.ndarray | None = None) -> np.ndarray:
        """Rank of each row's target (rows with target 0 are skipped), in batches.
        ``seen`` [n, L] item codes to exclude (default: the inputs' items when the model
        excludes seen items, else none)."""
        rows = np.flatnonzero(np.asarray(targets) > 0)
        ranks = []
        for start in range(0, len(rows), self.config.inference_batch_size):
            chunk = rows[start:start + self.config.inference_batch_size]
            subset = inputs.subset(chunk)
            scores = self.next_item_scores(subset)
            block_seen = (seen[chunk] if seen is not None
                          else subset.items if self.exclude_seen_ else None)
            ranks.append(rank_targets(scores, targets[chunk], block_seen))
        return np.concatenate(ranks) if ranks else np.zeros(0, np.int64)

    def recommend(self, inputs: SequenceData, k: int = 10,
                  seen: np.ndarray | None = None) -> np.ndarray:
        """[n, k] item codes; ``seen`` (default: the inputs if seen items are excluded)."""
        out = np.zeros((len(inputs), k), np.int64)
        for start in range(0, len(inputs), self.config.inference_batch_size):
            chunk = np.arange(start, min(start + self.config.inference_batch_size, len(inputs)))
            subset = inputs.subset(chunk)
            block_seen = (seen[chunk] if seen is not None
                          else subset.items if self.exclude_seen_ else None)
            out[chunk] = top_k(self.next_item_scores(subset), k, block_seen)
        return out

    @torch.no_grad()
    def embed(self, data: SequenceData) -> np.ndarray:
        """[n, d] consumer embeddings: the mean of the outputs over each customer's events
        (the CLS token excluded; every event weighs the same, as in the paper)."""
        self._check_fitted()
        if (data.lengths < 1).any():
            empty = data.customer_ids[data.lengths < 1][:5].tolist()
            raise ValueError(f"customers without events have no embedding: {empty}")
        network = self.network_.eval()
        out = np.zeros((len(data), network.final_norm.normalized_shape[0]), np.float32)
        with torch_session(None, self.config.threads, self.device_):
            for rows in _length_batches(data, self.config.inference_batch_size):
                items, events, features, lengths = _batch(data, rows, self.device_)
                hidden = network(items, events, features)[:, 1:]
                mask = (items > 0).unsqueeze(-1).float()
                out[rows] = ((hidden * mask).sum(1) / lengths[:, None].float()).cpu().numpy()
        return out

    # ---------------------------------------------------------------- persistence
    def save(self, path: str | Path) -> None:
        self._check_fitted()
        torch.save(
            {
                "config": asdict(self.config),
                "vocabulary": self.vocabulary_.to_state(),
                "max_len": self.network_.max_len,
                "exclude_seen": self.exclude_seen_,
                "state_dict": self.network_.state_dict(),
                "history": [asdict(r) for r in self.history_],
                "best_epoch": self.best_epoch_,
                "stopped_by": self.stopped_by_,
            },
            path,
        )

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> NextItemModel:
        """A saved model, on ``device`` (default: the device setting it was trained with,
        ``"auto"`` unless one was named; a model trained on a GPU loads on a CPU-only
        machine with ``device="cpu"`` or ``"auto"``)."""
        state = torch.load(path, weights_only=True, map_location="cpu")
        config = UniconConfig(**state["config"])
        model = cls(replace(config, device=device or config.device))
        model.vocabulary_ = Vocabulary.from_state(state["vocabulary"])
        c = model.config
        model.network_ = UniconNetwork(model.vocabulary_, state["max_len"], c.d_model,
                                       c.n_heads, c.n_layers, c.dropout)
        model.network_.load_state_dict(state["state_dict"])
        model.network_.to(resolve_device(c.device)).eval()
        model.exclude_seen_ = state["exclude_seen"]
        model.history_ = [EpochRecord(**r) for r in state["history"]]
        model.best_epoch_ = state["best_epoch"]
        model.stopped_by_ = state.get("stopped_by", "unknown")  # older files lack it
        return model


class LookalikeClassifier(BaseEstimator):
    """P(core) from a customer's sequence: the class-attention head on the CLS output,
    trained with binary cross-entropy (positives weighted to balance the classes), the
    encoder fine-tuned from a next-item model when one is given; early-stopped on the
    validation average precision (ties: the lower loss).

    Bounded like :class:`NextItemModel` (``max_epochs``, ``max_seconds``): ``history_``
    has one dict per finished epoch (with ``elapsed`` and ``seconds_left``),
    ``stopped_by_`` says what ended the fit, ``threads_`` the CPU threads used."""

    def __init__(self, config: UniconConfig | None = None,
                 pretrained: NextItemModel | None = None, head_lr_factor: float = 1.0,
                 min_epochs: int = 0) -> None:
        self.config = config or UniconConfig()
        self.pretrained = pretrained
        self.head_lr_factor = head_lr_factor
        self.min_epochs = min_epochs

    def fit(
        self,
        data: SequenceData,
        labels: np.ndarray,
        vocabulary: Vocabulary,
        validation: tuple[SequenceData, np.ndarray] | None = None,
        on_epoch: Callable[[dict], None] | None = None,
    ) -> LookalikeClassifier:
        c = self.config
        labels = np.asarray(labels, dtype=np.float32)
        if len(labels) != len(data):
            raise ValueError(f"{len(labels)} labels for {len(data)} sequences")
        positives = int(labels.sum())
        if positives == 0 or positives == len(labels):
            raise ValueError("the classifier needs both core and non-core customers")
        if (data.lengths < 1).any():
            raise ValueError("every training sequence needs at least one event")
        device = resolve_device(c.device)
        clock = _Clock(c.max_seconds, c.max_epochs)
        with torch_session(c.seed, c.threads, device):
            self.threads_ = torch.get_num_threads()
            if self.pretrained is not None:
                encoder = copy.deepcopy(self.pretrained.network_)
                if encoder.max_len < data.max_len:
                    raise ValueError("sequences are longer than the pretrained model's max_len")
            else:
                max_len = max(data.max_len, validation[0].max_len if validation else 1)
                encoder = UniconNetwork(vocabulary, max_len, c.d_model, c.n_heads,
                                        c.n_layers, c.dropout)
            head = ClassAttentionHead(encoder.final_norm.normalized_shape[0], c.n_heads,
                                      c.dropout)
            self.network_ = LookalikeNetwork(encoder, head).to(device)
            weight = torch.tensor((len(labels) - positives) / positives, device=self.device_)
            loss_function = nn.BCEWithLogitsLoss(pos_weight=weight)
            optimiser = torch.optim.AdamW(
                [{"params": self.network_.encoder.parameters()},
                 {"params": self.network_.head.parameters(),
                  "lr": c.learning_rate * self.head_lr_factor}],
                lr=c.learning_rate, weight_decay=c.weight_decay)
            rng = np.random.default_rng(c.seed)
            self.history_: list[dict] = []
            self.stopped_by_ = "max_epochs"
            best, best_state, waited = None, None, 0
            for epoch in range(1, c.max_epochs + 1):
                started = time.perf_counter()
                self.network_.train()
                total, seen = 0.0, 0
                for rows in _shuffled_batches(data.lengths, np.arange(len(data)),
                                              c.batch_size, rng):
                    if clock.spent():
                        self.stopped_by_ = "budget"
                        break
                    logits = self.network_(*_batch(data, rows, self.device_))
                    loss = loss_function(logits,
                                         torch.from_numpy(labels[rows]).to(self.device_))
                    optimiser.zero_grad()
                    loss.backward()
                    nn.utils.clip_grad_norm_(self.network_.parameters(), 1.0)
                    optimiser.step()
                    total += loss.item() * len(rows)
                    seen += len(rows)
                if self.stopped_by_ == "budget" and self.history_:
                    break  # drop the unfinished epoch: the best finished one is kept
                record = {"epoch": epoch, "train_loss": total / max(seen, 1)}
                if validation is not None:
                    logits = torch.from_numpy(self._logits(validation[0])).to(self.device_)
                    target = torch.from_numpy(np.asarray(validation[1], np.float32)
                                              ).to(self.device_)
                    record["validation_loss"] = float(loss_function(logits, target))
                    record["validation_average_precision"] = float(
                        average_precision_score(validation[1], logits.cpu().numpy())
                    )
                record["seconds"] = time.perf_counter() - started
                record["elapsed"] = clock.elapsed()
                record["seconds_left"] = clock.seconds_left(epoch)
                self.history_.append(record)
                clock.progress("lookalike", epoch, ", ".join(
                    f"{k} {v:.4f}" for k, v in record.items()
                    if k in ("train_loss", "validation_average_precision")))
                if on_epoch is not None:
                    on_epoch(record)
                if self.stopped_by_ == "budget":
                    break
                if validation is not None:
                    # ranking is what the audience needs: stop on validation average
                    # precision (the loss can sit flat for epochs while AP still rises)
                    score = (record["validation_average_precision"],
                             -record["validation_loss"])
                    if best is None or score > best:
                        best, waited = score, 0
                        best_state = copy.deepcopy(self.network_.state_dict())
                    else:
                        waited += 1
                        if waited >= c.patience and epoch >= self.min_epochs:
                            self.stopped_by_ = "patience"
                            break
                if clock.spent():
                    self.stopped_by_ = "budget"
                    break
            if best_state is not None:
                self.network_.load_state_dict(best_state)
        return self

    @property
    def device_(self) -> torch.device:
        """Where the fitted network lives (inputs are sent there)."""
        return next(self.network_.parameters()).device

    @torch.no_grad()
    def _logits(self, data: SequenceData) -> np.ndarray:
        network = self.network_.eval()
        out = np.zeros(len(data), np.float32)
        for rows in _length_batches(data, self.config.inference_batch_size):
            out[rows] = network(*_batch(data, rows, self.device_)).cpu().numpy()
        return out

    def predict_proba(self, data: SequenceData) -> np.ndarray:
        """P(core) for each sequence (every sequence needs at least one event)."""
        check_is_fitted(self, "network_", msg="%(name)s is not fitted; call fit first")
        if (data.lengths < 1).any():
            raise ValueError("every sequence needs at least one event")
        with torch_session(None, self.config.threads, self.device_):
            return 1.0 / (1.0 + np.exp(-self._logits(data).astype(np.float64)))
