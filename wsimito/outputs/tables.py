"""CSV tables written atomically: a crash never leaves a half-written file under the final name."""

from __future__ import annotations

import csv
import os
from pathlib import Path


def write_csv_atomic(path, columns: list[str], rows) -> Path:
    """Write ``rows`` (mappings) with a header of ``columns``; floats get 6 significant decimals."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    with open(partial, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()})
    partial.replace(path)
    return path
