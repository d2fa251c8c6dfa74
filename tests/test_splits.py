"""The hash split of each task's prompts (``mssr/splits.py``): the built-in stream's ``tune`` and
``eval`` files, user tasks under a split, ``check_disjoint`` and the sweep's split."""

import hashlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from mssr.builtin_stream import BUILTIN_TASKS, _generate, builtin_task_specs
from mssr.config import StreamConfig, TaskSpec, config_to_dict, load_config
from mssr.errors import ConfigError, DataError
from mssr.splits import TUNE_FRACTION, check_disjoint, normalise_prompt, overlap, prompt_part
from mssr.tasks import load_stream

SMALL = dict(builtin="reasoning-gym", train_size=16, test_size=8)

# the files of the built-in stream at train_size 16, test_size 8, data_seed 1234, as the
# generation before stream.split made them (reasoning-gym 0.1.25): `all` must keep them
GOLDEN = {
    "chain_sum.test.jsonl": "84d13e47bc54dd07caef89628be7ded09650adc2e934aa9ba585cf269a139a0d",
    "chain_sum.train.jsonl": "787ade7f3f69bd8f738627e580123eaaaa5ecb59d749e66aaf28d52cb4a78e71",
    "family_relationships.test.jsonl": "b9dc4a8f46d013539d7fd0da0c88905f20e748079718965f5cc5bfda633e0ea8",
    "family_relationships.train.jsonl": "7891e51c1ae5616e81d957eb12e5d9fadb60f6d1574b16912cf8e509f9782088",
    "gcd.test.jsonl": "f85c1043487b28c2497fcec7f215cb2700a31816822735b64fd538f07d2c4e74",
    "gcd.train.jsonl": "d08d143a9bbdf5618c038509f87aa3e244b021beb9ab9f0871d1d01826bdb40c",
    "syllogism.test.jsonl": "7f724eaaca09408a1de28ad4fba467cbe17f28a150b06f5ea942985921c7f005",
    "syllogism.train.jsonl": "fced1bc5dbd62a677b85cfaa4516d6b61cd51cb7cadcb5cfe5d5b7b5902ae8f8",
    "aiw.test.jsonl": "53ae3eca084351856b0e6afb47908522afec82af2fa266c030f6af3bdfe1ab4c",
    "aiw.train.jsonl": "f57f59efc9afedaf788db2bedc75c8f8b7567391f4506406690bfd7686170045",
}


def _prompts(examples) -> set[str]:
    return {normalise_prompt(e.prompt) for e in examples}


def test_the_hash_split_is_deterministic_and_near_half():
    assert normalise_prompt("  What is\n4 +  7?\t") == "what is 4 + 7?"
    text = "State the final answer to the following arithmetic problem: 4 + 7 ="
    digest = hashlib.sha256(normalise_prompt(text).encode()).digest()
    expected = "tune" if int.from_bytes(digest[:8], "big") / 2**64 < TUNE_FRACTION else "eval"
    assert prompt_part(text) == expected == prompt_part("  " + text.upper().replace(" ", "\n"))
    assert [prompt_part(f"q {i}") for i in range(50)] == [prompt_part(f"q {i}") for i in range(50)]
    assert 0.47 < sum(prompt_part(f"question {i}") == "tune" for i in range(4000)) / 4000 < 0.53
    # chain_sum: about 200 distinct prompts in all, about half of them on each side
    dataset, settings = BUILTIN_TASKS["chain_sum"]
    distinct = {normalise_prompt(r["prompt"]) for r in _generate(dataset, settings, 1000, 1)}
    assert 150 < len(distinct) < 250
    assert 0.4 < sum(prompt_part(p) == "tune" for p in distinct) / len(distinct) < 0.6


@pytest.mark.parametrize("tune_seed,eval_seed", [(1234, 99), (99, 1234), (1234, 1234)])
def test_tune_and_eval_streams_share_no_prompt(tmp_path, tune_seed, eval_seed):
    tune = load_stream(StreamConfig(**SMALL, data_seed=tune_seed, split="tune"), tmp_path)
    evaluation = load_stream(StreamConfig(**SMALL, data_seed=eval_seed, split="eval"), tmp_path)
    assert [t.name for t in tune] == [t.name for t in evaluation] == list(BUILTIN_TASKS)[:5]
    assert overlap(tune, evaluation) == {t.name: 0 for t in tune}
    for a, b in zip(tune, evaluation):
        assert len(a.train) == len(b.train) == 16 and len(a.test) == len(b.test) == 8
        assert all(prompt_part(e.prompt) == "tune" for e in a.train + a.test)
        assert all(prompt_part(e.prompt) == "eval" for e in b.test)
        assert not _prompts(a.train) & _prompts(a.test) and not _prompts(b.train) & _prompts(b.test)
        assert not (_prompts(a.train) | _prompts(a.test)) & _prompts(b.test)


