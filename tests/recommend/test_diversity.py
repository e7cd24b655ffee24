"""MMR re-ranking and the beyond-accuracy metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamrec.events.schema import Event, Item
from streamrec.recommend.candidates import CandidateBatch
from streamrec.recommend.diversity import mmr_scores
from streamrec.recommend.engine import Recommender
from streamrec.recommend.list_metrics import list_metrics
from streamrec.settings import SettingsError, load_settings
from tests.recommend.test_engine import feed


def one_user(items: list[str]) -> CandidateBatch:
    b = CandidateBatch()
    b.item_ids = list(items)
    b.users = [0] * len(items)
    b.offsets = [0, len(items)]
    b.sources = [1] * len(items)
    b.features = np.zeros((len(items), 12), np.float32)
    return b


# a, a2 near-duplicates; b and c elsewhere
VECTORS = np.array([[1.0, 0.0], [0.99, 0.05], [0.0, 1.0], [-0.7, 0.7]], np.float32)
SCORES = np.array([1.0, 0.99, 0.9, 0.5], np.float32)


def picked(scores: np.ndarray, batch: CandidateBatch, k: int) -> list[str]:
    return [batch.item_ids[r] for r in batch.top_rows(scores, k)[0]]


def test_diversity_zero_is_the_ranked_list():
    b = one_user(["a", "a2", "b", "c"])
    assert mmr_scores(b, SCORES, 2, 0.0, VECTORS, None) is SCORES


@pytest.mark.parametrize(("lam", "want"), [(0.01, ["a", "a2"]), (0.5, ["a", "b"])])
def test_a_near_duplicate_gives_way_to_a_different_item(lam, want):
    b = one_user(["a", "a2", "b", "c"])
    assert picked(mmr_scores(b, SCORES, 2, lam, VECTORS, None), b, 2) == want


def test_categories_alone_diversify_without_vectors():
    b = one_user(["a", "a2", "b", "c"])
    cats = ["shoes", "shoes", "shoes", "hats"]
    assert picked(mmr_scores(b, SCORES, 2, 0.5, None, cats), b, 2) == ["a", "c"]
    # unknown categories are never "the same"
    assert picked(mmr_scores(b, SCORES, 2, 0.5, None, [None] * 4), b, 2) == ["a", "a2"]


def test_the_rest_of_the_list_keeps_its_order_below_the_picks():
    b = one_user(["a", "a2", "b", "c"])
    s = mmr_scores(b, SCORES, 2, 0.5, VECTORS, None)
    assert picked(s, b, 4) == ["a", "b", "a2", "c"]


def test_list_metrics():
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]])
    row_of = {"x": 0, "y": 1, "x2": 2}
    counts = {"x": 2, "y": 2, "x2": 4}
    m = list_metrics(
        [["x", "y"], ["x", "x2"]], vectors, row_of, {"x": "a", "y": "b", "x2": "a"}, counts, 6
    )
    assert m["ild"] == pytest.approx(0.5)  # orthogonal pair 1, parallel pair 0
    assert m["categories"] == pytest.approx(1.5)
    assert m["coverage"] == pytest.approx(3 / 6)
    want = (2 * -math.log2(2 / 8) + -math.log2(2 / 8) + -math.log2(4 / 8)) / 4
    assert m["novelty"] == pytest.approx(want)


def test_a_worker_with_diversity_spreads_its_list_over_categories():
    events = [Event(f"e{n}", "x", f"s{n}", "click", 1.7e9 + n) for n in range(4)]
    items = [Item(f"s{n}", "shoes", 1.0) for n in range(4)] + [Item("h0", "hats", 1.0)]
    events.append(Event("o", "other", "h0", "click", 1.7e9))
    lists = {}
    for lam in ("0", "0.8"):
        env = {"STREAMREC_RECS_K": "3", "STREAMREC_RECS_DIVERSITY": lam}
        rec = Recommender(load_settings(env=env), None)
        rec.upsert_items(items)
        lists[lam] = {r["user_id"]: r for r in rec.recommend(feed(rec, events))}["x"]
    plain = [e["item_id"] for e in lists["0"]["items"]]
    diverse = [e["item_id"] for e in lists["0.8"]["items"]]
    assert plain == ["s3", "s2", "s1"]  # own items, newest first: all shoes
    assert diverse[0] == "s3" and "h0" in diverse  # the popular hat makes it in


def test_diversity_must_lie_between_0_and_1():
    with pytest.raises(SettingsError, match="between 0 and 1"):
        load_settings(env={"STREAMREC_RECS_DIVERSITY": "1.5"})
