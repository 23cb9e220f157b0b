"""Config: defaults, YAML, overrides, and clear errors for bad keys and values."""

from pathlib import Path

import pytest
import yaml

from wsimito.config import Config, given_keys, load_config
from wsimito.errors import WsimitoError

REPO = Path(__file__).resolve().parents[1]


def test_shipped_default_yaml_equals_the_code_defaults():
    assert yaml.safe_load((REPO / "configs/default.yaml").read_text()) == Config().to_dict()


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("tiling:\n  mpp: 0.5\n  halo: 16\n")
    config = load_config(path, {"tiling.tile_size": 256})
    assert (config.tiling.mpp, config.tiling.halo, config.tiling.tile_size) == (0.5, 16, 256)
    assert config.tissue == Config().tissue


@pytest.mark.parametrize(
    "text, message",
    [
        ("tiling:\n  tile_sise: 256\n", "unknown key(s) tile_sise"),
        ("tilling: {}\n", "unknown key(s) tilling"),
        ("tiling:\n  tile_size: big\n", "tile_size must be int"),
        ("tiling: 3\n", "section 'tiling' must be a mapping"),
        ("tiling: [\n", "not valid YAML"),
        ("- 1\n", "must be a mapping of sections"),
    ],
)
def test_bad_configs_name_the_file_and_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(WsimitoError) as err:
        load_config(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_int_accepted_for_float():
    assert load_config(None, {"tissue.mpp": 4}).tissue.mpp == 4.0


def test_given_keys_are_what_the_file_and_overrides_set_not_the_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("tiling:\n  halo: 16\nsegmentation:\n  widths: [8, 16]\nclinical: {}\n")
    assert given_keys(path, {"tissue.whole": True, "tiling.halo": 8}) == ["tiling.halo", "segmentation.widths",
                                                                          "tissue.whole"]
    assert given_keys(None) == []
