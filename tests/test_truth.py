"""Truth readers on the real annotation files in ../shared/data, and format detection."""

import json

import numpy as np
import pytest

from wsimito.datasets.pixel_lists import pixel_list_centroids, read_pixel_lists
from wsimito.datasets.truth import geojson_points, read_truth
from wsimito.errors import WsimitoError


def total(truth):
    return sum(len(points) for points in truth.values())


def test_centroid_csv_mitos2012_icpr(data):
    truth = read_truth(data / "mitos2012-icpr/centroids.csv")
    assert total(truth) == 59 and len(truth) == 9
    assert truth["A00_00"][0].tolist() == [2008.0, 929.0]
    assert {k: len(v) for k, v in truth.items()}["A03_00"] == 19
    # the data set folder holds centroids.csv beside the images: the same truth
    folder = read_truth(data / "mitos2012-icpr")
    assert folder.keys() == truth.keys() and all(np.array_equal(folder[k], truth[k]) for k in truth)


def test_mitos2012_pixel_lists(data):
    folder = data / "mitos2012-multispectral-sample"
    truth = read_truth(folder)
    assert total(truth) == 5
    assert {k: len(v) for k, v in truth.items()} == {"M00_01a_0607": 1, "M00_01b_0607": 3, "M00_01d_0607": 1}
    expected = pixel_list_centroids(read_pixel_lists(folder / "M00_01b_0607.csv"))
    assert np.allclose(truth["M00_01b_0607"], expected)
    assert truth["M00_01a_0607"][0] == pytest.approx([835.42, 382.48], abs=0.01)
    single = read_truth(folder / "M00_01d_0607.csv")
    assert list(single) == ["M00_01d_0607"] and single["M00_01d_0607"][0] == pytest.approx([720.79, 1150.89], abs=0.01)


def test_midog_json(data):
    truth = read_truth(data / "midog2021-annotations/MIDOG.json")
    assert total(truth) == 1721
    assert len(truth) == 150  # 151-200 (Leica GT450) carry no labels and are left out, not read as empty
    by_scanner = [sum(len(truth[f"{i:03d}"]) for i in range(start, start + 50)) for start in (1, 51, 101)]
    assert by_scanner == [451, 582, 688]
    # annotation 6 (image 2, category 1): bbox [4397, 191, 4447, 241] -> centre (4422, 216)
    assert [4422.0, 216.0] in truth["002"].tolist()
    # imposters (category 2) are not truth: annotation 1 of image 1 is one, at (4361, 371)
    assert [4361.0, 371.0] not in truth["001"].tolist()


def test_midogpp_json(data):
    truth = read_truth(data / "midogpp-annotations/MIDOG++.json")
    assert total(truth) == 11937 and len(truth) == 503


def test_tupac16_row_col_folder(data):
    folder = data / "tupac16-alternative-labels/TUPAC_AL/mitoses_ground_truth"
    truth = read_truth(folder)
    assert total(truth) == 1999 and len(truth) == 656
    assert truth["01/01"].tolist() == [[2.0, 839.0], [1586.0, 778.0]]  # file has row,col = 839,2 and 778,1586
    assert truth["23/13"].shape == (0, 2)  # an empty file: an image with no mitoses, still listed
    negatives = read_truth(data / "tupac16-alternative-labels/TUPAC_AL/nonmitoses_ground_truth")
    assert total(negatives) == 10483
    one_case = read_truth(folder / "01")
    assert "01" in one_case and np.array_equal(one_case["01"], truth["01/01"])
    assert read_truth(folder / "01/01.csv") == {"01": pytest.approx(truth["01/01"])}


def test_mitos_atypia14_centroids(data):
    truth = read_truth(data / "mitos-atypia14-annotations/anno_validation_2014_centroids.txt")
    assert total(truth) == 163 and len(truth) == 78
    assert truth["A18_06Ca"].tolist() == [[711.0, 731.0], [1359.0, 939.0]]
    assert truth["A04_04Ba"][:2].tolist() == [[120.0, 612.0], [28.0, 933.0]]


def _feature(geometry_type, coordinates, name="Mitosis"):
    return {"type": "Feature", "geometry": {"type": geometry_type, "coordinates": coordinates},
            "properties": {"classification": {"name": name}}}


def test_geojson(tmp_path):
    square = [[[10, 10], [30, 10], [30, 20], [10, 20], [10, 10]]]  # centroid (20, 15)
    clockwise = [[[0, 0], [0, 4], [4, 4], [4, 0], [0, 0]]]  # centroid (2, 2), negative signed area
    collection = {"type": "FeatureCollection", "features": [
        _feature("Point", [5.5, 6.5]),
        _feature("Polygon", square),
        _feature("MultiPolygon", [clockwise, [[[10, 0], [14, 0], [14, 4], [10, 4], [10, 0]]]]),  # (7, 2)
        _feature("MultiPoint", [[1, 2], [3, 4]]),
    ]}
    path = tmp_path / "slide-7.geojson"
    path.write_text(json.dumps(collection))
    truth = read_truth(path)
    assert list(truth) == ["slide-7"]
    assert truth["slide-7"].tolist() == [[5.5, 6.5], [20.0, 15.0], [7.0, 2.0], [1.0, 2.0], [3.0, 4.0]]
    # QuPath also writes a bare list of features, and .json is accepted
    bare = tmp_path / "other.json"
    bare.write_text(json.dumps([_feature("Point", [1, 1])]))
    assert read_truth(bare)["other"].tolist() == [[1.0, 1.0]]
    # a folder of GeoJSON files, one per slide
    assert sorted(read_truth(tmp_path)) == ["slide-7"]  # .json files in a folder are not per-image truth
    assert geojson_points({"type": "FeatureCollection", "features": []}, "x").shape == (0, 2)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("truth.xml", "<a/>", "truth.xml: cannot tell the truth format"),
        ("truth.json", "{not json", "truth.json: not valid JSON"),
        ("truth.json", '{"a": 1}', "truth.json: JSON is neither MIDOG/COCO"),
        ("truth.txt", "frame 1 2 3\n", "truth.txt: line 1 is not '<frame path> x y'"),
        ("truth.csv", "name,col,row\nA,1,2\n", "truth.csv: needs columns image,x,y"),
        ("truth.csv", "1,2\n3,x\n", "truth.csv: mitosis 2 is not a row,col pair"),
        ("truth.csv", "1,2,3\n", "truth.csv: line 1 has an odd number of coordinates"),
        ("truth.geojson",
         json.dumps({"type": "FeatureCollection", "features": [_feature("LineString", [[0, 0], [1, 1]])]}),
         "truth.geojson: feature 0 has geometry 'LineString'"),
        ("truth.json", json.dumps({"images": [{"id": 1, "file_name": "a.tiff"}], "annotations": [{"image_id": 2}]}),
         "truth.json: annotation 0 refers to image id 2"),
    ],
)
def test_errors_name_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(WsimitoError, match=message.replace("(", r"\(")):
        read_truth(path)


def test_folder_and_path_errors(tmp_path):
    with pytest.raises(WsimitoError, match="nothing-here: truth file or folder not found"):
        read_truth(tmp_path / "nothing-here")
    (tmp_path / "notes.md").write_text("no truth")
    with pytest.raises(WsimitoError, match=f"{tmp_path.name}: no truth files"):
        read_truth(tmp_path)
    (tmp_path / "a.csv").write_text("image,x,y\nA,1,2\n")
    (tmp_path / "b.csv").write_text("image,x,y\nA,3,4\n")
    with pytest.raises(WsimitoError, match="b.csv: image A already has truth from another file"):
        read_truth(tmp_path)
