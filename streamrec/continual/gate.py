"""The gate before serving: a candidate checkpoint against the serving one, on held-out events
newer than anything the candidate trained on (prequential), through the lists the worker would
serve with each (candidates from every source, ranked by the checkpoint's ranker)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from encoders.checkpoint import TrainedModel
from encoders.metrics import at_k
from streamrec.continual.window import Case
from streamrec.recommend.offline import (
    ListProtocol,
    ListState,
    candidates_for,
    ranks_of,
    served_scores,
)

METRIC = "ndcg@10"


def served_metrics(
    trained: TrainedModel | None,
    holdout: Sequence[Case],
    state: ListState,
    protocol: ListProtocol,
) -> dict[str, float]:
    """HR/NDCG@10 of the lists served with ``trained`` (None: the heuristic blend) at each
    held-out event, the user's history before it as context."""
    cases = [(h, t) for h, t in holdout if h]
    if not cases:
        return {"hr@10": 0.0, METRIC: 0.0, "cases": 0.0}
    blocks = candidates_for(cases, state, protocol, trained)
    out = at_k(torch.from_numpy(ranks_of(blocks, served_scores(trained))), (10,))
    out["cases"] = float(len(cases))
    return out


@dataclass(frozen=True)
class Decision:
    accepted: bool
    reason: str
    candidate: dict[str, float]
    serving: dict[str, float]


def decide(
    candidate: Mapping[str, float], serving: Mapping[str, float], tolerance: float
) -> Decision:
    """Publish only a candidate not worse than the serving model by more than ``tolerance``
    (relative, on NDCG@10), and never one measured on no held-out event."""
    c, s = dict(candidate), dict(serving)
    if not c.get("cases"):
        return Decision(False, "no held-out events to judge the candidate on", c, s)
    floor = s[METRIC] * (1.0 - tolerance)
    if c[METRIC] < floor:
        why = f"{METRIC} {c[METRIC]:.4f} < serving {s[METRIC]:.4f} x (1 - {tolerance:g})"
        return Decision(False, why, c, s)
    return Decision(True, f"{METRIC} {c[METRIC]:.4f} vs serving {s[METRIC]:.4f}", c, s)
