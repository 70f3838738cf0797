import dataclasses

import pytest
from configs import paper_scale_config, tiny_config

from elasticdit.config import ModelConfig, check_resolution
from elasticdit.demo.config import demo_config
from elasticdit.errors import (
    ConfigError,
    ConfigParseError,
    DepthPlanError,
    GridError,
    OperatingPointError,
    UnsupportedVersionError,
)
from elasticdit.operating_points import lightest_point, operating_points, select


def test_config_json_round_trip():
    for cfg in (demo_config(), tiny_config(text_encoder=True), paper_scale_config()):
        import json

        assert ModelConfig.from_dict(json.loads(cfg.to_json())) == cfg


def _raw(**changes):
    raw = demo_config().to_dict()
    for dotted, value in changes.items():
        node = raw
        *parents, leaf = dotted.split("__")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return raw


@pytest.mark.parametrize(
    ("changes", "error", "words"),
    [
        ({"version": 2}, UnsupportedVersionError, "version 2"),
        ({"format": "other"}, ConfigParseError, "format"),
        ({"transformer__hidden_size": "wide"}, ConfigParseError, "transformer.hidden_size"),
        ({"transformer__bogus": 1}, ConfigParseError, "bogus"),
        ({"elastic__depths": {"6": [0, 1, 9]}}, DepthPlanError, "block 9"),
        ({"elastic__depths": {"6": [0, 1, 1]}}, DepthPlanError, "repeats block 1"),
        ({"elastic__depths": {"6": []}}, DepthPlanError, "runs no blocks"),
        ({"transformer__num_heads": 3}, ConfigError, "not divisible"),
        ({"ssba__shift": "sideways"}, ConfigError, "ssba.shift"),
        ({"transformer__prediction": "noise"}, ConfigError, "transformer.prediction"),
    ],
)
def test_bad_configs_are_named(changes, error, words):
    with pytest.raises(error, match=words):
        ModelConfig.from_dict(_raw(**changes))


def test_missing_section_is_named():
    raw = _raw()
    del raw["ssba"]
    with pytest.raises(ConfigParseError, match="ssba"):
        ModelConfig.from_dict(raw)


def test_grid_rules_reject_resolutions():
    cfg = demo_config()  # f4, patch 2, ratios 1/2/4, tile 4: the r4 grid at 128 px is 4x4
    check_resolution(cfg, (128, 128))
    check_resolution(cfg, (256, 128))
    with pytest.raises(GridError, match="downsample"):
        check_resolution(cfg, (130, 128))
    with pytest.raises(GridError, match="SSBA tile 4 .* ratio 4"):
        check_resolution(cfg, (192, 192))  # grids 24, 12, 6: tile 4 does not divide the r4 grid
    no_ssba = dataclasses.replace(cfg, ssba=dataclasses.replace(cfg.ssba, enabled=False))
    check_resolution(no_ssba, (192, 192))
    with pytest.raises(GridError, match="compression ratio 2"):
        check_resolution(no_ssba, (200, 256))  # latent 50x64: cell 4 does not divide 50


def test_operating_points_order_and_selection():
    cfg = demo_config()
    points = operating_points(cfg)
    assert [p.name for p in points] == [f"r{r}_d{d}" for r in (1, 2, 4) for d in ("6", "4", "3")]
    assert points[0].blocks == (0, 1, 2, 3, 4, 5)
    assert lightest_point(cfg).name == "r4_d3"
    assert [p.name for p in select(cfg, ["r4_d3", "r1_d6"])] == ["r1_d6", "r4_d3"]
    with pytest.raises(OperatingPointError, match="valid: r1_d6, r1_d4"):
        select(cfg, ["r3_d6"])
