"""CSV tables written atomically: a crash never leaves a half-written file under the final name."""

from __future__ import annotations

import csv
from pathlib import Path

from wsimito.outputs.atomic import atomic_path


def write_csv_atomic(path, columns: list[str], rows) -> Path:
    """Write ``rows`` (mappings) with a header of ``columns``; floats get 6 significant decimals."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()})
    return path
