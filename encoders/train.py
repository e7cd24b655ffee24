"""Training (SASRec-style next-event-item prediction) and the holdout evaluation protocol.

Training sees exactly what serving computes: the same sliding-window mask, and every training
chunk is prefixed with up to ``context_events - 1`` earlier events that are attended to but not
scored, so a position deep in a long history is trained with the context it has in serving
rather than with a chunk boundary pretending to be the user's first event.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from encoders.checkpoint import TrainedModel
from encoders.item_features import ItemFeatures, ItemFeaturizer
from encoders.model import EncoderConfig, StreamRecModel, left_pad

log = logging.getLogger(__name__)

Event = tuple[str, int, float]  # (item_id, event-type code, ts seconds)
Encoded = tuple[list[int], list[int], list[float]]  # (item rows, types, gaps)


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 64  # chunks per step
    lr: float = 1e-3
    weight_decay: float = 0.01
    max_seq_len: int = 200  # scored positions per training chunk
    seed: int = 0
    patience: int = 3  # epochs without validation improvement before stopping (0 = never stop)
    num_threads: int = 0  # torch intra-op threads while training (0 = leave as is)
    val_users: int = 1000  # users whose last event is held out for early stopping (0 = none)
    id_dropout: float = 0.1  # share of items trained per step without their id embedding
    grad_clip: float = 1.0
    eval_k: int = 10


# --------------------------------------------------------------------------------------------
# Data


def _ordered(seq: Sequence[Event]) -> list[Event]:
    return sorted(seq, key=lambda e: e[2])  # stable: equal timestamps keep their given order


def _encode(seq: Sequence[Event], row_of: Mapping[str, int]) -> Encoded:
    rows = [row_of.get(item, 0) for item, _, _ in seq]
    types = [int(t) for _, t, _ in seq]
    gaps = [-1.0] + [float(seq[i][2] - seq[i - 1][2]) for i in range(1, len(seq))]
    return rows, types, gaps[: len(seq)]


def _user_vectors(
    model: StreamRecModel, item_vecs: Tensor, histories: Sequence[Encoded], batch: int = 512
) -> Tensor:
    """Vector after each history's last event [U,d]; exact from the last context_events."""
    ctx = model.cfg.context_events
    out = []
    with torch.no_grad():
        for s in range(0, len(histories), batch):
            part = [(r[-ctx:], t[-ctx:], g[-ctx:]) for r, t, g in histories[s : s + batch]]
            rows, types, gapb, valid = left_pad(part, model.cfg.n_gap_buckets)
            out.append(model.user_tower(item_vecs[rows], types, gapb, valid)[:, -1])
    return torch.cat(out) if out else item_vecs.new_zeros((0, item_vecs.shape[1]))


def _ranks(scores: Tensor, targets: Tensor) -> Tensor:
    """0-based rank of each target among the scored columns; ties count the lower column first.
    Column 0 (the unknown-item row) never ranks; a target of 0 (item outside the vocabulary)
    gets rank = number of columns, i.e. a miss at any k."""
    scores = scores.clone()
    scores[:, 0] = float("-inf")
    t = scores.gather(1, targets[:, None])
    cols = torch.arange(scores.shape[1])[None, :]
    rank = (scores > t).sum(1) + ((scores == t) & (cols < targets[:, None])).sum(1)
    return torch.where(targets == 0, scores.shape[1], rank)


def _hr_ndcg(ranks: Tensor, k: int) -> tuple[float, float]:
    if ranks.numel() == 0:
        return 0.0, 0.0
    hit = ranks < k
    ndcg = torch.where(hit, 1.0 / torch.log2(ranks.double() + 2.0), 0.0)
    return float(hit.double().mean()), float(ndcg.mean())


# --------------------------------------------------------------------------------------------
# Holdout protocol


def split_holdout(
    sequences: Mapping[str, Sequence[Event]],
) -> tuple[dict[str, list[Event]], dict[str, Event]]:
    """Each user with >= 3 events holds out their last event; others stay whole in training."""
    train: dict[str, list[Event]] = {}
    holdout: dict[str, Event] = {}
    for user, seq in sequences.items():
        ordered = _ordered(seq)
        if len(ordered) >= 3:
            train[user], holdout[user] = ordered[:-1], ordered[-1]
        else:
            train[user] = ordered
    return train, holdout


