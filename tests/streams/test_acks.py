from __future__ import annotations

import random
from dataclasses import dataclass, field

from streams.acks import InOrderAcks


@dataclass(frozen=True)
class Msg:
    topic: str
    partition: int
    offset: int
    generation_id: int = 1


@dataclass
class Ev:
    message: Msg
    log: list[tuple[str, int, int]] = field(repr=False, default_factory=list)

    def ack(self) -> None:
        m = self.message
        self.log.append((m.topic, m.partition, m.offset))


def events(log: list, topic: str, partition: int, offsets: range, gen: int = 1) -> list[Ev]:
    return [Ev(Msg(topic, partition, o, gen), log) for o in offsets]


def test_an_ack_waits_for_every_earlier_event_of_its_partition() -> None:
    log: list = []
    acks = InOrderAcks()
    evs = events(log, "click", 0, range(5))
    for e in evs:
        acks.read(e)
    acks.ack(evs[2])
    acks.ack(evs[1])
    assert log == []  # offset 0 is not done: nothing may reach Faust
    acks.ack(evs[0])
    assert [o for *_, o in log] == [0, 1, 2]
    assert len(acks) == 2
    acks.ack(evs[4])
    assert [o for *_, o in log] == [0, 1, 2]
    acks.ack(evs[3])
    assert [o for *_, o in log] == [0, 1, 2, 3, 4]
    assert len(acks) == 0 and acks.waiting() == {}


def test_partitions_and_topics_do_not_hold_each_other_back() -> None:
    log: list = []
    acks = InOrderAcks()
    a = events(log, "click", 0, range(2))
    b = events(log, "click", 1, range(2))
    c = events(log, "browse", 0, range(2))
    for e in [*a, *b, *c]:
        acks.read(e)
    acks.ack(b[0])
    acks.ack(c[1])
    assert log == [("click", 1, 0)]
    assert acks.waiting() == {("click", 0): 2, ("click", 1): 1, ("browse", 0): 2}


def test_a_new_generation_queues_apart_from_the_old_one() -> None:
    log: list = []
    acks = InOrderAcks()
    old = events(log, "click", 0, range(3), gen=1)
    for e in old:
        acks.read(e)
    acks.ack(old[1])  # old[0] never finishes before the rebalance
    new = events(log, "click", 0, range(3), gen=2)  # re-read from the committed offset
    for e in new:
        acks.read(e)
    for e in new:
        acks.ack(e)
    assert log == [("click", 0, 0), ("click", 0, 1), ("click", 0, 2)]
    acks.ack(old[0])
    acks.ack(old[2])
    assert len(log) == 6 and len(acks) == 0


def test_an_event_never_read_through_it_is_acked_at_once() -> None:
    log: list = []
    acks = InOrderAcks()
    (e,) = events(log, "click", 0, range(1))
    acks.ack(e)
    assert log == [("click", 0, 0)]


def test_random_completion_order_always_acks_a_prefix_in_offset_order() -> None:
    rng = random.Random(7)
    for _ in range(50):
        log: list = []
        acks = InOrderAcks()
        evs = events(log, "t", 0, range(40))
        for e in evs:
            acks.read(e)
        order = list(range(40))
        rng.shuffle(order)
        done: set[int] = set()
        for i in order:
            acks.ack(evs[i])
            done.add(i)
            prefix = 0
            while prefix in done:
                prefix += 1
            assert [o for *_, o in log] == list(range(prefix))
