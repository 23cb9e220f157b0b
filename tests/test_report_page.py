"""index.html, the batch on one page: a row per slide with its numbers, error, pictures and links, every one of
which resolves to a file beside the page; text from tables escaped; nothing fetched from elsewhere."""

import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

from wsimito.outputs.report_page import write_report_page
from wsimito.schema import COUNTS_CSV_COLUMNS

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "wsimito/data/CMU-1-Small-Region.svs"


class Page(HTMLParser):
    """The body rows of the page's table: each one's text, link targets and picture sources; plus every URL."""

    def __init__(self, text: str):
        super().__init__()
        self.rows, self.urls, self.in_body = [], [], False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in ("href", "src"):
            if name in attrs:
                self.urls.append(attrs[name])
        if tag == "tbody":
            self.in_body = True
        elif tag == "tr" and self.in_body:
            self.rows.append({"id": attrs.get("id"), "text": "", "href": [], "src": []})
        elif self.in_body and self.rows and tag in ("a", "img"):
            self.rows[-1]["href" if tag == "a" else "src"].append(attrs["href" if tag == "a" else "src"])

    def handle_endtag(self, tag):
        if tag == "tbody":
            self.in_body = False

    def handle_data(self, data):
        if self.in_body and self.rows:
            self.rows[-1]["text"] += data


def test_a_batch_with_a_good_and_a_broken_slide_on_one_page(data, busy_model, tmp_path):
    out = tmp_path / "out"
    broken = data / "histolab-test-slides/broken.svs"
    result = subprocess.run(["wsimito", "detect", SAMPLE, broken, "-o", out, "--model", busy_model],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert f"outputs in {out}/:" in result.stderr and "index.html" in result.stderr
    text = (out / "index.html").read_text(encoding="utf-8")
    page = Page(text)
    assert [row["id"] for row in page.rows] == ["CMU-1-Small-Region", "broken"]
    ok, failed = page.rows
    assert "ok" in ok["text"] and "Tissue mm²" in text and "Mitotic score" in text
    assert "error" in failed["text"] and f"{broken}: " in failed["text"] and "not a slide" in failed["text"]
    name = "CMU-1-Small-Region"
    assert sorted(ok["src"]) == [f"{name}.gallery.png", f"{name}.overlay.png"]
    assert {f"{name}.geojson", f"{name}.zarr", f"{name}.overlay.png", f"{name}.gallery.png"} <= set(ok["href"])
    assert failed["src"] == [] and failed["href"] == []  # nothing was written for it: no broken picture or link
    assert {"counts.csv", "detections.csv"} <= set(page.urls)
    for url in page.urls:
        assert "://" not in url and not url.startswith("/"), url  # self-contained: relative links only
        assert (out / unquote(url)).exists(), url
    assert not list(out.glob(".*partial*"))


def test_text_from_the_tables_is_escaped_and_links_quoted(tmp_path):
    row = dict.fromkeys(COUNTS_CSV_COLUMNS, "")
    row.update(slide="a&b <i>", status="error", error='<script>alert("x")</script> & more')
    (tmp_path / "a&b <i>.overlay.png").write_bytes(b"not read")
    write_report_page(tmp_path, [row])
    text = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert "<script>" not in text and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; more" in text
    page = Page(text)
    assert page.rows[0]["src"] == ["a%26b%20%3Ci%3E.overlay.png"] and page.rows[0]["id"] == "a%26b%20%3Ci%3E"
    assert all((tmp_path / unquote(url)).exists() for url in page.urls)
