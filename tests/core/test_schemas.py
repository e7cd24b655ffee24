"""The JSON Schemas in docs/schemas agree with generated data, the shared types and the docs."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from streamrec.events.schema import EVENT_TYPES, Event, Item
from streamrec.generate import GeneratorConfig, generate

DOCS = Path(__file__).resolve().parents[2] / "docs"
NAMES = ("event", "item", "recommendation")


def _validator(name: str) -> Draft202012Validator:
    schema = json.loads((DOCS / "schemas" / f"{name}.schema.json").read_text())
    return Draft202012Validator(schema)


EVENT, ITEM, REC = (_validator(n) for n in NAMES)

GOOD_EVENT: dict[str, Any] = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "ts": 1.7e9}
GOOD_ITEM: dict[str, Any] = {"item_id": "i1", "category": "books", "price": 9.99}
GOOD_REC: dict[str, Any] = {
    "schema": 1,
    "user_id": "u1",
    "items": [{"item_id": "i1", "score": 0.9}, {"item_id": "i2", "score": -1}],
    "model_version": "m1",
    "source": "model",
    "event_id": "e1",
    "event_ts": 1735689600.5,
    "emitted_at": 1735689600.75,
}


def _depth(n: int) -> dict[str, Any]:
    """A context whose nesting depth is n (the context object itself is depth 1)."""
    value: Any = 1
    for _ in range(n - 1):
        value = {"k": value}
    return {"k": value} if n >= 1 else {}


@pytest.mark.parametrize("name", NAMES)
def test_schemas_are_valid_draft_2020_12(name: str) -> None:
    schema = json.loads((DOCS / "schemas" / f"{name}.schema.json").read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)
    for example in schema["examples"]:
        _validator(name).validate(example)


def test_generated_world_validates() -> None:
    world = generate(GeneratorConfig(n_users=300, n_items=300, n_categories=10, seed=3))
    for event in world.events:
        EVENT.validate(event)
        assert event["type"] in EVENT_TYPES  # required in files, optional on the wire
    for item in world.items:
        ITEM.validate(item)


def test_shared_types_validate() -> None:
    event = Event("e1", "u1", "i1", "purchase", 1735689600.0, context={"page": "home"})
    EVENT.validate(event.to_dict())
    EVENT.validate(Event("e1", "u1", "i1", "click", 1735689600.0).to_dict())
    ITEM.validate(Item("i1", "books", 0.0).to_dict())
    ITEM.validate(Item("i1", "books", 3.5, "t", False, extra={"brand": "x"}).to_dict())


@pytest.mark.parametrize(
    "event",
    [
        GOOD_EVENT,
        {"event_id": 1, "user_id": 42, "item_id": -7, "ts": 1735689600},  # integer ids
        {**GOOD_EVENT, "ts": 946684800},  # the earliest allowed instant
        {**GOOD_EVENT, "type": "browse"},
        {**GOOD_EVENT, "some_future_field": {"x": 1}},  # unknown fields are ignored
        {**GOOD_EVENT, "user_id": "u" * 128},
        {**GOOD_EVENT, "user_id": "ü" * 128},  # characters, not bytes
        {**GOOD_EVENT, "context": {}},
        {**GOOD_EVENT, "context": None, "type": None},  # null optional fields mean "absent"
        {**GOOD_EVENT, "item_id": " i 1 "},
        {**GOOD_EVENT, "context": _depth(4)},
        {**GOOD_EVENT, "context": {"a": [[{"b": None}]]}},  # depth 4 through arrays
        {**GOOD_EVENT, "context": {"a": [[[]]]}},
    ],
)
def test_good_events(event: dict[str, Any]) -> None:
    EVENT.validate(event)


@pytest.mark.parametrize(
    "event",
    [
        {k: v for k, v in GOOD_EVENT.items() if k != "event_id"},
        {k: v for k, v in GOOD_EVENT.items() if k != "user_id"},
        {k: v for k, v in GOOD_EVENT.items() if k != "item_id"},
        {k: v for k, v in GOOD_EVENT.items() if k != "ts"},
        {**GOOD_EVENT, "event_id": ""},
        {**GOOD_EVENT, "event_id": " \t"},  # blank
        {**GOOD_EVENT, "user_id": "u" * 129},
        {**GOOD_EVENT, "item_id": 7.5},
        {**GOOD_EVENT, "item_id": True},
        {**GOOD_EVENT, "item_id": None},
        {**GOOD_EVENT, "user_id": ["u1"]},
        {**GOOD_EVENT, "ts": "1735689600"},
        {**GOOD_EVENT, "ts": True},
        {**GOOD_EVENT, "ts": None},
        {**GOOD_EVENT, "ts": 946684799.999},  # before 2000
        {**GOOD_EVENT, "ts": -1},
        {**GOOD_EVENT, "type": "view"},
        {**GOOD_EVENT, "type": "Click"},
        {**GOOD_EVENT, "context": "mobile"},
        {**GOOD_EVENT, "context": ["a"]},
        {**GOOD_EVENT, "context": _depth(5)},
        {**GOOD_EVENT, "context": {"a": [[[{}]]]}},  # an empty container still counts
        ["e1", "u1", "i1", 1735689600],
        "e1",
        None,
    ],
)
def test_bad_events(event: Any) -> None:
    assert not EVENT.is_valid(event)


@pytest.mark.parametrize(
    "item",
    [
        GOOD_ITEM,
        {**GOOD_ITEM, "item_id": 12, "price": 0},
        {**GOOD_ITEM, "title": "", "available": False, "brand": "acme"},
    ],
)
def test_good_items(item: dict[str, Any]) -> None:
    ITEM.validate(item)


@pytest.mark.parametrize(
    "item",
    [
        {k: v for k, v in GOOD_ITEM.items() if k != "item_id"},
        {k: v for k, v in GOOD_ITEM.items() if k != "category"},
        {k: v for k, v in GOOD_ITEM.items() if k != "price"},
        {**GOOD_ITEM, "price": -0.01},
        {**GOOD_ITEM, "price": "9.99"},
        {**GOOD_ITEM, "category": 3},
        {**GOOD_ITEM, "title": 5},
        {**GOOD_ITEM, "available": "yes"},
        {**GOOD_ITEM, "available": None},
        {**GOOD_ITEM, "item_id": 1.5},
        {**GOOD_ITEM, "item_id": "  "},
        None,
    ],
)
def test_bad_items(item: Any) -> None:
    assert not ITEM.is_valid(item)


@pytest.mark.parametrize(
    "rec",
    [
        GOOD_REC,
        {**GOOD_REC, "items": [], "source": "popularity"},
        {**GOOD_REC, "explanation": "added later"},  # additive change within schema 1
    ],
)
def test_good_recommendations(rec: dict[str, Any]) -> None:
    REC.validate(rec)


@pytest.mark.parametrize("missing", sorted(GOOD_REC))
def test_recommendation_fields_are_required(missing: str) -> None:
    assert not REC.is_valid({k: v for k, v in GOOD_REC.items() if k != missing})


@pytest.mark.parametrize(
    "rec",
    [
        {**GOOD_REC, "schema": 2},
        {**GOOD_REC, "source": "random"},
        {**GOOD_REC, "items": [{"item_id": "i1"}]},
        {**GOOD_REC, "items": [{"item_id": 1, "score": 0.5}]},
        {**GOOD_REC, "items": [{"item_id": "i1", "score": "high"}]},
        {**GOOD_REC, "items": {"i1": 0.9}},
        {**GOOD_REC, "emitted_at": "now"},
        {**GOOD_REC, "event_ts": 1},
    ],
)
def test_bad_recommendations(rec: dict[str, Any]) -> None:
    assert not REC.is_valid(rec)


def _doc_json_blocks() -> list[Any]:
    text = (DOCS / "events.md").read_text()
    blocks = re.findall(r"```json\n(.*?)```", text, flags=re.S)
    lines = re.findall(r"```jsonl\n(.*?)```", text, flags=re.S)
    return [json.loads(b) for b in blocks] + [
        json.loads(line) for chunk in lines for line in chunk.splitlines() if line
    ]


def test_examples_in_the_docs_validate() -> None:
    examples = _doc_json_blocks()
    assert len(examples) >= 4
    for doc in examples:
        if "schema" in doc:
            REC.validate(doc)
        elif "category" in doc:
            ITEM.validate(doc)
        else:
            EVENT.validate(doc)


def test_rejection_table_in_the_docs_matches_the_schema() -> None:
    text = (DOCS / "events.md").read_text()
    rows = re.findall(r"^\| `([^`]+)`[^|]*\| `(\w+)` \|$", text, flags=re.M)
    codes = {code for _, code in rows}
    assert {"invalid_json", "missing_field", "wrong_type", "key_mismatch"} <= codes
    for value, code in rows:
        if code == "invalid_json":
            with pytest.raises(json.JSONDecodeError):
                json.loads(value)
        elif code in ("key_mismatch", "type_mismatch"):
            # Needs the key or topic, which the schema does not see.
            EVENT.validate(json.loads(value))
        elif code == "bad_timestamp" and EVENT.is_valid(json.loads(value)):
            # Only "too far in the future" needs a clock, which the schema does not have.
            assert json.loads(value)["ts"] > time.time() + 86400
        else:
            assert not EVENT.is_valid(json.loads(value)), value
