"""`streamrec train` on the generated data: the lists it serves beat popularity and the simple
lists on held-out events, under the one leave-one-out protocol."""

from __future__ import annotations

from encoders.checkpoint import load_checkpoint


def test_trained_model_beats_the_simple_lists_on_held_out_events(trained_world):
    trained = load_checkpoint(trained_world.checkpoint)
    test = trained.metadata["training"]["test"]
    assert test["users"] >= 500
    rows = test["rows"]
    assert {
        "popularity",
        "recent items",
        "co-visitation",
        "streamrec",
        "streamrec + ranker",
    } <= set(rows)
    served, popularity = rows["streamrec + ranker"], rows["popularity"]
    # generated users follow their tastes and sessions, so history must beat popularity clearly
    assert served["hr@10"] > 1.5 * popularity["hr@10"], trained_world.report
    assert served["ndcg@10"] > 1.5 * popularity["ndcg@10"], trained_world.report
    best_simple = max(rows[n]["ndcg@10"] for n in ("recent items", "co-visitation"))
    assert served["ndcg@10"] > best_simple, trained_world.report
    assert trained.ranker is not None
