import pytest

from pipeline.config import ConfigError, Params, load_params, parse_override, resolve


def test_defaults_and_preset_resolution(tmp_path):
    raw = {"preset": "tiny", "model": {"hidden_size": 64},
           "presets": {"tiny": {"model": {"num_hidden_layers": 1}}, "small": {}}}
    params = resolve(raw)
    assert params.model.hidden_size == 64 and params.model.num_hidden_layers == 1
    assert params.pretrain.mlm_probability == 0.15  # dataclass default
    small = resolve(raw, [{"preset": "small"}])
    assert small.model.num_hidden_layers == Params().model.num_hidden_layers


def test_repo_params_load_for_every_preset():
    for preset in ("tiny", "small", "base"):
        params = load_params("params.yaml", [f"preset={preset}"])
        assert params.preset == preset
        assert params.pretrain.max_seq_length % 2 == 0  # PLM needs even lengths


def test_unknown_key_is_an_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"unknown params key pretrain\.max_stepz.*max_steps"):
        resolve({"pretrain": {"max_stepz": 3}})
    with pytest.raises(ConfigError, match="unknown params key colour"):
        resolve({"colour": "red"})


@pytest.mark.parametrize("section,key,value,expected", [
    ("pretrain", "max_steps", "ten", "expected int"),
    ("pretrain", "max_steps", 1.5, "expected int"),
    ("finetune", "class_weighted_loss", 1, "expected bool"),
    ("model", "hidden_size", True, "expected int"),
    ("data", "source", 3, "expected str"),
])
def test_wrong_type_is_an_error(section, key, value, expected):
    with pytest.raises(ConfigError, match=f"{section}.{key}: {expected}"):
        resolve({section: {key: value}})


def test_int_is_accepted_for_float_and_none_for_optional():
    params = resolve({"pretrain": {"learning_rate": 1}, "data": {"max_train_samples": None}})
    assert params.pretrain.learning_rate == 1.0 and isinstance(params.pretrain.learning_rate, float)


def test_unknown_preset_and_bad_override():
    with pytest.raises(ConfigError, match="preset 'huge' is not defined"):
        resolve({"preset": "huge", "presets": {"tiny": {}}})
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("pretrain.max_steps")
    assert parse_override("a.b=3") == {"a": {"b": 3}}


def test_missing_params_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")


def test_cli_reports_a_bad_param_in_one_line_before_any_work(tmp_path):
    from conftest import run_cli

    proc = run_cli("prepare", "--set", "data.bogus=1", env={"BILM_ARTIFACTS": str(tmp_path / "a")})
    assert proc.returncode == 2
    assert "error: unknown params key data.bogus" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("pretrain", "bert", "--set", "pretrain.max_steps=many", env={"BILM_ARTIFACTS": str(tmp_path / "a")})
    assert proc.returncode == 2 and "pretrain.max_steps: expected int" in proc.stderr
    assert not (tmp_path / "a").exists()
