import pytest

from mssr.config import load_config, parse_overrides
from mssr.errors import ConfigError


def test_defaults_validate():
    cfg = load_config()
    assert cfg.replay.strategy == "mssr" and cfg.train.num_workers == 2


def test_unknown_key_gets_nearest_valid_key(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("replay:\n  mssr:\n    decayy: 0.1\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "replay.mssr.decayy" in str(e.value) and "did you mean 'decay'" in str(e.value)


def test_unknown_top_level_key(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("trian:\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match="did you mean 'train'"):
        load_config(p)


@pytest.mark.parametrize(
    "override,fragment",
    [
        ("train.lr=-1", "train.lr"),
        ("replay.mssr.decay=0", "replay.mssr.decay"),
        ("replay.fixed.interval=0", "replay.fixed.interval"),
        ("replay.budget=-5", "budget"),
        ("train.batch_size=abc", "train.batch_size"),
        ("model.finetune=partial", "model.finetune"),
    ],
)
def test_bad_values_name_the_key(override, fragment):
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
        load_config(None, [override])


def test_overrides_are_yaml_typed():
    assert parse_overrides(["train.lr=3e-4", "replay.budget=null", "run.name=x"]) == {
        "train": {"lr": 3e-4},
        "replay": {"budget": None},
        "run": {"name": "x"},
    }
    cfg = load_config(None, ["train.lr=3e-4", "seed=7"])
    assert cfg.train.lr == 3e-4 and cfg.seed == 7


def test_override_without_equals_is_rejected():
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["train.lr"])


def test_duplicate_task_names_rejected(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(
        "stream:\n  tasks:\n    - {name: a, train: x.jsonl, test: y.jsonl}\n"
        "    - {name: a, train: x.jsonl, test: y.jsonl}\n"
    )
    with pytest.raises(ConfigError, match="duplicate task name 'a'"):
        load_config(p)


def test_task_paths_are_relative_to_the_config(tmp_path):
    (tmp_path / "sub").mkdir()
    p = tmp_path / "sub" / "c.yaml"
    p.write_text("stream:\n  tasks:\n    - {name: a, train: d/x.jsonl, test: d/y.jsonl}\n")
    cfg = load_config(p)
    assert cfg.stream.tasks[0].train == str((tmp_path / "sub" / "d" / "x.jsonl").resolve())


def test_missing_config_file():
    with pytest.raises(ConfigError, match="not found"):
        load_config("/nonexistent/c.yaml")


def test_a_dumped_config_validates_again_but_an_empty_task_list_alone_does_not():
    from mssr.config import Config, config_to_dict

    cfg = load_config(None, ["seed=3"])
    assert Config.model_validate(config_to_dict(cfg)) == cfg  # what the workers and best.yaml receive
    with pytest.raises(ConfigError, match="tasks: the list is empty"):
        load_config(None, ["stream.tasks=[]"])
