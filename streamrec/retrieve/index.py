"""Exact top-K by inner product over the item matrix, with per-user exclusions.

A deleted or unavailable item keeps its row with a -inf bias. Only unlisted rows (items seen in
events, absent from the catalog) are ever given to another item (``reassign``, by the catalog's
bound on them): rows are looked up afresh for each event the encoder steps, and its cached states
hold the vectors they were computed from, not rows. The score buffer is preallocated and
grown geometrically up to its bound (allocating a fresh [B, N] buffer per call costs more than the
matmul at large N); past the bound the catalog is scanned in slices.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

NEG_INF = float("-inf")
# Floats in the exact scan's score buffer at most (64 MB).
SCORE_BUFFER = 16 * 2**20


class ItemIndex:
    def __init__(self, dim: int, capacity: int = 1024) -> None:
        self.dim = dim
        self.ids: list[str] = []
        self.row_of: dict[str, int] = {}
        self._matrix = torch.zeros(capacity, dim)
        self._bias = torch.full((capacity,), NEG_INF)
        # the same availability as Python bytes: one per row, read per candidate on the hot path
        # (a tensor element read costs microseconds)
        self._listed = bytearray(capacity)
        self._scores = torch.empty(0)
        self._available = 0
        # Rows listable with a vector other than the one they had at the last ``take_changes()``
        # (new, re-embedded, or made available again): what a snapshot-based index must re-check.
        self.changed: set[int] = set()

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def matrix(self) -> torch.Tensor:
        """The live [N, dim] item vectors (a view; do not keep it across upserts)."""
        return self._matrix[: len(self.ids)]

    @property
    def bias(self) -> torch.Tensor:
        """0 for available rows, -inf for the others [N] (a view)."""
        return self._bias[: len(self.ids)]

    @property
    def n_available(self) -> int:
        return self._available

    def take_changes(self) -> set[int]:
        changed, self.changed = self.changed, set()
        return changed

    def snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the available rows' vectors [n, d] and their row numbers [n]."""
        rows = torch.nonzero(torch.isfinite(self.bias)).flatten()
        return self.matrix[rows].numpy().copy(), rows.numpy().copy()

    def _grow(self, need: int) -> None:
        cap = self._matrix.shape[0]
        if need <= cap:
            return
        new_cap = max(need, cap * 2)
        matrix = torch.zeros(new_cap, self.dim)
        matrix[:cap] = self._matrix
        bias = torch.full((new_cap,), NEG_INF)
        bias[:cap] = self._bias
        self._matrix, self._bias = matrix, bias
        self._listed.extend(bytes(new_cap - cap))

    def upsert(self, item_id: str, vector: torch.Tensor | None, available: bool) -> int:
        """Insert or update one item; returns its row."""
        row = self.row_of.get(item_id)
        if row is None:
            row = len(self.ids)
            self._grow(row + 1)
            self.ids.append(item_id)
            self.row_of[item_id] = row
        was_available = bool(self._listed[row])
        moved = False
        if vector is not None and not torch.equal(self._matrix[row], vector):
            self._matrix[row] = vector
            moved = True
        self._set_bias(row, available)
        if available and (moved or not was_available):
            self.changed.add(row)
        return row

    def reassign(self, row: int, item_id: str, vector: torch.Tensor | None) -> None:
        """Give an unavailable row to another item (which must not have one)."""
        if self._listed[row]:
            raise ValueError(f"row {row} is listed; only unlisted rows are reassigned")
        if item_id in self.row_of:
            raise ValueError(f"{item_id!r} already has row {self.row_of[item_id]}")
        del self.row_of[self.ids[row]]
        self.ids[row] = item_id
        self.row_of[item_id] = row
        self._matrix[row] = 0.0 if vector is None else vector

    def set_vectors(self, rows: torch.Tensor, vectors: torch.Tensor) -> None:
        self._matrix[rows] = vectors
        listable = rows[torch.isfinite(self._bias[rows])]
        self.changed.update(listable.tolist())

    def set_available(self, item_id: str, available: bool) -> None:
        row = self.row_of.get(item_id)
        if row is not None:
            if available and not self._listed[row]:
                self.changed.add(row)
            self._set_bias(row, available)

    def _set_bias(self, row: int, available: bool) -> None:
        before = bool(self._listed[row])
        if before != available:
            self._available += 1 if available else -1
            self._bias[row] = 0.0 if available else NEG_INF
            self._listed[row] = available

    def is_available(self, item_id: str) -> bool:
        row = self.row_of.get(item_id)
        return row is not None and bool(self._listed[row])

    def topk(
        self,
        user_vectors: torch.Tensor,
        k: int,
        exclude_rows: Sequence[Sequence[int]] = (),
    ) -> list[list[tuple[int, float]]]:
        """Exact top-``k`` available rows per user, skipping each user's ``exclude_rows``. The
        score buffer holds at most ``SCORE_BUFFER`` floats: past that the catalog is scanned in
        slices of rows, each slice's top-``k`` kept, and those merged (a 1M-item catalog scored
        for a batch of 256 at once would take 1 GB)."""
        n = len(self.ids)
        b = user_vectors.shape[0]
        if n == 0 or b == 0:
            return [[] for _ in range(b)]
        width = max(1, min(n, SCORE_BUFFER // b))
        if self._scores.numel() < b * width:
            self._scores = torch.empty(max(b * width, min(SCORE_BUFFER, self._scores.numel() * 2)))
        excluded = [
            torch.as_tensor(rows, dtype=torch.long) if rows else None for rows in exclude_rows
        ]
        parts_v: list[torch.Tensor] = []
        parts_i: list[torch.Tensor] = []
        for start in range(0, n, width):
            stop = min(n, start + width)
            scores = self._scores[: b * (stop - start)].view(b, stop - start)
            torch.addmm(
                self._bias[start:stop], user_vectors, self._matrix[start:stop].t(), out=scores
            )
            for i, rows in enumerate(excluded):
                if rows is not None:
                    inside = rows[(rows >= start) & (rows < stop)]
                    if inside.numel():
                        scores[i, inside - start] = NEG_INF
            values, indices = torch.topk(scores, min(k, stop - start), dim=1)
            parts_v.append(values)
            parts_i.append(indices + start)
        if len(parts_v) == 1:
            values, indices = parts_v[0], parts_i[0]
        else:
            merged_v, merged_i = torch.cat(parts_v, dim=1), torch.cat(parts_i, dim=1)
            values, pick = torch.topk(merged_v, min(k, merged_v.shape[1]), dim=1)
            indices = torch.gather(merged_i, 1, pick)
        out: list[list[tuple[int, float]]] = []
        for vals, idx in zip(values.tolist(), indices.tolist(), strict=True):
            out.append([(r, v) for r, v in zip(idx, vals, strict=True) if v != NEG_INF])
        return out
