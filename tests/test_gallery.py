"""The review gallery: the best candidates of a real slide, best first, each the slide's own pixels around it."""

from pathlib import Path

import cv2
import numpy as np

from wsimito.outputs.gallery import CELL_PX, COLUMNS, CROP_UM, LABEL_PX, write_gallery
from wsimito.slide import open_slide

SAMPLE = Path(__file__).resolve().parents[1] / "wsimito" / "data" / "CMU-1-Small-Region.svs"


def _cell(sheet, index):
    top, left = (index // COLUMNS) * (CELL_PX + LABEL_PX), (index % COLUMNS) * CELL_PX
    return sheet[top : top + CELL_PX, left : left + CELL_PX].astype(float)


def test_gallery_shows_the_best_candidates_first_as_crops_of_the_slide(tmp_path):
    with open_slide(SAMPLE) as slide:
        # two candidates (x, y, score, box) in level-0 pixels; the second scores higher
        table = np.array([[600.0, 900.0, 0.3, 590, 890, 610, 910], [1500.0, 1200.0, 0.8, 1490, 1190, 1510, 1210]])
        path = write_gallery(tmp_path / "g.png", slide, table, threshold=0.5)
        side = CROP_UM / slide.mpp
        crops = [slide.read_region(x + 0.5 - side / 2, y + 0.5 - side / 2, CELL_PX, CELL_PX, CROP_UM / CELL_PX)
                 for x, y in table[:, :2]]
    sheet = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    assert sheet.shape == (CELL_PX + LABEL_PX, COLUMNS * CELL_PX, 3)
    # the cells hold the slide's pixels (up to the drawn circle), best score first
    first, second = _cell(sheet, 0), _cell(sheet, 1)
    assert np.median(np.abs(first - crops[1])) < 3 and np.median(np.abs(second - crops[0])) < 3
    assert np.median(np.abs(first - crops[0])) > 10
    assert (_cell(sheet, 2) == 255).all()  # no third candidate: blank


def test_gallery_of_a_slide_without_candidates_says_so(tmp_path):
    with open_slide(SAMPLE) as slide:
        path = write_gallery(tmp_path / "g.png", slide, np.zeros((0, 7)), threshold=0.5)
    sheet = cv2.imread(str(path))
    assert sheet.shape[0] == CELL_PX + LABEL_PX and (sheet < 200).any()  # the note is drawn on white
