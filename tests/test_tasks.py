import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mssr.errors import DataError
from mssr.tasks import load_task, read_rows


def test_trace_and_alpaca_rows(write_jsonl):
    p = write_jsonl(
        "t.jsonl",
        [
            {"prompt": "2+2?", "answer": "4"},
            {"instruction": "Add", "input": "2 and 3", "output": "5"},
            {"instruction": "Say hi", "input": "", "output": "hi"},
        ],
    )
    rows = read_rows(p)
    assert [(r.prompt, r.answer) for r in rows] == [("2+2?", "4"), ("Add\n\n2 and 3", "5"), ("Say hi", "hi")]
    assert [r.line for r in rows] == [1, 2, 3]


def test_numeric_answers_become_strings(write_jsonl):
    assert read_rows(write_jsonl("t.jsonl", [{"prompt": "1+1", "answer": 2}]))[0].answer == "2"


def test_parquet_rows(tmp_path):
    p = tmp_path / "t.parquet"
    pq.write_table(pa.table({"prompt": ["a", "b"], "answer": ["1", "2"]}), p)
    assert [r.answer for r in read_rows(p)] == ["1", "2"]


@pytest.mark.parametrize(
    "content,fragment",
    [
        ('{"prompt": "a", "answer": "b"}\n{"prompt": "a", "answer": \n', ":2: malformed JSON"),
        ('{"prompt": "a"}\n', ":1: missing field 'answer'"),
        ('{"prompt": "  ", "answer": "b"}\n', ":1: field 'prompt' is empty"),
        ('{"question": "a", "answer": "b"}\n', ":1: missing field 'prompt'"),
        ('{"text": "a"}\n', ":1: expected fields 'prompt' and 'answer'"),
        ("[1, 2]\n", ":1: expected a JSON object"),
        ('{"prompt": ["a"], "answer": "b"}\n', ":1: field 'prompt' must be a string"),
        ("\n\n", ": no rows"),
    ],
)
def test_bad_rows_name_file_and_line(write_jsonl, content, fragment):
    p = write_jsonl("bad.jsonl", content)
    with pytest.raises(DataError) as e:
        read_rows(p)
    assert str(e.value).startswith(str(p)) and fragment in str(e.value)


