"""Reasons for listed items: which kind, which of the user's items, and the text."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from jsonschema import Draft202012Validator

from streamrec.events.schema import Item
from streamrec.features.covisit import CoVisitation
from streamrec.recommend.candidates import CandidateConfig, F, UserContext, build_candidates
from streamrec.recommend.engine import Recommender
from streamrec.recommend.explain import Evidence, explain, ranked_kinds, tier_kinds
from streamrec.settings import load_settings
from tests.recommend.test_engine import blend_events, feed

T = 1.7e9
SCHEMA = json.loads(
    (Path(__file__).resolve().parents[2] / "docs/schemas/recommendation.schema.json").read_text()
)


def heuristic_lists(env: dict[str, str] | None = None) -> dict[str, dict]:
    rec = Recommender(load_settings(env={"STREAMREC_RECS_K": "4", **(env or {})}), None)
    rec.upsert_items([Item(f"p{i}", "c", 1.0, f"Title {i}") for i in range(6)])
    return {r["user_id"]: r for r in rec.recommend(feed(rec, blend_events()))}


def test_heuristic_lists_explain_each_item_by_the_tier_that_placed_it():
    lists = heuristic_lists()
    x = lists["x"]  # x touched p4 then p1; others touched p1 then p3; p2 is popular
    assert x["schema"] == 1 and x["schema_minor"] == 1
    Draft202012Validator(SCHEMA).validate(x)
    why = {e["item_id"]: e["why"] for e in x["items"]}
    assert why["p1"] == {"kind": "repeat", "because": ["p1"], "text": "You clicked it just now"}
    assert why["p4"]["kind"] == "repeat" and why["p4"]["text"] == "You clicked it just now"
    assert why["p3"]["kind"] == "covisit" and why["p3"]["because"] == ["p1"]
    assert why["p3"]["text"] == "Often clicked together with “Title 1”"
    assert why["p2"] == {"kind": "popular", "because": [], "text": "Popular right now"}


def test_reasons_are_left_out_when_explain_is_off():
    lists = heuristic_lists({"STREAMREC_RECS_EXPLAIN": "false"})
    assert lists["x"]["items"] and all("why" not in e for e in lists["x"]["items"])
    Draft202012Validator(SCHEMA).validate(lists["x"])


def test_a_repeat_reason_counts_the_users_events_and_says_how_long_ago():
    history = [("a", 0, T), ("b", 0, T + 10), ("a", 1, T + 100), ("c", 2, T + 200)]
    ctx = UserContext(history, frozenset(), T + 100 + 3 * 3600)
    [[a, c]] = explain([ctx], [["a", "c"]], [["repeat", "repeat"]], Evidence())
    assert a == {"kind": "repeat", "because": ["a"], "text": "You clicked it 2 times, last 3 h ago"}
    assert c["text"] == "You bought it 2 h ago"


def test_a_covisit_reason_names_the_users_items_that_lead_to_it_heaviest_first():
    cv = CoVisitation()
    for n in range(3):  # x and y both lead to z; x more often, and x is the newer of the two
        cv.observe_sequence([("x", 0, T + 10 * n), ("z", 0, T + 10 * n + 1)])
    cv.observe_sequence([("y", 0, T + 100), ("z", 0, T + 101)])
    cv.observe_sequence([("w", 0, T + 100), ("q", 0, T + 101)])
    ctx = UserContext([("y", 0, T + 200), ("w", 0, T + 201), ("x", 0, T + 202)], frozenset(), T)
    [[z]] = explain([ctx], [["z"]], [["covisit"]], Evidence(covisit=cv))
    assert z["kind"] == "covisit" and z["because"] == ["x", "y"]  # w does not lead to z
    assert z["text"] == "Often viewed together with x and y"


def test_a_similar_reason_names_the_history_items_closest_in_the_item_space():
    vectors = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7], [0.9, 0.1], [-1.0, 0.0]])
    row_of = {"a": 0, "b": 1, "c": 2, "z": 3, "far": 4}
    history = [("a", 0, T), ("b", 1, T + 1), ("c", 0, T + 2), ("far", 0, T + 3)]
    ctx = UserContext(history, frozenset(), T + 3)
    [[z]] = explain([ctx], [["z"]], [["similar"]], Evidence(vectors=vectors, row_of=row_of))
    assert z["because"] == ["a", "c"]  # cosine 0.99, 0.77; b 0.11 third; far is negative
    assert z["text"] == "Similar to a and c, which you viewed"
    # several similar items in one list, one of them in the history itself: never its own reason
    [[z, a]] = explain(
        [ctx], [["z", "a"]], [["similar", "similar"]], Evidence(vectors=vectors, row_of=row_of)
    )
    assert z["because"] == ["a", "c"]
    assert a["because"] == ["c"]  # not a itself (cosine 1); b is orthogonal, far negative


def test_ranked_kinds_follow_the_scorer_not_the_source_that_proposed_the_item():
    """An item of the user's history that also co-visits: whichever group the scorer leans on
    names the reason. Scoring on co-visitation alone, the item is 'covisit'; on history
    alone, 'repeat'. A kind the scorer ignores is never given."""
    cv = CoVisitation()
    for n in range(3):
        cv.observe_sequence([("x", 0, T + 10 * n), ("y", 0, T + 10 * n + 1)])
    cfg = CandidateConfig(recent=5, covisit=5, model=0, popular=2)
    ctx = UserContext([("y", 0, T + 100), ("x", 0, T + 101)], frozenset(), T + 101)
    batch = build_candidates([ctx], cfg, cv, [("y", 0.0), ("p", -1.0)])
    y = batch.item_ids.index("y")
    assert batch.features[y, F["in_history"]] == 1 and batch.features[y, F["covisit"]] > 0

    def on(column: str):
        return lambda f: f[:, F[column]].astype(np.float32)

    assert ranked_kinds(batch, [[y]], on("covisit"), cfg) == [["covisit"]]
    assert ranked_kinds(batch, [[y]], on("in_history"), cfg) == [["repeat"]]
    p = batch.item_ids.index("p")
    assert ranked_kinds(batch, [[p]], on("popularity"), cfg) == [["popular"]]
    assert tier_kinds(batch, [[y, p]]) == [["repeat", "popular"]]


@pytest.mark.parametrize(("source", "kind"), [("recent", "repeat"), ("covisit", "covisit")])
def test_a_baseline_worker_gives_its_sources_kind(source, kind):
    lists = heuristic_lists({"STREAMREC_RECS_SOURCE": source})
    assert {e["why"]["kind"] for e in lists["x"]["items"]} == {kind}
