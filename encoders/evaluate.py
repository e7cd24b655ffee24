"""The offline next-item protocol: leave-one-out splits, user vectors, model and popularity scores.

Leave-one-out (SASRec, BERT4Rec, HSTU): a user's last event is the test target, the one before it
the validation target; training sees everything before the validation target. Test histories
include the validation event. Every item of the vocabulary is ranked (no sampled candidates).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from encoders.checkpoint import TrainedModel
from encoders.incremental import IncrementalEncoder, StepRequest
from encoders.metrics import at_k, ranks
from encoders.model import StreamRecModel, left_pad

Event = tuple[str, int, float]  # (item_id, event-type code, ts seconds)
Encoded = tuple[list[int], list[int], list[float]]  # (item rows, types, gaps)
SCORE_BATCH = 1024  # users scored per [B, N] block: bounds memory at large catalogs


@dataclass
class Split:
    """Per user: what training sees, and the (history, target) pairs it is judged on."""

    train: dict[str, list[Event]]
    valid: dict[str, tuple[list[Event], Event]]
    test: dict[str, tuple[list[Event], Event]]


def leave_one_out(sequences: Mapping[str, Sequence[Event]]) -> Split:
    """Users with >= 3 events give a validation and a test case; shorter ones train whole."""
    train: dict[str, list[Event]] = {}
    valid: dict[str, tuple[list[Event], Event]] = {}
    test: dict[str, tuple[list[Event], Event]] = {}
    for user, seq in sequences.items():
        seq = list(seq)
        if len(seq) >= 3:
            train[user] = seq[:-2]
            valid[user] = (seq[:-2], seq[-2])
            test[user] = (seq[:-1], seq[-1])
        elif seq:
            train[user] = seq
    return Split(train, valid, test)


def encode_history(seq: Sequence[Event], row_of: Mapping[str, int]) -> Encoded:
    """Item rows (0 = outside the vocabulary), type codes and gaps (-1 before the first)."""
    rows = [row_of.get(item, 0) for item, _, _ in seq]
    types = [int(t) for _, t, _ in seq]
    gaps = [-1.0] + [float(seq[i][2] - seq[i - 1][2]) for i in range(1, len(seq))]
    return rows, types, gaps[: len(seq)]


def user_vectors(
    model: StreamRecModel, item_vecs: Tensor, histories: Sequence[Encoded], batch: int = 512
) -> Tensor:
    """Vector after each history's last event [U,d]: a full forward over its last
    ``context_events`` events, which equals one over the whole history."""
    ctx = model.cfg.context_events
    out = []
    model.eval()
    with torch.no_grad():
        for s in range(0, len(histories), batch):
            part = [(r[-ctx:], t[-ctx:], g[-ctx:]) for r, t, g in histories[s : s + batch]]
            rows, types, gapb, valid = left_pad(part, model.cfg.n_gap_buckets)
            out.append(model.user_tower(item_vecs[rows], types, gapb, valid)[:, -1])
    return torch.cat(out) if out else item_vecs.new_zeros((0, item_vecs.shape[1]))


def rank_all(
    user_vecs: Tensor | None,
    item_scores: Tensor,
    histories: Sequence[Encoded],
    targets: Tensor,
    exclude_history: bool,
) -> Tensor:
    """Ranks of ``targets`` under per-user scores (user_vecs @ item_vecs.T, passed as
    ``item_scores`` = item_vecs) or under one score per item shared by every user
    (``user_vecs`` None, ``item_scores`` [N]). Scored in blocks of SCORE_BATCH users."""
    out = []
    for s in range(0, len(histories), SCORE_BATCH):
        e = min(s + SCORE_BATCH, len(histories))
        if user_vecs is None:
            scores = item_scores[None, :].expand(e - s, -1)
        else:
            scores = user_vecs[s:e] @ item_scores.T
        exclude = [h[0] for h in histories[s:e]] if exclude_history else None
        out.append(ranks(scores, targets[s:e], exclude))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def _cases(
    cases: Mapping[str, tuple[list[Event], Event]], row_of: Mapping[str, int]
) -> tuple[list[Encoded], Tensor]:
    users = [u for u, (h, _) in cases.items() if h]
    histories = [encode_history(cases[u][0], row_of) for u in users]
    targets = torch.tensor([row_of.get(cases[u][1][0], 0) for u in users], dtype=torch.long)
    return histories, targets


def evaluate_model(
    trained: TrainedModel,
    cases: Mapping[str, tuple[list[Event], Event]],
    ks: Iterable[int] = (10, 50),
    exclude_history: bool = True,
) -> dict[str, float]:
    """HR@k / NDCG@k of each case's target, ranked over the model's whole vocabulary."""
    histories, targets = _cases(cases, trained.row_of)
    item_vecs = trained.vocab_item_vectors()
    vecs = user_vectors(trained.model, item_vecs, histories)
    return at_k(rank_all(vecs, item_vecs, histories, targets, exclude_history), ks)


def popularity_scores(train: Mapping[str, Sequence[Event]], row_of: Mapping[str, int]) -> Tensor:
    """Training-event count per vocabulary row [N] (row 0 unused)."""
    counts = torch.zeros(len(row_of) + 1, dtype=torch.float64)
    for row, c in Counter(row_of.get(i, 0) for s in train.values() for i, _, _ in s).items():
        counts[row] = c
    return counts


def evaluate_popularity(
    train: Mapping[str, Sequence[Event]],
    cases: Mapping[str, tuple[list[Event], Event]],
    row_of: Mapping[str, int],
    ks: Iterable[int] = (10, 50),
    exclude_history: bool = True,
) -> dict[str, float]:
    """The same protocol for "most popular in training first"."""
    histories, targets = _cases(cases, row_of)
    pop = popularity_scores(train, row_of)
    return at_k(rank_all(None, pop, histories, targets, exclude_history), ks)


def serving_agreement(
    trained: TrainedModel, cases: Mapping[str, tuple[list[Event], Event]], users: int = 64
) -> dict[str, Any]:
    """Replays the histories of ``users`` cases event by event through the live worker's
    ``IncrementalEncoder`` and compares the last vectors with ``user_vectors``: the model that
    was evaluated is the one that serves. Returns the max abs difference and the sizes."""
    chosen = sorted(cases)[:users]
    histories = [encode_history(cases[u][0], trained.row_of) for u in chosen]
    item_vecs = trained.vocab_item_vectors()
    reference = user_vectors(trained.model, item_vecs, histories)
    enc = IncrementalEncoder(trained.model, cache_bytes=64 << 20)
    enc.set_item_vectors(item_vecs)
    ctx = trained.config.context_events
    last = torch.zeros_like(reference)
    steps = 0
    for pos in range(max((len(h[0]) for h in histories), default=0)):
        batch = [(b, h) for b, h in enumerate(histories) if pos < len(h[0])]
        reqs = [
            StepRequest(
                chosen[b],
                pos,
                h[0][max(0, pos + 1 - ctx) : pos + 1],
                h[1][max(0, pos + 1 - ctx) : pos + 1],
                h[2][max(0, pos + 1 - ctx) : pos + 1],
            )
            for b, h in batch
        ]
        out = enc.step(reqs)
        steps += len(reqs)
        last[[b for b, _ in batch]] = out
    diff = float((last - reference).abs().max()) if len(chosen) else 0.0
    return {"users": len(chosen), "events": steps, "max_abs_diff": diff, **vars(enc.stats)}
