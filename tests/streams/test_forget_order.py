"""Which lists of a batch a forget request drops, and the order of what goes out."""

from __future__ import annotations

from streamrec.events.schema import Event
from streamrec.features.user_state import RecentEvents
from streamrec.recommend.engine import Job
from streams.worker import Forget, split_forgets


def job(user: str, n: int) -> Job:
    event = Event(f"{user}-{n}", user, "i1", "click", 1.7e9 + n)
    return Job(event, n, RecentEvents((), None), frozenset(), inserted_at=n)


def test_a_forget_drops_the_users_earlier_lists_and_keeps_later_ones_and_others():
    items = [job("a", 0), job("b", 0), job("a", 1), Forget("a"), job("b", 1), job("a", 2)]
    jobs, forgets = split_forgets(items)
    assert forgets == ["a"]
    assert [(j.event.user_id, j.position) for j in jobs] == [("b", 0), ("b", 1), ("a", 2)]


def test_two_forgets_of_one_user_send_one_tombstone_and_keep_only_what_follows_the_last():
    items = [Forget("a"), job("a", 0), Forget("a"), job("c", 0)]
    jobs, forgets = split_forgets(items)
    assert forgets == ["a"]
    assert [j.event.user_id for j in jobs] == ["c"]


def test_a_batch_without_forgets_is_kept_whole():
    items = [job("a", 0), job("b", 0)]
    assert split_forgets(items) == (items, [])
