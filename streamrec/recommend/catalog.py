"""The items a worker can recommend, and their vectors in the serving index."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from encoders.checkpoint import TrainedModel
from streamrec.events.schema import Item
from streamrec.retrieve.graph_store import GraphStore
from streamrec.retrieve.index import ItemIndex
from streamrec.retrieve.retriever import RetrievalConfig, Retriever

EMBED_CHUNK = 65536


@dataclass(frozen=True)
class CatalogSnapshot:
    """The catalog's rows in order, and each row's item (None: unlisted, no features)."""

    ids: list[str]
    items: list[Item | None]


def embed(model: TrainedModel | None, snapshot: CatalogSnapshot) -> torch.Tensor | None:
    """``model``'s vectors of the snapshot's rows; reads nothing else (safe in a thread)."""
    if model is None or not snapshot.ids:
        return None
    feats = [it.to_dict() if it is not None else {} for it in snapshot.items]
    return item_vectors(model, snapshot.ids, feats)


def item_vectors(model: TrainedModel, ids: list[str], feats: list[dict]) -> torch.Tensor:
    with torch.no_grad():
        # In chunks: the tower's hidden layer is 4d wide, ~1 KB per item, so a million-item
        # catalog in one call would peak at gigabytes.
        parts = [
            model.item_vectors(ids[i : i + EMBED_CHUNK], feats[i : i + EMBED_CHUNK])
            for i in range(0, len(ids), EMBED_CHUNK)
        ]
    return torch.cat(parts)


class Catalog:
    def __init__(
        self,
        model: TrainedModel | None,
        dim: int | None = None,
        retrieval: RetrievalConfig | None = None,
        graph_store: GraphStore | None = None,
    ) -> None:
        self.model = model
        self.graph_store = graph_store
        self.items: dict[str, Item] = {}
        d = model.config.d_model if model is not None else (dim or 1)
        self.index = ItemIndex(d)
        self.retrieval = retrieval or RetrievalConfig()
        self.retriever = Retriever(self.index, self.retrieval, graph_store)
        # Rows of items seen in events but not in the catalog, least recently seen first.
        self.unlisted: OrderedDict[str, int] = OrderedDict()
        self.unlisted_reused = 0
        self._touched: set[str] | None = None  # items upserted or given a row during a swap
        self._pinned: set[str] | None = None  # unlisted items handed out in the current batch

    def upsert_many(self, items: Iterable[Item]) -> bool:
        """Insert or update items; True when an existing row's vector changed."""
        batch = list({it.item_id: it for it in items}.values())
        if not batch:
            return False
        for it in batch:
            self.items[it.item_id] = it
            self.unlisted.pop(it.item_id, None)  # a catalog row now
            if self._touched is not None:
                self._touched.add(it.item_id)
        vectors = self._vectors([it.item_id for it in batch], [it.to_dict() for it in batch])
        changed = False
        for i, it in enumerate(batch):
            row = self.index.row_of.get(it.item_id)
            if vectors is not None and row is not None:
                changed = changed or not torch.equal(self.index.matrix[row], vectors[i])
            self.index.upsert(it.item_id, None if vectors is None else vectors[i], it.available)
        return changed

    def delete(self, item_id: str) -> None:
        self.items.pop(item_id, None)
        self.index.set_available(item_id, False)

    def row_for_history(self, item_id: str) -> int:
        """The item's row; an item not (yet) in the catalog gets a feature-less, unlisted row.
        Past ``max_unlisted_items`` such rows, the least recently seen one is given to it."""
        row = self.index.row_of.get(item_id)
        if row is not None:
            if item_id in self.unlisted:
                self.unlisted.move_to_end(item_id)
                if self._pinned is not None:
                    self._pinned.add(item_id)
            return row
        vectors = self._vectors([item_id], [{}])
        vector = None if vectors is None else vectors[0]
        full = len(self.unlisted) >= max(1, self.retrieval.max_unlisted_items)
        if full and not (self._pinned and next(iter(self.unlisted)) in self._pinned):
            _, row = self.unlisted.popitem(last=False)
            self.index.reassign(row, item_id, vector)
            self.unlisted_reused += 1
            if self._touched is not None:
                self._touched.add(item_id)
        else:
            row = self.index.upsert(item_id, vector, False)
        self.unlisted[item_id] = row
        if self._pinned is not None:
            self._pinned.add(item_id)
        return row

    @contextmanager
    def pinned_rows(self) -> Iterator[None]:
        """Rows handed out inside keep their item until the block ends: a batch looks all its
        rows up before the encoder reads them, so one given to another item meanwhile would feed
        it the wrong vector. A batch touching more unlisted items than the bound grows past it
        (by at most the batch's own items)."""
        self._pinned = set()
        try:
            yield
        finally:
            self._pinned = None

    def set_model(self, model: TrainedModel | None) -> None:
        """Re-embed every known row with a new model (rows and availability are kept)."""
        snapshot = self.snapshot()
        self.install_model(model, snapshot, embed(model, snapshot))

    # A new model in three steps, so that the costly middle one can run off the event loop:
    # ``snapshot`` (on the loop), ``embed`` (anywhere: it reads only the snapshot), and
    # ``install_model`` (on the loop, between batches), which re-embeds the rows that changed
    # since the snapshot.

    def snapshot(self) -> CatalogSnapshot:
        ids = list(self.index.ids)
        self._touched = set()
        return CatalogSnapshot(ids, [self.items.get(i) for i in ids])

    def drop_snapshot(self) -> None:
        """The swap it was for is off: stop noting changes."""
        self._touched = None

    def install_model(
        self, model: TrainedModel | None, snapshot: CatalogSnapshot, vectors: torch.Tensor | None
    ) -> None:
        touched, self._touched = self._touched or set(), None
        self.model = model
        if model is None:
            return
        if model.config.d_model != self.index.dim:
            old = self.index
            self.index = ItemIndex(model.config.d_model, capacity=max(1024, len(old)))
            for item_id in old.ids:
                self.index.upsert(item_id, None, old.is_available(item_id))
            self.retriever.close()
            self.retriever = Retriever(self.index, self.retrieval, self.graph_store)
        ids = snapshot.ids
        if ids and vectors is not None:
            self.index.set_vectors(torch.arange(len(ids)), vectors)
        # rows given to other items, upserted or added since the snapshot: embed them now
        stale = list(self.index.ids[len(ids) :])
        stale += [i for i in touched if i in self.index.row_of and self.index.row_of[i] < len(ids)]
        stale = list(dict.fromkeys(stale))
        if stale:
            feats = [self.items[i].to_dict() if i in self.items else {} for i in stale]
            fresh = self._vectors(stale, feats)
            assert fresh is not None
            rows = torch.tensor([self.index.row_of[i] for i in stale])
            self.index.set_vectors(rows, fresh)

    def _vectors(self, ids: list[str], feats: list[dict]) -> torch.Tensor | None:
        if self.model is None or not ids:
            return None
        return item_vectors(self.model, ids, feats)
