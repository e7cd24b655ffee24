"""`streamrec train` on the generated data beats item popularity on held-out events."""

from __future__ import annotations

from encoders.checkpoint import load_checkpoint


def test_trained_model_beats_popularity_on_held_out_events(trained_world):
    trained = load_checkpoint(trained_world.checkpoint)
    holdout = trained.metadata["training"]["holdout"]
    assert holdout["users"] >= 500
    model, popularity = holdout["model"], holdout["popularity"]
    # generated users follow their tastes and sessions, so history must beat popularity clearly
    assert model["hr"] > 1.5 * popularity["hr"], trained_world.report
    assert model["ndcg"] > 1.5 * popularity["ndcg"], trained_world.report