def test_all_keeps_todays_files_and_the_splits_get_their_own_folders(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    for split in ("tune", "eval"):  # generating the splits first does not touch the `all` files
        builtin_task_specs(StreamConfig(**SMALL, split=split), cache=second)
    specs = {c: builtin_task_specs(StreamConfig(**SMALL), cache=c) for c in (first, second)}
    for cache, made in specs.items():
        for s in made:
            for path in (Path(s.train), Path(s.test)):
                assert path.parent == cache / "streams" / "reasoning-gym-v2-seed1234-16-8"
                assert hashlib.sha256(path.read_bytes()).hexdigest() == GOLDEN[path.name], path
    folders = sorted(p.name for p in (second / "streams").iterdir())
    assert folders == [
        "reasoning-gym-v2-seed1234-16-8",
        "reasoning-gym-v2-seed1234-16-8-eval",
        "reasoning-gym-v2-seed1234-16-8-tune",
    ]


def _user_stream(write_jsonl, split, test_prompts=None, **extra) -> StreamConfig:
    train = write_jsonl("train.jsonl", [{"prompt": f"train question {i}", "answer": "a"} for i in range(60)])
    test_rows = test_prompts or [f"test question {i}" for i in range(30)]
    test = write_jsonl("test.jsonl", [{"prompt": p, "answer": "a"} for p in test_rows])
    return StreamConfig(tasks=[TaskSpec(name="x", train=str(train), test=str(test))], split=split, **extra)


def test_user_tasks_are_filtered_by_the_split(write_jsonl):
    (everything,) = load_stream(_user_stream(write_jsonl, "all"))
    assert len(everything.train) == 60 and len(everything.test) == 30
    (tune,) = load_stream(_user_stream(write_jsonl, "tune"))
    assert tune.train == [e for e in everything.train if prompt_part(e.prompt) == "tune"]
    assert tune.test == [e for e in everything.test if prompt_part(e.prompt) == "tune"]
    assert 0 < len(tune.train) < 60 and 0 < len(tune.test) < 30
    (evaluation,) = load_stream(_user_stream(write_jsonl, "eval"))
    assert evaluation.train == everything.train  # eval filters the test rows only
    assert evaluation.test == [e for e in everything.test if prompt_part(e.prompt) == "eval"]
    assert overlap([tune], [evaluation]) == {"x": 0}


def test_a_user_task_the_split_leaves_empty_is_a_data_error(write_jsonl):
    tune_only = [p for p in (f"test question {i}" for i in range(40)) if prompt_part(p) == "tune"][:5]
    with pytest.raises(DataError, match=r"task 'x': none of its 5 test rows .*stream\.split=eval"):
        load_stream(_user_stream(write_jsonl, "eval", tune_only))
    assert len(load_stream(_user_stream(write_jsonl, "tune", tune_only))[0].test) == 5


def test_check_disjoint_refuses_shared_prompts_and_accepts_a_tune_eval_pair(tmp_path):
    sizes = dict(SMALL, train_size=128, test_size=24)
    same = StreamConfig(**sizes, data_seed=7)
    with pytest.raises(ConfigError) as e:
        check_disjoint(same.model_dump(mode="json"), same, cache_dir=tmp_path)
    message = str(e.value)
    assert "\n" not in message and message.startswith("--tuned: the sweep's rows include 24 of ")
    assert "test prompts (and 24 of " in message and message.endswith("compare with stream.split=eval")
    # other data seeds, both `all`: chain_sum's few prompts are shared all the same
    with pytest.raises(ConfigError, match=r"of chain_sum's 24 test prompts"):
        check_disjoint(StreamConfig(**sizes, data_seed=8).model_dump(mode="json"), same, cache_dir=tmp_path)
    # a sweep's stream settings as best_params.yaml keeps them, and the comparison's on eval
    tuned_on = config_to_dict(load_config(None, ["stream.split=tune", "stream.data_seed=8"]))["stream"]
    tuned_on.update(train_size=128, test_size=24)
    check_disjoint(tuned_on, StreamConfig(**sizes, data_seed=7, split="eval"), cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="--tuned: tuned_on: split"):
        check_disjoint({**tuned_on, "split": "half"}, same, cache_dir=tmp_path)


def test_a_sweep_runs_on_the_tune_part_and_refuses_eval():
    from pipelines.tune import sweep_split

    assert sweep_split(load_config(None)) == "stream.split=tune"
    assert sweep_split(load_config(None, ["stream.split=all"])) == "stream.split=tune"
    assert sweep_split(load_config(None, ["stream.split=tune"])) is None
    with pytest.raises(ConfigError, match="stream.split=eval: a sweep never runs on the evaluation prompts") as e:
        sweep_split(load_config(None, ["stream.split=eval"]))
    assert "\n" not in str(e.value)


def test_best_params_keep_the_sweeps_stream_settings(tmp_path):
    from mssr.search_space import Param, SearchSpace
    from pipelines.tune import _write_best_params

    base = load_config(None, ["stream.split=tune", "replay.strategy=fixed"])
    space = SearchSpace(
        "space.yaml",
        {"replay.strategy": Param("value", ["fixed"]), "replay.samples_per_event": Param("choice", [2, 4])},
    )
    grid = [SimpleNamespace(metrics={"trial_id": "t1"}, config={"replay.samples_per_event": np.int64(4)})]
    tuned_on = config_to_dict(base)["stream"]
    path = _write_best_params(base, space, grid, {"trial": "t1"}, tmp_path / "best_params.yaml", tuned_on)
    tree = yaml.safe_load(path.read_text())
    assert list(tree) == ["fixed", "tuned_on"] and tree["fixed"] == {"replay.samples_per_event": 4}
    assert tree["tuned_on"] == tuned_on and tree["tuned_on"]["split"] == "tune"
    assert StreamConfig.model_validate(tree["tuned_on"]) == base.stream
