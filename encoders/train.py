"""Training (SASRec-style next-event-item prediction) and the holdout evaluation protocol.

Training sees exactly what serving computes: the same sliding-window mask, and every training
chunk is prefixed with up to ``context_events - 1`` earlier events that are attended to but not
scored, so a position deep in a long history is trained with the context it has in serving
rather than with a chunk boundary pretending to be the user's first event.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from encoders.checkpoint import TrainedModel
from encoders.evaluate import (
    encode_history,
    rank_all,
    user_vectors,
)
from encoders.item_features import ItemFeatures, ItemFeaturizer
from encoders.metrics import at_k
from encoders.model import EncoderConfig, StreamRecModel, left_pad
from encoders.private import DPConfig, PrivateSteps, SampleLoss, default_delta

log = logging.getLogger(__name__)

Event = tuple[str, int, float]  # (item_id, event-type code, ts seconds)
Encoded = tuple[list[int], list[int], list[float]]  # (item rows, types, gaps)
# Past this vocabulary size "auto" trains with sampled softmax: a full-vocabulary step costs
# O(items) in the item tower (7 s a step at Taobao's 41k items on one thread, 0.5 s sampled).
AUTO_SAMPLED_ITEMS = 8192


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
    eval_k: int = 10  # early stopping watches validation NDCG@eval_k
    exclude_history: bool = False  # validation ranking drops the user's own history items
    # "full": softmax over the whole vocabulary; "sampled": over the targets plus ``negatives``
    # items drawn uniformly per step and shared by the batch, the item tower run on the step's
    # rows only (a step costs the same at any catalog size); "auto": sampled once the
    # vocabulary is over AUTO_SAMPLED_ITEMS, full below
    loss: str = "auto"
    negatives: int = 1024
    max_minutes: float = 0.0  # stop after the epoch that passes this much time (0 = no limit)
    # SASRec's data scheme: each user's last max_seq_len positions only, without the earlier
    # context serving has (for the like-for-like baseline; False trains on whole histories)
    last_chunk_only: bool = False
    # "cosine": linear warm-up over the first epoch, then cosine decay to 0 at ``epochs``
    lr_schedule: str = "constant"
    # DP-SGD (encoders/private.py) when > 0: user-level (ε, δ) over the planned ``epochs``, each
    # user's gradient clipped to ``dp_clip`` (then ``grad_clip`` is not used); δ 0 = the default
    dp_epsilon: float = 0.0
    dp_delta: float = 0.0
    dp_clip: float = 1.0
    dp_microbatch: int = 16  # users whose per-sample gradients are held at once (memory)


# --------------------------------------------------------------------------------------------
# Data


def _ordered(seq: Sequence[Event]) -> list[Event]:
    return sorted(seq, key=lambda e: e[2])  # stable: equal timestamps keep their given order


_encode = encode_history


# --------------------------------------------------------------------------------------------
# Training


def _chunks(
    encoded: Sequence[Encoded], max_len: int, ctx: int, last_only: bool = False
) -> list[tuple[int, int, int, int]]:
    """(user, lo, s, e): inputs are events lo..e-1, positions s..e-1 are scored against the next
    event; lo reaches back ctx-1 events before s so scored positions see their serving context."""
    out = []
    for u, (rows, _, _) in enumerate(encoded):
        n = len(rows)
        starts = range(0, n - 1, max_len)
        if last_only:  # SASRec: the most recent max_len positions only, no earlier context
            starts = range(max(0, n - 1 - max_len), n - 1, max_len)
            ctx = 1
        for s in starts:
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


Validation = Mapping[str, Event]  # user -> the event right after their training sequence
OnBest = Callable[[TrainedModel], None]


def train_model(
    sequences: Mapping[str, Sequence[Event]],
    items: Mapping[str, Mapping[str, Any]],
    enc_cfg: EncoderConfig,
    train_cfg: TrainConfig,
    progress: bool = True,
    validation: Validation | None = None,
    on_best: OnBest | None = None,
    init: TrainedModel | None = None,
) -> TrainedModel:
    """Train on user_id -> time-ordered (item_id, event_type_code, ts) sequences and item_id ->
    {category, price, title, available} metadata. ``n_item_ids`` and ``n_categories`` of
    ``enc_cfg`` are replaced by the sizes found in the data.

    With ``init`` (fine-tuning, `streamrec trainer`) training starts from that model: its
    architecture and item featurizer are kept (``enc_cfg`` is not used), its vocabulary keeps
    its rows and items new in ``sequences`` are appended with a zero id embedding, so they start
    out described by their features alone, as serving describes items outside the vocabulary.

    Early stopping watches validation NDCG@eval_k: on ``validation`` (each user's next event
    after their sequence, e.g. leave-one-out's second-to-last) when given, else on the last
    event of ``val_users`` sampled users, held out of training. ``on_best`` receives the model
    each time validation improves (to checkpoint it); the best epoch's weights are returned."""
    started = time.perf_counter()
    old_threads = torch.get_num_threads()
    if train_cfg.num_threads > 0:
        torch.set_num_threads(train_cfg.num_threads)
    if train_cfg.loss not in ("full", "sampled", "auto"):
        raise ValueError(
            f"TrainConfig.loss must be 'full', 'sampled' or 'auto', got {train_cfg.loss!r}"
        )
    if train_cfg.lr_schedule not in ("constant", "cosine"):
        raise ValueError(
            f"TrainConfig.lr_schedule must be 'constant' or 'cosine', got {train_cfg.lr_schedule!r}"
        )
    try:
        # fork_rng: seeding must make this run reproducible without resetting the caller's RNG
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(train_cfg.seed)
            return _Trainer(sequences, items, enc_cfg, train_cfg, validation, init).run(
                progress, started, on_best
            )
    finally:
        torch.set_num_threads(old_threads)


def _grown_state(parent: TrainedModel, n_item_ids: int) -> dict[str, Tensor]:
    """The parent's weights with its id embedding grown to ``n_item_ids`` rows (new rows 0)."""
    state = {k: v.detach().clone() for k, v in parent.model.state_dict().items()}
    key = "item_tower.id_emb.weight"
    old = state[key]
    grown = old.new_zeros((n_item_ids, old.shape[1]))
    grown[: old.shape[0]] = old
    state[key] = grown
    return state


def _next_item_logits(
    h: Tensor, tgt: Tensor, vecs: Tensor, neg: Tensor | None
) -> tuple[Tensor, Tensor]:
    """The next-item softmax at positions ``h`` whose target rows of ``vecs`` are ``tgt`` (-1:
    not scored): its logits and class targets (-1 where not scored). Over every row when ``neg``
    is None (row 0, the unknown item, is never a target, so it is left out), else over the
    position's own target then the step's shared negatives ``vecs[neg]``, with a negative equal
    to the target masked (an accidental hit). Uniform negatives need no logQ correction: log q
    is the same constant for every item."""
    if neg is None:
        return h @ vecs[1:].T, torch.where(tgt >= 0, tgt - 1, -1)
    pos = (h * vecs[tgt.clamp(min=0)]).sum(-1, keepdim=True)
    negs = (h @ vecs[neg].T).masked_fill(neg[None, :] == tgt[:, None], float("-inf"))
    return torch.cat([pos, negs], dim=1), torch.where(tgt >= 0, 0, -1)


def _sample_loss(model: StreamRecModel, feats: ItemFeatures, neg: Tensor | None) -> SampleLoss:
    """One user's mean next-item loss over their chunk (the loss ``_Trainer._loss`` averages
    over a batch's positions), for per-user gradients."""

    def body(
        rows: Tensor, types: Tensor, gapb: Tensor, valid: Tensor, tgt: Tensor
    ) -> tuple[Tensor, Tensor]:
        vecs = model.item_tower(feats)
        h = model.user_tower(vecs[rows[None]], types[None], gapb[None], valid[None])[0]
        logits, t = _next_item_logits(h, tgt, vecs, neg)
        n = (t >= 0).sum().clamp(min=1)
        loss = F.cross_entropy(logits, t, ignore_index=-1, reduction="sum") / n
        return loss, loss.detach()

    return SampleLoss(model, body)


class _Trainer:
    def __init__(
        self,
        sequences: Mapping[str, Sequence[Event]],
        items: Mapping[str, Mapping[str, Any]],
        enc_cfg: EncoderConfig,
        tc: TrainConfig,
        validation: Validation | None,
        init: TrainedModel | None = None,
    ) -> None:
        self.tc = tc
        self.init = init
        if init is not None:
            enc_cfg = init.config
        ordered = {u: _ordered(s) for u, s in sequences.items() if len(s)}
        for u, seq in ordered.items():
            bad = [t for _, t, _ in seq if not 0 <= int(t) < enc_cfg.n_event_types]
            if bad:
                raise ValueError(f"user {u!r}: event type codes {bad[:3]} out of range")
        if validation is None:
            # the last event of a sample of users, kept out of training and vocabulary
            py_rng = random.Random(tc.seed)
            eligible = sorted(u for u, s in ordered.items() if len(s) >= 3)
            val_set = set(py_rng.sample(eligible, min(tc.val_users, len(eligible))))
            validation = {u: ordered[u][-1] for u in val_set}
            train_seqs = {u: (s[:-1] if u in val_set else s) for u, s in ordered.items()}
        else:
            train_seqs = ordered
        self.n_users, self.n_events = len(ordered), sum(len(s) for s in ordered.values())
        seen = {item for seq in train_seqs.values() for item, _, _ in seq}
        if not seen:
            raise ValueError("no training events")
        if init is None:
            self.vocab = sorted(seen)
            self.featurizer = ItemFeaturizer.fit(
                items.values(), enc_cfg.n_price_buckets, enc_cfg.title_buckets
            )
        else:
            # the parent's rows stay where they are (its weights are copied by row)
            self.vocab = list(init.item_ids) + sorted(seen.difference(init.item_ids))
            self.featurizer = init.featurizer
        row_of = {item: r + 1 for r, item in enumerate(self.vocab)}
        self.cfg = cfg = replace(
            enc_cfg, n_item_ids=len(self.vocab) + 1, n_categories=self.featurizer.n_categories
        )
        self.full_softmax = cfg.n_item_ids - 1 <= tc.negatives or (
            tc.loss == "full" or (tc.loss == "auto" and cfg.n_item_ids - 1 <= AUTO_SAMPLED_ITEMS)
        )
        self.vocab_features: ItemFeatures = self.featurizer.encode(
            [{}] + [items.get(i, {}) for i in self.vocab], range(cfg.n_item_ids)
        )
        users = sorted(train_seqs)
        self.encoded = [_encode(train_seqs[u], row_of) for u in users]
        val_users = sorted(u for u in validation if train_seqs.get(u))
        self.val_hist = [_encode(train_seqs[u], row_of) for u in val_users]
        self.val_targets = torch.tensor(
            [row_of.get(validation[u][0], 0) for u in val_users], dtype=torch.long
        )
        self.chunks = _chunks(self.encoded, tc.max_seq_len, cfg.context_events, tc.last_chunk_only)
        if tc.dp_epsilon > 0:
            # the privacy unit is the user: one chunk each, their most recent
            last = {c[0]: c for c in self.chunks}
            self.chunks = list(last.values())
        if not self.chunks:
            raise ValueError("no user has two training events; nothing to predict")

    def _optimizer(self, model: StreamRecModel) -> torch.optim.Optimizer:
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for name, p in model.named_parameters():
            (decay if p.dim() >= 2 and "rel_bias" not in name else no_decay).append(p)
        return torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": self.tc.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=self.tc.lr,
            betas=(0.9, 0.98),
        )

    def _step_items(
        self, rows: Tensor, tgt: Tensor
    ) -> tuple[ItemFeatures, Tensor, Tensor, Tensor | None]:
        """The item features a step embeds, and its input and target rows re-indexed into
        them, and its negatives (None: the full softmax). With sampled softmax the item tower
        runs on the rows the step uses only (inputs, targets, ``negatives`` uniform draws shared
        by the batch), so a step costs the same at any catalog size."""
        tc, cfg = self.tc, self.cfg
        ids = self.all_ids
        if tc.id_dropout > 0:
            # teach the feature path to stand alone: it is all an unseen item will have
            ids = torch.where(torch.rand(cfg.n_item_ids) < tc.id_dropout, 0, ids)
        if self.full_softmax:
            return self.vocab_features.with_id_index(ids), rows, tgt, None
        neg = torch.randint(1, cfg.n_item_ids, (tc.negatives,))
        used = torch.unique(torch.cat([rows.flatten(), tgt[tgt >= 0], neg]))
        feats = self.vocab_features.select(used).with_id_index(ids[used])
        tgt = torch.where(tgt >= 0, torch.searchsorted(used, tgt.clamp(min=0)), -1)
        return feats, torch.searchsorted(used, rows), tgt, torch.searchsorted(used, neg)

    def _loss(
        self, model: StreamRecModel, part: Sequence[tuple[int, int, int, int]]
    ) -> tuple[Tensor, int]:
        rows, types, gapb, valid, tgt = _batch(self.encoded, part, self.cfg.n_gap_buckets)
        feats, rows, tgt, neg = self._step_items(rows, tgt)
        vecs = model.item_tower(feats)
        scored = tgt >= 0
        h = model.user_tower(vecs[rows], types, gapb, valid)[scored]
        logits, t = _next_item_logits(h, tgt[scored], vecs, neg)
        return F.cross_entropy(logits, t), int(scored.sum())

    def _private_step(
        self,
        model: StreamRecModel,
        part: Sequence[tuple[int, int, int, int]],
        private: PrivateSteps,
    ) -> tuple[float, int]:
        """One DP-SGD step on the users Poisson-sampled into ``part``: each user's gradient of
        their own mean loss, clipped, summed, noised."""
        summed: dict[str, Tensor] = {}
        total, count = 0.0, 0
        size = max(1, self.tc.dp_microbatch)
        for m in range(0, len(part), size):
            batch = _batch(self.encoded, part[m : m + size], self.cfg.n_gap_buckets)
            rows, types, gapb, valid, tgt = batch
            feats, rows, tgt, neg = self._step_items(rows, tgt)
            body = _sample_loss(model, feats, neg)
            grads, losses = private.per_sample_grads(body, (rows, types, gapb, valid, tgt))
            for k, g in private.clipped_sum(grads).items():
                summed[k] = summed[k] + g if k in summed else g
            scored = (tgt >= 0).sum(dim=1)
            total += float((losses * scored).sum())
            count += int(scored.sum())
        private.apply(summed, len(self.chunks))
        return total, count

    def _validate(self, model: StreamRecModel) -> dict[str, float]:
        model.eval()
        with torch.no_grad():
            item_vecs = model.item_tower(self.vocab_features)
            vecs = user_vectors(model, item_vecs, self.val_hist)
            r = rank_all(vecs, item_vecs, self.val_hist, self.val_targets, self.tc.exclude_history)
        return at_k(r, (self.tc.eval_k,))

    def _trained(self, model: StreamRecModel, metadata: dict[str, Any]) -> TrainedModel:
        return TrainedModel(
            model=model,
            config=self.cfg,
            item_ids=self.vocab,
            featurizer=self.featurizer,
            vocab_features=self.vocab_features,
            model_version=f"enc-{_state_digest(model)}",
            metadata={"training": metadata},
        )

    def _batches(self, gen: torch.Generator) -> list[list[tuple[int, int, int, int]]]:
        """One epoch's batches of ``batch_size`` chunks in random order. (Batching chunks of
        similar length would halve the padding, but on ML-1M it slowed learning per step
        several-fold, by chunk count or by token budget alike: mixed batches learn faster.)"""
        bs = self.tc.batch_size
        order = torch.randperm(len(self.chunks), generator=gen).tolist()
        return [[self.chunks[i] for i in order[b : b + bs]] for b in range(0, len(order), bs)]

    def _lr_factor(self, step: int, steps_per_epoch: int) -> float:
        if self.tc.lr_schedule == "constant":
            return 1.0
        if step < steps_per_epoch:
            return (step + 1) / steps_per_epoch
        total = max(1, self.tc.epochs * steps_per_epoch - steps_per_epoch)
        done = min(1.0, (step - steps_per_epoch) / total)
        return 0.5 * (1.0 + math.cos(math.pi * done))

    def run(self, progress: bool, started: float, on_best: OnBest | None) -> TrainedModel:
        tc, cfg = self.tc, self.cfg
        model = StreamRecModel(cfg)
        if self.init is not None:
            model.load_state_dict(_grown_state(self.init, cfg.n_item_ids))
        opt = self._optimizer(model)
        gen = torch.Generator().manual_seed(tc.seed)
        self.all_ids = torch.arange(cfg.n_item_ids)
        n_batches = (len(self.chunks) + tc.batch_size - 1) // tc.batch_size
        private = None
        if tc.dp_epsilon > 0:
            n = len(self.chunks)
            rate = min(1.0, tc.batch_size / n)
            n_batches = max(1, round(1 / rate))
            delta = tc.dp_delta or default_delta(n)
            dp = DPConfig(tc.dp_epsilon, delta, tc.dp_clip)
            private = PrivateSteps(model, dp, rate, tc.epochs * n_batches, tc.seed)
            log.info(
                "DP-SGD: epsilon %.3g, delta %.3g, clip %.3g, noise multiplier %.3f, %d users "
                "at rate %.4f",
                dp.epsilon, delta, dp.clip_norm, private.sigma, n, rate,
            )  # fmt: skip
        k = tc.eval_k
        step = 0

        best_metric, best_epoch, best_state = -1.0, 0, None
        best_val: dict[str, float | None] = {"hr": None, "ndcg": None}
        history: list[dict[str, float]] = []
        epochs_run, epoch_loss = 0, float("nan")  # NaN until an epoch has run
        bar = tqdm(total=tc.epochs * n_batches, disable=not progress, desc="train", unit="batch")
        for epoch in range(1, tc.epochs + 1):
            model.train()
            total, count = 0.0, 0
            if private is None:
                parts = self._batches(gen)
            else:
                parts = [
                    [self.chunks[i] for i in private.sample(len(self.chunks), gen)]
                    for _ in range(n_batches)
                ]
            for part in parts:
                for group in opt.param_groups:
                    group["lr"] = tc.lr * self._lr_factor(step, n_batches)
                step += 1
                opt.zero_grad(set_to_none=True)
                if private is not None:
                    step_total, n_scored = self._private_step(model, part, private)
                    opt.step()
                    with torch.no_grad():  # the noise reached the unknown-item row too: re-pin it
                        model.item_tower.id_emb.weight[0].zero_()
                    total += step_total
                    count += n_scored
                    bar.update(1)
                    continue
                loss, n_scored = self._loss(model, part)
                loss.backward()
                if tc.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
                opt.step()
                total += loss.item() * n_scored
                count += n_scored
                bar.update(1)
            epoch_loss = total / max(count, 1)
            epochs_run = epoch
            elapsed_min = (time.perf_counter() - started) / 60
            out_of_time = tc.max_minutes > 0 and elapsed_min >= tc.max_minutes
            if not len(self.val_targets):
                bar.set_postfix(epoch=epoch, loss=f"{epoch_loss:.4f}")
                history.append({"epoch": epoch, "loss": epoch_loss, "minutes": elapsed_min})
                if out_of_time:
                    break
                continue
            val = self._validate(model)
            hr, ndcg = val[f"hr@{k}"], val[f"ndcg@{k}"]
            history.append(
                {"epoch": epoch, "loss": epoch_loss, "minutes": elapsed_min, f"val_ndcg@{k}": ndcg}
            )
            bar.set_postfix(epoch=epoch, loss=f"{epoch_loss:.4f}", val_ndcg=f"{ndcg:.4f}")
            if ndcg > best_metric:
                best_metric, best_epoch = ndcg, epoch
                best_val = {"hr": hr, "ndcg": ndcg}
                best_state = {n: v.detach().clone() for n, v in model.state_dict().items()}
                if on_best is not None:
                    snapshot = StreamRecModel(cfg)
                    snapshot.load_state_dict(best_state)
                    on_best(self._trained(snapshot.eval(), {"best_epoch": epoch, **best_val}))
            elif tc.patience > 0 and epoch - best_epoch >= tc.patience:
                break
            if out_of_time:
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
            f"val_hr@{k}": best_val["hr"],
            f"val_ndcg@{k}": best_val["ndcg"],
            "val_users": len(self.val_targets),
            "users": self.n_users,
            "events": self.n_events,
            "vocab_size": len(self.vocab),
            "seconds": round(seconds, 3),
            "train_config": asdict(tc),
            "history": history,
        }
        if private is not None:
            summary["dp"] = private.metadata()
        log.info(
            "trained %d epochs (best %d) in %.1fs: loss %.4f, val HR@%d %s NDCG@%d %s "
            "(%d users, %d events, %d items)",
            epochs_run,
            best_epoch,
            seconds,
            epoch_loss,
            k,
            _fmt(best_val["hr"]),
            k,
            _fmt(best_val["ndcg"]),
            self.n_users,
            self.n_events,
            len(self.vocab),
        )
        return self._trained(model, summary)