def evaluate_next_item(
    trained: TrainedModel,
    train_seqs: Mapping[str, Sequence[Event]],
    holdout: Mapping[str, Event],
    k: int = 10,
) -> dict[str, Any]:
    """HR@k and NDCG@k of the held-out events, fully ranked over the model's whole vocabulary,
    for the model (user vector after the user's training history) and for item popularity
    counted on ``train_seqs``. Already-seen items are not excluded (repeat events are real
    next events). History items outside the vocabulary enter as the unknown-item vector."""
    model, row_of = trained.model, trained.row_of
    users = [u for u in holdout if train_seqs.get(u)]
    item_vecs = trained.vocab_item_vectors()
    histories = [_encode(_ordered(train_seqs[u]), row_of) for u in users]
    targets = torch.tensor([row_of.get(holdout[u][0], 0) for u in users], dtype=torch.long)
    model.eval()
    user_vecs = _user_vectors(model, item_vecs, histories)
    model_hr, model_ndcg = _hr_ndcg(_ranks(model.score(user_vecs, item_vecs), targets), k)

    counts = torch.zeros(item_vecs.shape[0], dtype=torch.float64)
    popular = Counter(row_of.get(item, 0) for seq in train_seqs.values() for item, _, _ in seq)
    for row, c in popular.items():
        counts[row] = c
    pop_scores = counts[None, :].expand(len(users), -1)
    pop_hr, pop_ndcg = _hr_ndcg(_ranks(pop_scores, targets), k)
    return {
        "k": k,
        "users": len(users),
        "model": {"hr": model_hr, "ndcg": model_ndcg},
        "popularity": {"hr": pop_hr, "ndcg": pop_ndcg},
    }


# --------------------------------------------------------------------------------------------
# Training


def _chunks(encoded: Sequence[Encoded], max_len: int, ctx: int) -> list[tuple[int, int, int, int]]:
    """(user, lo, s, e): inputs are events lo..e-1, positions s..e-1 are scored against the next
    event; lo reaches back ctx-1 events before s so scored positions see their serving context."""
    out = []
    for u, (rows, _, _) in enumerate(encoded):
        n = len(rows)
        for s in range(0, n - 1, max_len):
            e = min(s + max_len, n - 1)
            out.append((u, max(0, s - ctx + 1), s, e))
    return out


def _batch(
    encoded: Sequence[Encoded], chunks: Sequence[tuple[int, int, int, int]], n_gap_buckets: int
) -> tuple[Tensor, ...]:
    seqs: list[Encoded] = []
    targets: list[list[int]] = []
    for u, lo, s, e in chunks:
        rows, types, gaps = encoded[u]
        seqs.append((rows[lo:e], types[lo:e], gaps[lo:e]))
        targets.append([-1] * (s - lo) + rows[s + 1 : e + 1])
    rows_t, types_t, gapb, valid = left_pad(seqs, n_gap_buckets)
    tgt = torch.full(rows_t.shape, -1, dtype=torch.long)
    T = rows_t.shape[1]
    for b, t in enumerate(targets):
        tgt[b, T - len(t) :] = torch.tensor(t, dtype=torch.long)
    return rows_t, types_t, gapb, valid, tgt


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _state_digest(model: StreamRecModel) -> str:
    h = hashlib.blake2b(digest_size=16)
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def train_model(
    sequences: Mapping[str, Sequence[Event]],
    items: Mapping[str, Mapping[str, Any]],
    enc_cfg: EncoderConfig,
    train_cfg: TrainConfig,
    progress: bool = True,
) -> TrainedModel:
    """Train on user_id -> time-ordered (item_id, event_type_code, ts) sequences and item_id ->
    {category, price, title, available} metadata. ``n_item_ids`` and ``n_categories`` of
    ``enc_cfg`` are replaced by the sizes found in the data."""
    started = time.perf_counter()
    old_threads = torch.get_num_threads()
    if train_cfg.num_threads > 0:
        torch.set_num_threads(train_cfg.num_threads)
    try:
        # fork_rng: seeding must make this run reproducible without resetting the caller's RNG
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(train_cfg.seed)
            return _train(sequences, items, enc_cfg, train_cfg, progress, started)
    finally:
        torch.set_num_threads(old_threads)


