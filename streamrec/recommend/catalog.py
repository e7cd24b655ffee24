"""The items a worker can recommend, and their vectors in the serving index."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

import torch

from encoders.checkpoint import TrainedModel
from streamrec.events.schema import Item
from streamrec.retrieve.index import ItemIndex
from streamrec.retrieve.retriever import RetrievalConfig, Retriever

EMBED_CHUNK = 65536


class Catalog:
    def __init__(
        self,
        model: TrainedModel | None,
        dim: int | None = None,
        retrieval: RetrievalConfig | None = None,
    ) -> None:
        self.model = model
        self.items: dict[str, Item] = {}
        d = model.config.d_model if model is not None else (dim or 1)
        self.index = ItemIndex(d)
        self.retrieval = retrieval or RetrievalConfig()
        self.retriever = Retriever(self.index, self.retrieval)
        # Rows of items seen in events but not in the catalog, least recently seen first.
        self.unlisted: OrderedDict[str, int] = OrderedDict()
        self.unlisted_reused = 0

    def upsert_many(self, items: Iterable[Item]) -> bool:
        """Insert or update items; True when an existing row's vector changed."""
        batch = list({it.item_id: it for it in items}.values())
        if not batch:
            return False
        for it in batch:
            self.items[it.item_id] = it
            self.unlisted.pop(it.item_id, None)  # a catalog row now
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
            return row
        vectors = self._vectors([item_id], [{}])
        vector = None if vectors is None else vectors[0]
        if len(self.unlisted) >= max(1, self.retrieval.max_unlisted_items):
            _, row = self.unlisted.popitem(last=False)
            self.index.reassign(row, item_id, vector)
            self.unlisted_reused += 1
        else:
            row = self.index.upsert(item_id, vector, False)
        self.unlisted[item_id] = row
        return row

    def set_model(self, model: TrainedModel | None) -> None:
        """Re-embed every known row with a new model (rows and availability are kept)."""
        self.model = model
        if model is None:
            return
        if model.config.d_model != self.index.dim:
            old = self.index
            self.index = ItemIndex(model.config.d_model, capacity=max(1024, len(old)))
            for item_id in old.ids:
                self.index.upsert(item_id, None, old.is_available(item_id))
            self.retriever.close()
            self.retriever = Retriever(self.index, self.retrieval)
        ids = list(self.index.ids)
        if ids:
            feats = [self.items[i].to_dict() if i in self.items else {} for i in ids]
            vectors = self._vectors(ids, feats)
            assert vectors is not None
            self.index.set_vectors(torch.arange(len(ids)), vectors)

    def _vectors(self, ids: list[str], feats: list[dict]) -> torch.Tensor | None:
        if self.model is None:
            return None
        with torch.no_grad():
            # In chunks: the tower's hidden layer is 4d wide, ~1 KB per item, so a million-item
            # catalog in one call would peak at gigabytes.
            parts = [
                self.model.item_vectors(ids[i : i + EMBED_CHUNK], feats[i : i + EMBED_CHUNK])
                for i in range(0, len(ids), EMBED_CHUNK)
            ]
        return torch.cat(parts) if parts else None
