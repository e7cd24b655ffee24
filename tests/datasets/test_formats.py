"""Each public-format reader on small files written in the format's exact shape."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamrec.datasets import DATASETS, load_dataset
from streamrec.datasets.formats import FormatError, read_trivago, read_yoochoose
from streamrec.datasets.registry import resolve
from tests.files import write_text as _write


def test_sasrec_text_keeps_file_order(tmp_path: Path) -> None:
    p = _write(tmp_path / "d.txt.gz", "1 5\n1 3\n2 3\n1 9\n2 4\n")
    ds = load_dataset(str(p), "sasrec")
    assert ds.sequences == {
        "1": [("5", 0, 0.0), ("3", 0, 1.0), ("9", 0, 2.0)],
        "2": [("3", 0, 0.0), ("4", 0, 1.0)],
    }
    assert not ds.has_types and not ds.has_times
    assert (ds.n_users, ds.n_items, ds.n_events) == (2, 4, 5)


def test_min_events_drops_short_users(tmp_path: Path) -> None:
    p = _write(tmp_path / "d.txt", "1 5\n1 3\n2 3\n1 9\n")
    assert set(load_dataset(str(p), "sasrec", min_events=3).sequences) == {"1"}


def test_movielens_dat_sorts_by_time(tmp_path: Path) -> None:
    p = _write(tmp_path / "ratings.dat", "1::10::5::300\n1::11::3::100\n2::10::4::200\n")
    ds = load_dataset(str(p), "movielens")
    assert ds.sequences["1"] == [("11", 0, 100.0), ("10", 0, 300.0)]
    assert ds.has_times


def test_recbole_inter_finds_columns_by_name(tmp_path: Path) -> None:
    text = (
        "item_id:token\tuser_id:token\trating:float\ttimestamp:float\n"
        "242\t196\t3\t881250949\n302\t196\t3\t881250900\n"
    )
    ds = load_dataset(str(_write(tmp_path / "x.inter", text)), "recbole")
    assert ds.sequences == {"196": [("302", 0, 881250900.0), ("242", 0, 881250949.0)]}


def test_taobao_types_and_categories(tmp_path: Path) -> None:
    text = "1,100,7,pv,10\n1,100,7,cart,20\n1,101,8,fav,15\n1,100,7,buy,30\n"
    ds = load_dataset(str(_write(tmp_path / "ub.csv", text)), "taobao")
    assert ds.sequences["1"] == [
        ("100", 0, 10.0),
        ("101", 1, 15.0),
        ("100", 1, 20.0),
        ("100", 2, 30.0),
    ]
    assert ds.items["101"]["category"] == "8"
    assert ds.has_types and ds.has_times
    assert not ds.exclude_history  # repeats are real next events in this format
    assert all(t == 0 for _, t, _ in ds.without_types().sequences["1"])


def test_own_event_log(tmp_path: Path) -> None:
    lines = [
        '{"event_id":"e1","user_id":"u","item_id":"a","type":"click","ts":1700000005}',
        '{"event_id":"e2","user_id":"u","item_id":"b","type":"purchase","ts":1700000003}',
        '{"event_id":"e2","user_id":"u","item_id":"b","type":"purchase","ts":1700000003}',
    ]
    ds = load_dataset(str(_write(tmp_path / "ev.jsonl", "\n".join(lines) + "\n")), "events")
    assert ds.sequences == {
        "u": [("b", 2, 1700000003.0), ("a", 1, 1700000005.0)]
    }  # de-duplicated by event id


def test_bad_input_is_named(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match=r"ub.csv:2: unknown behavior 'look'"):
        load_dataset(str(_write(tmp_path / "ub.csv", "1,2,3,pv,1\n1,2,3,look,2\n")), "taobao")
    with pytest.raises(FormatError, match="not a number"):
        load_dataset(str(_write(tmp_path / "r.dat", "1::2::3::soon\n")), "movielens")
    with pytest.raises(ValueError, match="give its format"):
        load_dataset(str(_write(tmp_path / "r2.dat", "1::2::3::4\n")))
    with pytest.raises(FileNotFoundError, match="neither a file nor a dataset"):
        load_dataset("no-such-dataset")


def test_registered_names_resolve_under_the_root(tmp_path: Path) -> None:
    spec = DATASETS["ml-1m"]
    target = tmp_path / spec.path
    target.parent.mkdir(parents=True)
    _write(target, "1 1\n1 2\n1 3\n")
    got_spec, path = resolve("ml-1m", root=tmp_path)
    assert got_spec is spec and path == target
    assert load_dataset("ml-1m", root=tmp_path).n_events == 3
    with pytest.raises(FileNotFoundError, match="STREAMREC_DATA_ROOT"):
        resolve("games", root=tmp_path)


TRIVAGO_HEADER = "user_id,session_id,timestamp,step,action_type,reference,platform,city,device,current_filters,impressions,prices\n"


def test_trivago_maps_actions_and_skips_non_items(tmp_path: Path) -> None:
    rows = [
        'U1,s1,100,1,interaction item image,11,FR,"Marseille, France",tablet,,,',
        'U1,s1,110,2,filter selection,Breakfast Included,FR,"Marseille, France",tablet,,,',
        'U1,s1,120,3,interaction item rating,11,FR,"Marseille, France",tablet,,,',
        'U1,s1,130,4,clickout item,12,FR,"Marseille, France",tablet,,11|12,80|90',
        "U2,s2,90,1,search for destination,Paris,UK,Paris,desktop,,,",
        "U2,s2,95,2,interaction item info,unknown,UK,Paris,desktop,,,",
        "U2,s2,99,3,search for item,13,UK,Paris,desktop,,,",
    ]
    path = _write(tmp_path / "t.csv.gz", TRIVAGO_HEADER + "\n".join(rows) + "\n")
    records = list(read_trivago(path))
    assert [(r.user_id, r.item_id, r.type_code, r.ts, r.position) for r in records] == [
        ("U1", "11", 0, 100.0, 0),
        ("U1", "11", 1, 120.0, 2),
        ("U1", "12", 2, 130.0, 3),
        ("U2", "13", 1, 99.0, 6),
    ]
    ds = load_dataset(str(path), "trivago")
    assert ds.has_types and ds.has_times and ds.n_events == 4
    with pytest.raises(FormatError, match=r"t2\.csv:2: unknown action_type 'book'"):
        list(read_trivago(_write(tmp_path / "t2.csv", TRIVAGO_HEADER + "U,s,1,1,book,1,,,,,,\n")))


def test_yoochoose_sessions_are_users_and_rows_are_clicks(tmp_path: Path) -> None:
    text = "SessionId\tItemId\tTime\n3\t214716935\t1396437466.94\n\n3\t214832672\t1396438212.318\n6\t214701242\t1396796300.848\n"
    path = _write(tmp_path / "y.txt.gz", text)
    records = list(read_yoochoose(path))
    assert [(r.user_id, r.item_id, r.type_code, r.position) for r in records] == [
        ("3", "214716935", 1, 0),
        ("3", "214832672", 1, 2),  # the blank line is row 1
        ("6", "214701242", 1, 3),
    ]
    assert records[1].ts == pytest.approx(1396438212.318)
    with pytest.raises(FormatError, match="header needs SessionId"):
        list(read_yoochoose(_write(tmp_path / "n.txt", "3\t1\t2\n")))


def test_new_datasets_are_registered(tmp_path: Path) -> None:
    files = {
        "trivago": TRIVAGO_HEADER + "U1,s1,100,1,clickout item,12,FR,x,tablet,,12,80\n",
        "yoochoose": "SessionId\tItemId\tTime\n3\t2\t1396437466.94\n",
    }
    for name, text in files.items():
        spec = DATASETS[name]
        assert spec.format == name and not spec.exclude_history  # repeats are real next events
        target = tmp_path / spec.path
        target.parent.mkdir(parents=True)
        _write(target, text)
        assert load_dataset(name, root=tmp_path).n_events == 1
