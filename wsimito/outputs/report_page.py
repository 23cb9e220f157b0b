"""``index.html``: one page for a batch, so a folder of files has one place to look at.

One row per slide of counts.csv: status (and the error, if any), the numbers a pathologist reads first, the
overlay, the gallery of best candidates, and links to the GeoJSON and the Zarr store. The page is a single file
with its style inline and no script: it opens from the disk in any browser, needs no server, and pictures are
relative links to the PNGs beside it, so it stays small however large the batch. Only files that exist are
linked, so a failed slide shows its error and no broken pictures. Every text from a table is escaped: slide
names and error messages come from file names and exceptions. This module imports only the standard library,
so ``merge-reports`` writes the page on a login node without loading more.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from urllib.parse import quote

from wsimito.outputs.atomic import atomic_path

PAGE_NAME = "index.html"

# (counts.csv column, heading) of the numbers shown, in order.
NUMBERS = (
    ("mitoses", "Mitoses"),
    ("tissue_mm2", "Tissue mm²"),
    ("mitoses_per_mm2", "Mitoses / mm²"),
    ("hotspot_count", "Hotspot count"),
    ("mitotic_score", "Mitotic score"),
)

_STATUS_CLASS = {"ok": "ok", "error": "error"}  # any other status (partial, no-tissue, ...) is shown as a warning

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; }
th, td { border-bottom: 1px solid #ccc; padding: 6px 10px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; position: sticky; top: 0; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
.status { font-weight: bold; }
.ok { color: #1a7a1a; } .error { color: #b00020; } .warning { color: #a65e00; }
.message { min-width: 18em; max-width: 28em; white-space: pre-wrap; overflow-wrap: anywhere; color: #b00020; }
img.overlay { width: 200px; height: 200px; object-fit: contain; }  /* a small slide's overlay shown larger */
img.gallery { max-width: 480px; }
.missing { color: #888; }
"""


def write_report_page(out, rows) -> Path:
    """Write ``out/index.html`` for ``rows`` (counts.csv rows as mappings, in table order) atomically."""
    out = Path(out)
    rows = list(rows)
    failed = sum(row.get("status") != "ok" for row in rows)
    mitoses = sum(int(_float(row.get("mitoses")) or 0) for row in rows)
    title = f"wsimito: {out.resolve().name}"
    tables = " · ".join(_link(out, name, name) for name in ("counts.csv", "detections.csv"))
    header = "".join(f"<th>{html.escape(text)}</th>" for text in
                     ("Slide", "Status", *(heading for _, heading in NUMBERS), "Overlay", "Best candidates"))
    page = "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{len(rows)} slide(s): {len(rows) - failed} ok, {failed} not ok; {mitoses} mitoses counted. "
        f"Tables: {tables}.</p>",
        f"<table><thead><tr>{header}</tr></thead><tbody>",
        *(_row(out, row) for row in rows),
        "</tbody></table></body></html>",
        "",
    ])
    path = out / PAGE_NAME
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path


def _row(out: Path, row) -> str:
    slide = str(row.get("slide", ""))
    status = str(row.get("status", ""))
    links = " · ".join(filter(None, (_link(out, f"{slide}.geojson", "GeoJSON (QuPath)"),
                                     _link(out, f"{slide}.zarr", "Zarr"))))
    error = str(row.get("error") or "")
    cells = [
        f"<td><b>{html.escape(slide)}</b><br>{links}</td>",
        f'<td><span class="status {_STATUS_CLASS.get(status, "warning")}">{html.escape(status)}</span>'
        + (f'<div class="message">{html.escape(error)}</div>' if error else "") + "</td>",
        *(f'<td class="number">{_number(row.get(column))}</td>' for column, _ in NUMBERS),
        f"<td>{_picture(out, f'{slide}.overlay.png', 'overlay', f'{slide}: detections on the slide')}</td>",
        f"<td>{_picture(out, f'{slide}.gallery.png', 'gallery', f'{slide}: best candidates')}</td>",
    ]
    return f'<tr id="{html.escape(quote(slide))}">{"".join(cells)}</tr>'


def _link(out: Path, name: str, text: str) -> str:
    """A relative link to ``name`` in ``out``, or nothing when there is no such file."""
    if not (out / name).exists():
        return ""
    return f'<a href="{html.escape(quote(name))}">{html.escape(text)}</a>'


def _picture(out: Path, name: str, kind: str, alt: str) -> str:
    """The PNG ``name`` in ``out`` shown (and linked at full size), or a dash when it was not written."""
    if not (out / name).exists():
        return '<span class="missing">–</span>'
    src = html.escape(quote(name))
    return f'<a href="{src}"><img class="{kind}" src="{src}" alt="{html.escape(alt)}" loading="lazy"></a>'


def _float(value) -> float | None:
    """A cell as a number: text from a merged CSV or a number from a run; None when empty or not finite."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _number(value) -> str:
    """Whole numbers as they are, others to three significant digits (all the precision a reader uses)."""
    number = _float(value)
    if number is None:
        return '<span class="missing">–</span>'
    if number.is_integer():
        return str(int(number))
    return f"{number:.3g}" if abs(number) < 1000 else f"{number:.0f}"
