"""Replay sources on tiny files: deterministic ids, time order, round trips, the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import streamrec.replay
from streamrec.cli import main
from streamrec.datasets import DATASETS, load_dataset
from streamrec.eventlog import EventLogError, write_events
from streamrec.replay_sources import SYNTHETIC_EPOCH, open_source, write_table
from tests.core.fake_producer import FakeProducer
from tests.files import write_text as write

TRIVAGO = """user_id,session_id,timestamp,step,action_type,reference,platform,city,device,current_filters,impressions,prices
U1,s1,1541599523,1,interaction item image,5967314,FR,"Marseille, France",tablet,,,
U1,s1,1541599538,2,filter selection,Breakfast Included,FR,"Marseille, France",tablet,,,
U1,s1,1541599553,3,clickout item,5967314,FR,"Marseille, France",tablet,,100131|5967314,71|119
U2,s2,1541599500,1,interaction item info,unknown,UK,"Paris, France",desktop,,,
U2,s2,1541599530,2,search for item,913787,UK,"Paris, France",desktop,,,
"""

EVENTS: list[dict[str, Any]] = [
    {"event_id": "e1", "user_id": "u1", "item_id": "i1", "type": "browse", "ts": 1735689600.5},
    {
        "event_id": "e2",
        "user_id": "u1",
        "item_id": "i,2",
        "type": "click",
        "ts": 1735689610,
        "context": {"session": "s1"},
    },
    {"event_id": "e3", "user_id": "u2", "item_id": "i2", "type": "purchase", "ts": 1735689700.125},
]


def all_events(source: Any, order: str | None = None) -> list[dict[str, Any]]:
    events, _ = source.events(order)
    return list(events)


def test_public_ids_are_source_rows_and_stable(tmp_path: Path) -> None:
    source = open_source(str(write(tmp_path / "t.csv.gz", TRIVAGO)), "trivago")
    first = all_events(source, "file")
    assert first == all_events(source, "file")
    # Rows 1 (a filter) and 3 (no hotel) are skipped but keep their numbers.
    assert [e["event_id"] for e in first] == ["t.csv.gz:0", "t.csv.gz:2", "t.csv.gz:4"]
    assert [e["type"] for e in first] == ["browse", "purchase", "click"]
    assert first[0] == {
        "event_id": "t.csv.gz:0",
        "user_id": "U1",
        "item_id": "5967314",
        "type": "browse",
        "ts": 1541599523.0,
    }


def test_registered_names_tag_ids_with_the_name(tmp_path: Path) -> None:
    target = tmp_path / DATASETS["trivago"].path
    target.parent.mkdir(parents=True)
    write(target, TRIVAGO)
    source = open_source("trivago", root=tmp_path)
    assert source.format == "trivago" and source.tag == "trivago"
    # Time order by default: U2's search (ts ...530) comes before U1's click-out (...553).
    assert [e["event_id"] for e in all_events(source)] == ["trivago:0", "trivago:4", "trivago:2"]


def test_a_parquet_copy_of_a_public_log_reads_the_same(tmp_path: Path) -> None:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    csv_path = write(tmp_path / "t.csv", TRIVAGO)
    pq.write_table(pacsv.read_csv(csv_path), tmp_path / "t.parquet.snappy", compression="snappy")
    from_csv = all_events(open_source(str(csv_path), "trivago", tag="t"), "file")
    parquet = open_source(str(tmp_path / "t.parquet.snappy"), "trivago", tag="t")
    from_parquet = all_events(parquet, "file")
    assert from_parquet == from_csv


def test_time_order_is_stable_on_ties(tmp_path: Path) -> None:
    path = write(tmp_path / "r.dat", "1::10::5::300\n2::11::3::100\n1::12::4::100\n2::13::4::300\n")
    source = open_source(str(path), "movielens", tag="m")
    assert [e["event_id"] for e in all_events(source)] == ["m:1", "m:2", "m:0", "m:3"]
    assert [e["event_id"] for e in all_events(source, "file")] == ["m:0", "m:1", "m:2", "m:3"]


def test_each_user_replays_in_training_order(tmp_path: Path) -> None:
    # User 1's rows are out of time order in the file; the replay puts them in order.
    text = "1,100,7,pv,30\n2,200,8,pv,10\n1,101,7,cart,20\n2,201,8,buy,10\n1,102,7,buy,20\n"
    path = write(tmp_path / "ub.csv", text)
    per_user: dict[str, list[tuple[str, int, float]]] = {}
    codes = {"browse": 0, "click": 1, "purchase": 2}
    for e in all_events(open_source(str(path), "taobao")):
        per_user.setdefault(e["user_id"], []).append((e["item_id"], codes[e["type"]], e["ts"]))
    assert per_user == load_dataset(str(path), "taobao").sequences


def test_sources_without_times_replay_in_file_order(tmp_path: Path) -> None:
    source = open_source(str(write(tmp_path / "s.txt", "1 5\n2 3\n1 9\n")), "sasrec")
    got = all_events(source)
    assert [(e["user_id"], e["item_id"], e["ts"] - SYNTHETIC_EPOCH) for e in got] == [
        ("1", "5", 0.0),
        ("2", "3", 0.0),
        ("1", "9", 1.0),
    ]
    with pytest.raises(ValueError, match="no timestamps"):
        source.events("time")


def test_limit_and_totals(tmp_path: Path) -> None:
    source = open_source(str(write(tmp_path / "t.csv", TRIVAGO)), "trivago")
    events, total = source.events("time", limit=2)
    assert (len(list(events)), total) == (2, 2)
    _, total = source.events("file")
    assert total == 5  # data rows: an upper bound where rows are skipped
    _, total = source.events("time")
    assert total == 3


@pytest.mark.parametrize("name", ["ev.csv", "ev.csv.gz", "ev.parquet"])
def test_project_tables_round_trip(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    assert write_table(path, EVENTS) == 3
    source = open_source(str(path))  # format from the suffix
    expected = [{k: v for k, v in e.items() if k != "context"} for e in EVENTS]
    assert source.read().__next__() == expected[0]
    assert all_events(source, "file") == expected
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_project_jsonl_keeps_context_and_sorts_by_time(tmp_path: Path) -> None:
    path = tmp_path / "ev.jsonl.gz"
    write_events(path, [EVENTS[2], EVENTS[0], EVENTS[1]])
    source = open_source(str(path))
    assert all_events(source) == EVENTS
    assert [e["event_id"] for e in all_events(source, "file")] == ["e3", "e1", "e2"]


def test_bad_tables_are_named(tmp_path: Path) -> None:
    bad = write(tmp_path / "a.csv", "event_id,user_id,item_id,ts\ne,u,i,1\n")
    with pytest.raises(EventLogError, match=r"a\.csv:1: missing column.*type"):
        list(open_source(str(bad)).read())
    bad = write(tmp_path / "b.csv", "event_id,user_id,item_id,type,ts\ne,u,i,view,1\n")
    with pytest.raises(EventLogError, match=r"b\.csv:2: type must be"):
        list(open_source(str(bad)).read())
    with pytest.raises(ValueError, match="give its format"):
        open_source(str(write(tmp_path / "c.txt", "1 2\n")))


# -- the command line ----------------------------------------------------------------------------


@pytest.fixture
def producer(monkeypatch: pytest.MonkeyPatch) -> FakeProducer:
    fake = FakeProducer()
    monkeypatch.setattr(streamrec.replay, "_make_producer", fake.factory)
    return fake


def test_cli_replays_a_dataset_and_resumes(
    tmp_path: Path, producer: FakeProducer, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / DATASETS["trivago"].path
    target.parent.mkdir(parents=True)
    write(target, TRIVAGO)
    state = tmp_path / "state.json"
    common = ["replay", "trivago", "--data-root", str(tmp_path), "--state", str(state)]
    assert main([*common, "--limit", "2"]) == 0
    assert producer.event_ids == ["trivago:0", "trivago:4"]
    assert main(common) == 0  # same order, no limit: only the rest
    assert producer.event_ids == ["trivago:0", "trivago:4", "trivago:2"]
    assert "skipped the first 2 events" in capsys.readouterr().out


def test_cli_still_replays_a_jsonl_file(
    tmp_path: Path, producer: FakeProducer, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "events.jsonl"
    write_events(path, EVENTS)
    assert main(["replay", str(path)]) == 0
    assert [v for _, _, v in producer.sent] == EVENTS
    assert "replayed 3 events" in capsys.readouterr().out


def test_cli_reports_bad_sources(
    tmp_path: Path, producer: FakeProducer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", "no-such-dataset"]) == 2
    path = write(tmp_path / "s.txt", "1 5\n")
    assert main(["replay", str(path), "--format", "sasrec", "--time-scale", "60"]) == 2
    old = write(
        tmp_path / "u.inter", "user_id:token\titem_id:token\ttimestamp:float\n1\t2\t881250949\n"
    )
    assert main(["replay", str(old), "--format", "recbole"]) == 0
    err = capsys.readouterr().err
    assert "neither a file nor a dataset" in err and "no timestamps" in err
    assert "before 2000-01-01" in err
