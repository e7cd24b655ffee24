"""Beyond accuracy: how varied, how far-reaching and how unexpected a set of lists is.

* **intra-list diversity** (ILD): the mean pairwise cosine distance (1 - cos) between the item
  vectors of a list, averaged over lists;
* **categories per list**: distinct categories among a list's items (where the catalog has them);
* **catalog coverage**: the share of the catalog that appears in at least one list;
* **novelty**: the mean self-information of a listed item, -log2 of its share of the training
  events (an item never seen in training counts as seen once).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np


def list_metrics(
    lists: Sequence[Sequence[str]],
    vectors: np.ndarray | None,
    row_of: Mapping[str, int] | None,
    categories: Mapping[str, str] | None,
    counts: Mapping[str, int],
    n_catalog: int,
) -> dict[str, float]:
    """The four metrics over ``lists`` (each best first, already cut at the depth measured).
    ``vectors[row_of[item]]``: the item space ILD is measured in; ``counts``: training events
    per item."""
    out: dict[str, float] = {}
    if vectors is not None and row_of is not None:
        unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        ild = []
        for items in lists:
            rows = [row_of[i] for i in items if i in row_of]
            if len(rows) < 2:
                continue
            v = unit[rows]
            sim = v @ v.T
            n = len(rows)
            ild.append(
                float((n * n - sim.sum()) / (n * (n - 1)))
            )  # mean of 1 - cos off the diagonal
        out["ild"] = float(np.mean(ild)) if ild else 0.0
    if categories:
        per_list = [len({categories[i] for i in items if i in categories}) for items in lists]
        out["categories"] = float(np.mean(per_list)) if per_list else 0.0
    listed = {i for items in lists for i in items}
    out["coverage"] = len(listed) / n_catalog if n_catalog else 0.0
    total = sum(counts.values())
    info = (
        [-math.log2(max(counts.get(i, 0), 1) / total) for items in lists for i in items]
        if total
        else []
    )
    out["novelty"] = float(np.mean(info)) if info else 0.0
    return out