def test_non_utf8_file(write_jsonl):
    p = write_jsonl("latin.jsonl", '{"prompt": "caf\xe9", "answer": "x"}\n'.encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        read_rows(p)


def test_missing_file_and_bad_extension(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_rows(tmp_path / "nope.jsonl")
    (tmp_path / "x.txt").write_text("a,b\n")
    with pytest.raises(DataError, match="unsupported file type '.txt'; expected .jsonl, .json, .parquet or .csv"):
        read_rows(tmp_path / "x.txt")


def test_load_task_keeps_every_row_and_checks_scorer(write_jsonl):
    tr = write_jsonl("tr.jsonl", [{"prompt": f"q{i}", "answer": "a"} for i in range(10)])
    te = write_jsonl("te.jsonl", [{"prompt": f"t{i}", "answer": "a"} for i in range(5)])
    t = load_task("x", str(tr), str(te), None, "token_f1")
    assert len(t.train) == 10 and len(t.test) == 5 and t.train_file == str(tr)
    from mssr.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown scorer"):
        load_task("x", str(tr), str(te), None, "f1_score")


@pytest.mark.parametrize(
    "stream,first,last,count",
    [("reasoning-gym", "chain_sum", "aiw", 5), ("reasoning-gym-long", "chain_sum", "decimal_chain_sum", 11)],
)
def test_builtin_streams_generate_distinct_train_and_test_prompts(tmp_path, stream, first, last, count):
    from mssr.builtin_stream import builtin_task_specs
    from mssr.config import StreamConfig

    specs = builtin_task_specs(StreamConfig(builtin=stream, train_size=12, test_size=6), cache=tmp_path)
    assert [s.name for s in specs][0] == first and specs[-1].name == last and len(specs) == count
    assert len({s.name for s in specs}) == count
    for s in specs:
        train, test = read_rows(s.train), read_rows(s.test)
        assert len(train) == 12 and len(test) == 6
        assert not {e.prompt for e in train} & {e.prompt for e in test}  # no test prompt is trained on
        assert all(e.answer.strip() for e in train + test)


def test_a_user_task_keeps_every_row_whatever_the_built_in_sizes(write_jsonl):
    from mssr.config import StreamConfig, TaskSpec
    from mssr.tasks import load_stream

    tr = write_jsonl("tr.jsonl", [{"prompt": f"q{i}", "answer": "a"} for i in range(300)])
    te = write_jsonl("te.jsonl", [{"prompt": f"t{i}", "answer": "a"} for i in range(50)])
    cfg = StreamConfig(tasks=[TaskSpec(name="x", train=str(tr), test=str(te))], train_size=256, test_size=40)
    (task,) = load_stream(cfg)
    assert len(task.train) == 300 and len(task.test) == 50  # not capped at 256 and 40


def test_a_seeded_order_is_a_fixed_permutation_of_the_listed_one():
    from mssr.tasks import ordered

    names = ["chain_sum", "family_relationships", "gcd", "syllogism", "aiw"]
    assert ordered(names, None) == names
    orders = {seed: ordered(names, seed) for seed in range(4)}
    assert all(sorted(o) == sorted(names) for o in orders.values())
    assert all(ordered(names, seed) == o for seed, o in orders.items())  # deterministic
    assert len({tuple(o) for o in orders.values()}) == 4  # different seeds, different orders
    assert orders[0] == ["gcd", "chain_sum", "family_relationships", "syllogism", "aiw"]  # the documented rule
    assert names == ["chain_sum", "family_relationships", "gcd", "syllogism", "aiw"]  # the list is not touched


def test_every_order_of_the_built_in_stream_shares_every_tasks_rows(tmp_path):
    from mssr.config import StreamConfig
    from mssr.tasks import load_stream

    streams = {
        seed: load_stream(StreamConfig(train_size=12, test_size=6, order_seed=seed), tmp_path) for seed in (None, 0, 1)
    }
    listed = [t.name for t in streams[None]]
    assert listed == ["chain_sum", "family_relationships", "gcd", "syllogism", "aiw"]
    assert [t.name for t in streams[0]] != listed and [t.name for t in streams[1]] != [t.name for t in streams[0]]
    rows = {t.name: (t.train, t.test) for t in streams[None]}
    for tasks in streams.values():
        assert sorted(t.name for t in tasks) == sorted(listed)
        assert all((t.train, t.test) == rows[t.name] for t in tasks)


def test_a_seeded_order_reorders_user_tasks(write_jsonl):
    from mssr.config import StreamConfig, TaskSpec
    from mssr.tasks import load_stream, ordered

    f = write_jsonl("f.jsonl", [{"prompt": "q", "answer": "a"}])
    specs = [TaskSpec(name=n, train=str(f), test=str(f)) for n in "abcde"]
    got = [t.name for t in load_stream(StreamConfig(tasks=specs, order_seed=3))]
    assert got == ordered(list("abcde"), 3) and got != list("abcde")


def test_every_accepted_row_shape(write_jsonl):
    p = write_jsonl(
        "shapes.jsonl",
        [
            {"prompt": "2+2?", "completion": "4"},  # TRL
            {
                "messages": [
                    {"role": "user", "content": "Capital of France?"},
                    {"role": "assistant", "content": "Paris"},
                ]
            },
            {"instruction": "Add", "input": "2 and 3", "output": "5", "system": "", "history": []},  # LLaMA-Factory
        ],
    )
    assert [(r.prompt, r.answer) for r in read_rows(p)] == [
        ("2+2?", "4"),
        ("Capital of France?", "Paris"),
        ("Add\n\n2 and 3", "5"),
    ]


def test_a_json_array_of_alpaca_rows(tmp_path):
    import json

    p = tmp_path / "alpaca.json"
    p.write_text(
        json.dumps([{"instruction": "Say hi", "input": "", "output": "hi"}, {"prompt": "a", "answer": 1}], indent=2)
    )
    assert [(r.prompt, r.answer, r.line) for r in read_rows(p)] == [("Say hi", "hi", 1), ("a", "1", 2)]
    p.write_text(json.dumps([{"instruction": "x", "output": "y"}, {"instruction": "x"}]))
    with pytest.raises(DataError, match=r"alpaca.json: row 2: missing field 'output'"):
        read_rows(p)
    p.write_text('[{"prompt": "a", "answer": "b"},\n {"prompt": ')
    with pytest.raises(DataError, match=r"alpaca.json:2: malformed JSON"):
        read_rows(p)


def test_csv_rows(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text('prompt,answer\n"2+2, please",4\nCapital of France?,Paris\n')
    assert [(r.prompt, r.answer, r.line) for r in read_rows(p)] == [
        ("2+2, please", "4", 2),
        ("Capital of France?", "Paris", 3),
    ]
    p.write_text("instruction,input,output\nSay hi,,hi\n")
    assert [(r.prompt, r.answer) for r in read_rows(p)] == [("Say hi", "hi")]
    p.write_text("prompt,answer\na,b\nc,d,e\n")
    with pytest.raises(DataError, match=r"t.csv:3: more cells than the header's 2 columns"):
        read_rows(p)
    p.write_text("prompt,answer\na,\n")
    with pytest.raises(DataError, match=r"t.csv:2: field 'answer' is empty"):
        read_rows(p)


@pytest.mark.parametrize(
    "row,fragment",
    [
        ({"prompt": [{"role": "user", "content": "a"}], "completion": "b"}, "give them as 'messages' rows"),
        ({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "a"}]}, "stream.system_prompt"),
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}] * 2},
            "multi-turn conversations are not supported",
        ),
        ({"messages": "hi"}, "must be a list of"),
        ({"instruction": "a", "output": "b", "system": "be brief"}, "field 'system' is not supported"),
        ({"instruction": "a", "output": "b", "history": [["q", "a"]]}, "field 'history' is not supported"),
    ],
)
def test_shapes_not_supported_are_refused_not_dropped(write_jsonl, row, fragment):
    p = write_jsonl("x.jsonl", [row])
    with pytest.raises(DataError, match=":1: ") as e:
        read_rows(p)
    assert fragment in str(e.value)


