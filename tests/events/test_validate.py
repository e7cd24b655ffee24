import orjson
import pytest

from streamrec.events.schema import Event, Item
from streamrec.events.validate import Limits, Rejection, parse_event, parse_item

NOW = 1_750_000_000.0


def ev(**over):
    base = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "ts": NOW - 5}
    base.update(over)
    return orjson.dumps({k: v for k, v in base.items() if v is not ...})


def test_valid_event_roundtrip():
    got = parse_event(ev(context={"device": "ios"}), "click", b"u1", now=NOW)
    assert got == Event("e1", "u1", "i1", "click", NOW - 5, {"device": "ios"})
    assert got.type_code == 1


def test_integer_ids_become_strings():
    got = parse_event(ev(user_id=42, item_id=7), "browse", b"42", now=NOW)
    assert isinstance(got, Event) and got.user_id == "42" and got.item_id == "7"


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"{not json", "invalid_json"),
        (b"\xff\xfe\x00", "invalid_utf8"),
        (b"[1, 2]", "wrong_type"),
        (None, "missing_value"),
        (ev(user_id=...), "missing_field"),
        (ev(ts=...), "missing_field"),
        (ev(item_id=1.5), "wrong_type"),
        (ev(event_id=True), "wrong_type"),
        (ev(user_id="  "), "empty_field"),
        (ev(user_id="u" * 200), "too_large"),
        (ev(ts="2024-01-01"), "wrong_type"),
        (ev(ts=-1), "bad_timestamp"),
        (ev(ts=NOW * 1000), "bad_timestamp"),  # milliseconds
        (ev(type="purchase"), "type_mismatch"),
        (ev(context=[1, 2]), "wrong_type"),
        (ev(context={"a": {"b": {"c": {"d": {"e": 1}}}}}), "too_deep"),
        (b'{"event_id": "e", "user_id": "u1", "item_id": "i", "ts": NaN}', "invalid_json"),
    ],
)
def test_bad_events_rejected_with_code(raw, code):
    got = parse_event(raw, "click", b"u1", now=NOW)
    assert isinstance(got, Rejection), got
    assert got.code == code
    assert got.reason  # a readable sentence


def test_overflowing_ts_rejected():
    # orjson refuses numbers that overflow to infinity, so they never reach the float checks
    got = parse_event(
        b'{"event_id":"e","user_id":"u1","item_id":"i","ts":1e400}', "click", b"u1", now=NOW
    )
    assert isinstance(got, Rejection) and got.code == "invalid_json"


def test_oversized_payload_rejected_before_parsing():
    raw = ev(context={"pad": "x" * 20_000})
    got = parse_event(raw, "click", b"u1", Limits(max_bytes=16384), now=NOW)
    assert isinstance(got, Rejection) and got.code == "too_large"


def test_key_must_match_user():
    got = parse_event(ev(), "click", b"someone-else", now=NOW)
    assert isinstance(got, Rejection) and got.code == "key_mismatch"


def test_unknown_fields_ignored():
    got = parse_event(ev(extra_field={"x": 1}), "browse", b"u1", now=NOW)
    assert isinstance(got, Event)


def test_item_parsing():
    raw = orjson.dumps({"item_id": "i9", "category": "books", "price": 12.5, "title": "A book"})
    assert parse_item(raw, b"i9") == Item("i9", "books", 12.5, "A book", True)
    for bad in (
        {"item_id": "i9", "category": "c", "price": -1},
        {"item_id": "i9", "price": 3},
        {"item_id": "i9", "category": "c", "available": "yes"},
    ):
        assert isinstance(parse_item(orjson.dumps(bad)), Rejection)