def _train(
    sequences: Mapping[str, Sequence[Event]],
    items: Mapping[str, Mapping[str, Any]],
    enc_cfg: EncoderConfig,
    tc: TrainConfig,
    progress: bool,
    started: float,
) -> TrainedModel:
    py_rng = random.Random(tc.seed)
    ordered = {u: _ordered(s) for u, s in sequences.items() if len(s)}
    for u, seq in ordered.items():
        bad = [t for _, t, _ in seq if not 0 <= int(t) < enc_cfg.n_event_types]
        if bad:
            raise ValueError(f"user {u!r}: event type codes {bad[:3]} out of range")

    # validation: the last event of a sample of users, kept out of training and vocabulary
    eligible = sorted(u for u, s in ordered.items() if len(s) >= 3)
    val_set = set(py_rng.sample(eligible, min(tc.val_users, len(eligible))))
    train_seqs = {u: (s[:-1] if u in val_set else s) for u, s in ordered.items()}

    vocab = sorted({item for seq in train_seqs.values() for item, _, _ in seq})
    if not vocab:
        raise ValueError("no training events")
    row_of = {item: r + 1 for r, item in enumerate(vocab)}
    featurizer = ItemFeaturizer.fit(items.values(), enc_cfg.n_price_buckets, enc_cfg.title_buckets)
    cfg = replace(enc_cfg, n_item_ids=len(vocab) + 1, n_categories=featurizer.n_categories)
    vocab_features: ItemFeatures = featurizer.encode(
        [{}] + [items.get(i, {}) for i in vocab], range(cfg.n_item_ids)
    )

    users = sorted(train_seqs)
    encoded = [_encode(train_seqs[u], row_of) for u in users]
    val_users = sorted(val_set)
    val_hist = [_encode(train_seqs[u], row_of) for u in val_users]
    val_targets = torch.tensor([row_of.get(ordered[u][-1][0], 0) for u in val_users])
    chunks = _chunks(encoded, tc.max_seq_len, cfg.context_events)
    if not chunks:
        raise ValueError("no user has two training events; nothing to predict")

    model = StreamRecModel(cfg)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "rel_bias" not in n]
    no_decay = [
        p for n, p in model.named_parameters() if not (p.dim() >= 2 and "rel_bias" not in n)
    ]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": tc.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=tc.lr,
        betas=(0.9, 0.98),
    )
    gen = torch.Generator().manual_seed(tc.seed)
    all_ids = torch.arange(cfg.n_item_ids)
    n_batches = (len(chunks) + tc.batch_size - 1) // tc.batch_size

    best_metric, best_epoch, best_state = -1.0, 0, None
    best_val: dict[str, float | None] = {"hr": None, "ndcg": None}
    epochs_run, epoch_loss = 0, float("nan")  # NaN until an epoch has run
    bar = tqdm(total=tc.epochs * n_batches, disable=not progress, desc="train", unit="batch")
    for epoch in range(1, tc.epochs + 1):
        model.train()
        order = torch.randperm(len(chunks), generator=gen).tolist()
        total, count = 0.0, 0
        for b in range(n_batches):
            part = [chunks[i] for i in order[b * tc.batch_size : (b + 1) * tc.batch_size]]
            rows, types, gapb, valid, tgt = _batch(encoded, part, cfg.n_gap_buckets)
            ids = all_ids
            if tc.id_dropout > 0:
                # teach the feature path to stand alone: it is all an unseen item will have
                ids = torch.where(torch.rand(cfg.n_item_ids) < tc.id_dropout, 0, all_ids)
            item_vecs = model.item_tower(vocab_features.with_id_index(ids))
            h = model.user_tower(item_vecs[rows], types, gapb, valid)
            scored = tgt >= 0
            logits = model.score(h[scored], item_vecs)
            logits = logits.masked_fill(all_ids[None, :] == 0, float("-inf"))
            loss = F.cross_entropy(logits, tgt[scored])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if tc.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            opt.step()
            n_scored = int(scored.sum())
            total += loss.item() * n_scored
            count += n_scored
            bar.update(1)
        epoch_loss = total / max(count, 1)
        epochs_run = epoch

        if not val_users:
            bar.set_postfix(epoch=epoch, loss=f"{epoch_loss:.4f}")
            continue
        model.eval()
        with torch.no_grad():
            item_vecs = model.item_tower(vocab_features)
            user_vecs = _user_vectors(model, item_vecs, val_hist)
            hr, ndcg = _hr_ndcg(_ranks(model.score(user_vecs, item_vecs), val_targets), tc.eval_k)
        bar.set_postfix(epoch=epoch, loss=f"{epoch_loss:.4f}", val_hr=f"{hr:.4f}")
        if ndcg > best_metric:
            best_metric, best_epoch = ndcg, epoch
            best_val = {"hr": hr, "ndcg": ndcg}
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif tc.patience > 0 and epoch - best_epoch >= tc.patience:
            break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        best_epoch = epochs_run
    model.eval()

    seconds = time.perf_counter() - started
    summary = {
        "epochs_run": epochs_run,
        "best_epoch": best_epoch,
        "train_loss": epoch_loss if epochs_run else None,  # JSON has no NaN
        f"val_hr@{tc.eval_k}": best_val["hr"],
        f"val_ndcg@{tc.eval_k}": best_val["ndcg"],
        "val_users": len(val_users),
        "users": len(ordered),
        "events": sum(len(s) for s in ordered.values()),
        "vocab_size": len(vocab),
        "seconds": round(seconds, 3),
        "train_config": asdict(tc),
    }
    log.info(
        "trained %d epochs (best %d) in %.1fs: loss %.4f, val HR@%d %s NDCG@%d %s "
        "(%d users, %d events, %d items)",
        epochs_run,
        best_epoch,
        seconds,
        epoch_loss,
        tc.eval_k,
        _fmt(best_val["hr"]),
        tc.eval_k,
        _fmt(best_val["ndcg"]),
        summary["users"],
        summary["events"],
        len(vocab),
    )
    return TrainedModel(
        model=model,
        config=cfg,
        item_ids=vocab,
        featurizer=featurizer,
        vocab_features=vocab_features,
        model_version=f"enc-{_state_digest(model)}",
        metadata={"training": summary},
    )
