"""Small files for format tests, written the way the real ones are (gzip by suffix)."""

from __future__ import annotations

import gzip
from pathlib import Path


def write_text(path: Path, text: str) -> Path:
    if path.suffix == ".gz":
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path
