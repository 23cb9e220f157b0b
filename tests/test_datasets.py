"""Dataset readers on the real MITOS 2012 pixel lists and centroid CSV, and on mask folders."""

import numpy as np
import pytest
from PIL import Image

from wsimito.datasets import find_labelled_images
from wsimito.datasets.pixel_lists import pixel_list_centroids, pixel_lists_to_mask, read_pixel_lists
from wsimito.datasets.points import read_centroid_csv
from wsimito.errors import WsimitoError


def test_mitos2012_pixel_lists(data):
    folder = data / "mitos2012-multispectral-sample"
    counts = {name: [len(m) for m in read_pixel_lists(folder / f"{name}_0607.csv")] for name in ("M00_01a", "M00_01b", "M00_01d")}
    assert counts == {"M00_01a": [1424], "M00_01b": [1924, 780, 1664], "M00_01d": [993]}


def test_mitos2012_masks_pair_band_focus_files_and_mark_dark_nuclei(data):
    items = find_labelled_images([data / "mitos2012-multispectral-sample"])
    assert [(i.image.name, i.label.name) for i in items] == [
        ("M00_01a_0606.bmp", "M00_01a_0607.csv"),
        ("M00_01b_0606.bmp", "M00_01b_0607.csv"),
        ("M00_01d_0606.bmp", "M00_01d_0607.csv"),
    ]
    rgb, mask = items[1].load()
    assert rgb.shape == (1360, 1360, 3) and mask.sum() == 1924 + 780 + 1664
    assert rgb[mask > 0].mean() < 0.5 * rgb.mean()  # mitoses are much darker than the frame


def test_centroids_of_pixel_lists():
    lists = [np.array([[0, 0], [2, 0], [0, 2], [2, 2]]), np.array([[10, 5]])]
    assert pixel_list_centroids(lists) == pytest.approx(np.array([[1, 1], [10, 5]]))
    mask = pixel_lists_to_mask(lists, (8, 12))
    assert mask.sum() == 5 and mask[5, 10] == 1 and mask[2, 2] == 1


def test_pixel_list_errors(tmp_path):
    odd = tmp_path / "odd.csv"
    odd.write_text("1,2,3\n")
    with pytest.raises(WsimitoError, match="odd number"):
        read_pixel_lists(odd)
    with pytest.raises(WsimitoError, match="outside"):
        pixel_lists_to_mask([np.array([[20, 1]])], (8, 8))


def test_mask_folder(tmp_path):
    Image.fromarray(np.full((16, 20, 3), 200, np.uint8)).save(tmp_path / "a.png")
    mask = np.zeros((16, 20), np.uint8)
    mask[3:6, 4:9] = 255
    Image.fromarray(mask).save(tmp_path / "a_mask.png")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "unlabelled.png")
    (tmp_path / "fields.json").write_text('{"mpp": 0.25}')
    items = find_labelled_images([tmp_path])
    assert len(items) == 1 and items[0].mpp == 0.25
    rgb, loaded = items[0].load()
    assert loaded.sum() == 15 and loaded.max() == 1
    with pytest.raises(WsimitoError, match="no pixel labels"):
        find_labelled_images([tmp_path / "unlabelled.png"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WsimitoError, match="no labelled images"):
        find_labelled_images([empty])


def test_centroid_csv(data):
    points = read_centroid_csv(data / "mitos2012-icpr/centroids.csv")
    assert sum(len(p) for p in points.values()) == 59
    assert len(points) == 9
    assert points["A00_00"][0] == pytest.approx([2008, 929])


def test_centroid_csv_errors(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("name,x,y\na,1,2\n")
    with pytest.raises(WsimitoError, match="missing image"):
        read_centroid_csv(bad)
    bad.write_text("image,x,y\na,one,2\n")
    with pytest.raises(WsimitoError, match="line 2"):
        read_centroid_csv(bad)


def test_amibr_crops_take_their_real_masks_from_the_masks_split_folders(data):
    patches = data / "ami-br-patches" / "patches" / "normal"
    train = find_labelled_images([patches], masks=data / "ami-br-masks" / "Train")
    test = find_labelled_images([patches], masks=data / "ami-br-masks" / "Test")
    # the split is by source slide (PROVENANCE.md: 2028 normal crops in Train, 860 in Test), never by crop
    assert (len(train), len(test)) == (2028, 860)
    assert not {item.image for item in train} & {item.image for item in test}
    assert all("/Train/" in str(item.label) and item.label.stem == item.image.stem for item in train)
    rgb, mask = train[0].load()
    assert rgb.shape == (128, 128, 3) and 0 < mask.mean() < 0.25  # a figure, not the whole crop


def test_masks_folder_that_is_not_a_folder_is_an_error(data, tmp_path):
    with pytest.raises(WsimitoError, match="not a folder of masks"):
        find_labelled_images([data / "ami-br-patches" / "patches" / "normal"], masks=tmp_path / "missing")
