"""The offline reference on a generated log, with duplicates and bad messages mixed in."""

from __future__ import annotations

import orjson

from streamrec.events.schema import Item
from streamrec.events.validate import Message
from streamrec.features.user_state import UserState
from streamrec.generate import GeneratorConfig, generate
from streamrec.reference import run_reference
from streamrec.settings import load_settings


def test_reference_counts_and_lists() -> None:
    world = generate(GeneratorConfig(n_users=40, n_items=60, days=2, seed=3))
    msgs = [Message(e["type"], e["user_id"].encode(), orjson.dumps(e)) for e in world.events]
    redelivered = msgs[len(msgs) // 2 : len(msgs) // 2 + 25]  # a crash's replayed tail
    bad = [
        Message("click", b"u1", b"\xff\xfe"),
        Message("click", None, orjson.dumps(world.events[0])),
        Message("browse", b"u1", b"[1, 2]"),
    ]
    settings = load_settings(env={})
    items = [
        Item(**{k: it[k] for k in ("item_id", "category", "price", "title", "available")})
        for it in world.items
    ]
    run = run_reference([*msgs, *redelivered, *bad], settings, None, items)

    assert run.accepted == len({e["event_id"] for e in world.events}) == len(msgs)
    assert run.duplicates == len(redelivered)
    assert run.rejected == {"invalid_utf8": 1, "missing_key": 1, "wrong_type": 1}
    assert run.processed == len(msgs) + len(redelivered) + len(bad)

    per_user: dict[str, int] = {}
    for e in world.events:
        per_user[e["user_id"]] = per_user.get(e["user_id"], 0) + 1
    assert {u: s.n_events for u, s in run.states.items()} == per_user
    assert {UserState.from_bytes(raw).n_events for raw in run.table().values()} <= set(
        per_user.values()
    )

    # one list per user, built after their last event, never listing what they bought
    assert set(run.lists) == set(per_user)
    for user, rec in run.lists.items():
        assert rec["event_id"] == run.last_event[user].event_id
        listed = {i["item_id"] for i in rec["items"]}
        assert len(listed) == settings.recs.k
        assert not listed & set(run.states[user].purchased)
