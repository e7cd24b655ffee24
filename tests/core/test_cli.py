from __future__ import annotations

from pathlib import Path

import pytest

from streamrec.cli import _command_index, main


@pytest.mark.parametrize(
    ("argv", "index"),
    [
        (["kafka", "status"], 0),
        (["-v", "kafka", "status"], 1),
        (["--config", "x.toml", "-v", "kafka"], 3),
        (["--config=x.toml", "worker"], 1),
        (["-h"], None),
        ([], None),
    ],
)
def test_the_command_is_found_past_the_global_options(argv: list[str], index: int | None) -> None:
    assert _command_index(argv) == index


def test_kafka_goes_to_the_broker_parser_after_global_options(tmp_path: Path) -> None:
    assert main(["-v", "kafka", "status", "--run-dir", str(tmp_path)]) == 3  # stopped
