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
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="unsupported file type"):
        read_rows(tmp_path / "x.csv")


def test_load_task_caps_sizes_and_checks_scorer(write_jsonl):
    tr = write_jsonl("tr.jsonl", [{"prompt": f"q{i}", "answer": "a"} for i in range(10)])
    te = write_jsonl("te.jsonl", [{"prompt": f"t{i}", "answer": "a"} for i in range(5)])
    t = load_task("x", str(tr), str(te), None, "token_f1", max_train=4, max_test=2)
    assert len(t.train) == 4 and len(t.test) == 2
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