def test_caps_on_a_user_task_are_a_seeded_sample_and_the_plan_says_n_of_m(write_jsonl, tmp_path):
    from mssr.config import Config, TaskSpec
    from mssr.run_plan import build_plan, format_plan
    from mssr.strategies import build_strategy
    from mssr.tasks import load_stream

    tr = write_jsonl("tr.jsonl", [{"prompt": f"q{i}", "answer": "a"} for i in range(50)])
    te = write_jsonl("te.jsonl", [{"prompt": f"t{i}", "answer": "a"} for i in range(20)])
    spec = TaskSpec(name="x", train=str(tr), test=str(te), max_train_rows=10, max_test_rows=5)
    cfg = Config.model_validate({"stream": {"tasks": [spec.model_dump()]}})
    (task,) = load_stream(cfg.stream)
    again = load_stream(cfg.stream)[0]
    assert len(task.train) == 10 and len(task.test) == 5 and (task.train_total, task.test_total) == (50, 20)
    assert [e.prompt for e in task.train] == [e.prompt for e in again.train]  # seeded
    assert [e.prompt for e in task.train] != [f"q{i}" for i in range(10)]  # a sample, not the first rows
    assert [e.line for e in task.train] == sorted(e.line for e in task.train)  # in file order
    other = Config.model_validate({"stream": {"tasks": [spec.model_dump()], "data_seed": 7}})
    assert [e.prompt for e in load_stream(other.stream)[0].train] != [e.prompt for e in task.train]
    stats = [{"rows": 10, "tokens": 100, "max_length": 12, "truncated": 0}]
    plan = build_plan(cfg, [task], stats, build_strategy("fixed", cfg.replay))
    capped = "capped by max_train_rows / max_test_rows (a seeded random sample): "
    assert capped + "x: 10 of 50 train rows; x: 5 of 20 test rows" in format_plan(plan)
