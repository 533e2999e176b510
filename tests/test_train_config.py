"""Train and experiment configs: defaults, validation errors that name the field, YAML/JSON, relative paths."""

import json

import pytest

from trainers.config import ExperimentConfig, TrainConfig, load_experiment_config, load_train_config
from trainers.config_file import ConfigError, validate


def test_defaults_and_yaml_paths_relative_to_the_file(tmp_path):
    path = tmp_path / "cfg" / "train.yaml"
    path.parent.mkdir()
    path.write_text("pack: ../packs/p1\nout: runs/a\nbackbone: conv\nmethod: calibration\nmodalities: [video, audio]\n")
    config = load_train_config(path)
    assert config.pack == path.parent / "../packs/p1" and config.out == path.parent / "runs/a"
    assert (config.backbone, config.method, config.calibration) == ("conv", "calibration", "paper")
    assert config.modalities == ["audio", "video"] and config.amp == "auto"


def test_errors_name_each_bad_field(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(
        json.dumps(
            {
                "pack": "p",
                "out": "o",
                "lr": 0,
                "backbone": "rnn",
                "calibration": "magic",
                "max_len": {"smell": 3},
                "epoch": 3,
            }
        )
    )
    with pytest.raises(ConfigError) as err:
        load_train_config(path)
    message = str(err.value)
    for field in ("lr:", "backbone:", "calibration:", "max_len:", "epoch:"):
        assert field in message
    assert "smell" in message and "magic" in message


def test_missing_and_unparsable_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_train_config(tmp_path / "none.yaml")
    (tmp_path / "broken.yaml").write_text("pack: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot be parsed"):
        load_train_config(tmp_path / "broken.yaml")


def test_experiment_config(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(
        "pack: packs/p\nout: results\nbackbones: [late]\nmethods: [none, calibration]\n"
        "calibrations: [paper, aux]\nseeds: [0, 1]\ntrain: {epochs: 2, batch_size: 4}\n"
    )
    config = load_experiment_config(path)
    assert config.packs == [tmp_path / "packs/p"] and config.out == tmp_path / "results"
    assert config.train.epochs == 2 and config.seeds == [0, 1]
    with pytest.raises(ConfigError, match=r"train\.lr"):
        validate(ExperimentConfig, {"packs": ["p"], "out": "o", "train": {"lr": -1}})
    with pytest.raises(ConfigError, match="seeds: .*duplicates"):
        validate(ExperimentConfig, {"packs": ["p"], "out": "o", "seeds": [1, 1]})


def test_train_config_is_plain_data():
    config = TrainConfig(pack="p", out="o")
    assert TrainConfig.model_validate(config.model_dump(mode="json")) == config


def test_the_model_part_is_typed():
    config = validate(
        TrainConfig,
        {
            "pack": "p",
            "out": "o",
            "backbone": "conv",
            "method": "calibration",
            "calibration": "reliability",
            "hidden": 8,
            "model_options": {"kernel": 5, "reliability": {"scale_loss": "tcp"}},
        },
    )
    model = config.architecture
    assert (model.backbone, model.method, model.calibration, model.hidden) == ("conv", "calibration", "reliability", 8)
    assert model.options.kernel == 5 and model.options.reliability.scale_loss == "tcp"
    assert model.options.reliability.evidence_hidden == 64  # the default of ReliabilityCalibration
    with pytest.raises(ConfigError, match=r"model_options\.kernal: Extra inputs"):
        validate(TrainConfig, {"pack": "p", "out": "o", "model_options": {"kernal": 5}})
    with pytest.raises(ConfigError, match=r"model_options\.reliability\.scale_loss"):
        validate(TrainConfig, {"pack": "p", "out": "o", "model_options": {"reliability": {"scale_loss": "l2"}}})
    with pytest.raises(ConfigError, match="calibration: unknown calibration variant 'magic'; registered: aux, paper"):
        validate(TrainConfig, {"pack": "p", "out": "o", "calibration": "magic"})
