"""Files that appear whole or not at all: written beside their target, flushed to disk, renamed
over it, and the rename itself made durable. A crash leaves the previous file (or none), never
half of one. The one home for this: checkpoints, event logs, replay state and converted data."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(target: str | os.PathLike[str], mode: int = 0o644) -> Iterator[Path]:
    """A temporary path beside ``target`` to write; on a clean exit it is fsynced and renamed
    over ``target`` (then the directory is fsynced), on an error it is removed."""
    target = Path(target)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # mkstemp creates 0600; outputs are as readable as any other file
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def write_atomic(path: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> None:
    with replacing(path, mode) as tmp:
        tmp.write_bytes(data)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not every filesystem lets a directory be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
