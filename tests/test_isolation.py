"""Parameter isolation: masked weights stay bit-for-bit, released weights move, EPI's mask drifts."""

import io

import pytest
import torch

from mssr.config import IsolationConfig, ModelConfig, TrainConfig, load_config
from mssr.errors import ConfigError
from mssr.isolation import ISOLATIONS, ParameterIsolation, make_isolation, mask_overlap, top_fraction_mask
from mssr.losses import per_sample_loss
from mssr.models import load_model
from mssr.optim import OPTIMIZERS, build_optimizer


def _mlp(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.Tanh(), torch.nn.Linear(12, 3))


def _step(model, opt, iso, data_seed, used=None):
    """One training step with isolation: backward, importance, frozen optimizer step.
    ``used``: a list that receives a copy of the mask the step applied."""
    g = torch.Generator().manual_seed(data_seed)
    x, y = torch.randn(16, 6, generator=g), torch.randn(16, 3, generator=g)
    ((model(x) - y) ** 2).mean().backward()
    metrics = iso.observe_gradients()
    if used is not None:
        used.append([m.clone() for m in iso.mask])
    with iso.frozen():
        torch.nn.utils.clip_grad_norm_(list(model.parameters()), 1.0)
        opt.step()
    opt.zero_grad(set_to_none=True)
    return metrics


def _train_cfg(name):
    # weight decay everywhere, and momentum: the two ways an optimizer moves a weight whose gradient is zero
    extra = {"momentum": 0.9} if name in ("sgd", "rmsprop") else {}
    return TrainConfig(optimizer=name, weight_decay=0.1, lr=0.05, **extra)


@pytest.mark.parametrize("method", ["static", "epi"])
@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_masked_weights_are_bit_for_bit_unchanged_under_every_optimizer(name, method):
    model = _mlp()
    params = list(model.parameters())
    opt, _ = build_optimizer(model, _train_cfg(name), total_steps=40)
    fields = {"method": method, "ratio": 0.3} | ({"refresh_every": 3} if method == "epi" else {})
    iso = make_isolation(IsolationConfig(**fields), params)
    iso.start_task(0)
    for s in range(4):  # task 0 (static: nothing frozen yet; epi: the first refresh at step 3)
        _step(model, opt, iso, s)
    iso.start_task(1)
    assert iso.mask is not None
    checked, moved = 0, 0
    for s in range(4, 14):
        before, used = [p.detach().clone() for p in params], []
        _step(model, opt, iso, s, used)
        for p, b, m in zip(params, before, used[0]):
            assert torch.equal(p.detach()[m], b[m]), f"{name}/{method}: an isolated weight moved at step {s}"
            checked += int(m.sum())
            moved += int((p.detach()[~m] != b[~m]).sum())
    assert checked > 0 and moved > 0  # isolation froze something and the rest trained


def test_a_weight_released_from_the_epi_mask_moves_again():
    w = torch.nn.Parameter(torch.ones(10))
    opt = torch.optim.AdamW([w], lr=0.1, weight_decay=0.1)
    iso = make_isolation(IsolationConfig(method="epi", ratio=0.5, refresh_every=3, ema=0.5), [w])
    scale = torch.tensor([1.0] * 5 + [0.0] * 5)

    def step(scale):
        ((w * scale) ** 2).sum().backward()
        iso.observe_gradients()
        with iso.frozen():
            opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):  # only w[:5] matter: they become the mask
        step(scale)
    assert iso.mask[0].tolist() == [True] * 5 + [False] * 5
    first = w.detach().clone()
    for _ in range(2):  # now only w[5:] matter, a lot: w[:5] stay put (momentum and decay held back)
        step(100 * (1 - scale))
    assert torch.equal(w.detach()[:5], first[:5])
    step(100 * (1 - scale))  # the refresh before this step swaps the mask: w[:5] are released
    assert iso.mask[0].tolist() == [False] * 5 + [True] * 5
    assert (w.detach()[:5] != first[:5]).all()  # AdamW's momentum and weight decay reach them again
    released = w.detach().clone()
    step(torch.ones(10))
    assert (w.detach()[:5] != released[:5]).all()  # and so does the gradient
    assert torch.equal(w.detach()[5:], released[5:])  # now isolated


def test_epi_mask_drifts_over_refreshes_while_static_stays_fixed_within_a_task():
    results = {}
    for method in ("static", "epi"):
        model = _mlp()
        opt, _ = build_optimizer(model, _train_cfg("adamw"), total_steps=40)
        fields = {"method": method, "ratio": 0.2} | ({"refresh_every": 2} if method == "epi" else {})
        iso = make_isolation(IsolationConfig(**fields), list(model.parameters()))
        iso.start_task(0)
        for s in range(4):
            _step(model, opt, iso, s)
        iso.start_task(1)
        masks, overlaps = [], []
        for s in range(4, 16):
            metrics = _step(model, opt, iso, s)
            masks.append([m.clone() for m in iso.mask])
            if metrics:
                overlaps.append(metrics["isolation/mask_overlap"])
                assert metrics["isolation/fraction"] == pytest.approx(0.2, abs=0.01)
        results[method] = (masks, overlaps)
    static_masks, static_overlaps = results["static"]
    assert static_overlaps == [] and all(
        all(torch.equal(a, b) for a, b in zip(m, static_masks[0])) for m in static_masks
    )
    _, epi_overlaps = results["epi"]
    assert len(epi_overlaps) == 6 and min(epi_overlaps) < 1.0  # the mask changed
    assert all(0.0 <= o <= 1.0 for o in epi_overlaps)


def test_static_mask_is_what_the_last_task_moved_most():
    w = torch.nn.Parameter(torch.zeros(8))
    iso = make_isolation(IsolationConfig(method="static", ratio=0.25), [w])
    assert iso.start_task(0) is None and iso.mask is None  # nothing learned yet: nothing frozen
    with torch.no_grad():
        w += torch.tensor([0.1, -3.0, 0.2, 0.0, 2.0, 0.0, -0.1, 0.05])
    metrics = iso.start_task(1)
    assert iso.mask[0].tolist() == [False, True, False, False, True, False, False, False]
    assert metrics["isolation/fraction"] == 0.25 and metrics["isolation/state_mb"] > 0


@pytest.mark.parametrize("method", ["static", "epi"])
def test_state_round_trip_continues_exactly(method):
    """A restored isolation state (through torch.save, weights_only) gives the same masks as no restore."""

    def run(restore_at=None):
        model = _mlp()
        opt, _ = build_optimizer(model, _train_cfg("adamw"), total_steps=40)
        cfg = IsolationConfig(method=method, ratio=0.2, **({"refresh_every": 2} if method == "epi" else {}))
        iso = make_isolation(cfg, list(model.parameters()))
        for s in range(12):
            if s % 4 == 0:
                iso.start_task(s // 4)
            if s == restore_at:
                buf = io.BytesIO()
                torch.save(iso.state_dict(), buf)
                buf.seek(0)
                iso = make_isolation(cfg, list(model.parameters()))
                iso.load_state_dict(torch.load(buf, weights_only=True))
            _step(model, opt, iso, s)
        return [p.detach().clone() for p in model.parameters()], iso.mask

    (params_a, mask_a), (params_b, mask_b) = run(), run(restore_at=6)
    assert all(torch.equal(a, b) for a, b in zip(params_a, params_b))
    assert all(torch.equal(a, b) for a, b in zip(mask_a, mask_b))


@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_isolation_on_a_real_causal_lm(finetune):
    """LoRA adapters and full fine-tuning: the same machinery over the model's trainable weights."""
    model, _ = load_model(ModelConfig(name="tiny", finetune=finetune, lora={"r": 4, "alpha": 8}), seed=0)
    params = [p for p in model.parameters() if p.requires_grad]
    opt, _ = build_optimizer(model, _train_cfg("adamw"), total_steps=10)
    iso = make_isolation(IsolationConfig(method="epi", ratio=0.1, refresh_every=1), params)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, model.config.vocab_size, (2, 12), generator=g)
    labels = ids.clone()
    labels[:, :6] = -100
    for _ in range(3):
        before = [p.detach().clone() for p in params]
        per_sample_loss(model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits, labels).mean().backward()
        iso.observe_gradients()
        mask = [m.clone() for m in iso.mask]
        with iso.frozen():
            opt.step()
        opt.zero_grad(set_to_none=True)
        for p, b, m in zip(params, before, mask):
            assert torch.equal(p.detach()[m], b[m])
    assert iso.isolated_fraction() == pytest.approx(0.1, abs=1e-3)
    assert iso.state_bytes() >= sum(p.numel() * 5 for p in params)  # float32 importance + bool mask


def test_top_fraction_mask_takes_exactly_the_ratio_and_normalises_per_tensor():
    big, small = torch.full((100,), 1000.0), torch.ones(100)
    big[:10] = 5000.0  # 5x its tensor's mean-ish
    small[:10] = 1.5
    mask = top_fraction_mask([big, small], 0.05)
    assert sum(int(m.sum()) for m in mask) == 10
    assert int(mask[0][:10].sum()) == 10  # relative importance decides, not raw scale
    zero = top_fraction_mask([torch.zeros(4), torch.tensor([0.0, 1.0, 2.0, 3.0])], 0.25)
    assert [m.tolist() for m in zero] == [[False] * 4, [False, False, True, True]]
    assert mask_overlap(None, mask) is None and mask_overlap(mask, mask) == 1.0


def test_config_round_trips_for_every_method():
    """Workers re-validate the dumped config: defaults repeated for an unused field are fine."""
    from mssr.config import Config, config_to_dict

    for method in ("none", "static", "epi"):
        cfg = load_config(None, [f"isolation.method={method}"])
        assert Config.model_validate(config_to_dict(cfg)) == cfg


def test_none_freezes_nothing_and_methods_are_registered():
    assert ISOLATIONS.names() == ["none", "static", "epi"]
    w = torch.nn.Parameter(torch.ones(3))
    iso = make_isolation(IsolationConfig(), [w])
    assert type(iso) is ParameterIsolation and iso.start_task(1) is None and iso.observe_gradients() is None
    assert iso.isolated_fraction() == 0.0 and iso.state_bytes() == 0


class HalfIsolation(ParameterIsolation):
    """A user method: isolate the first half of every tensor from the second task on."""

    def start_task(self, k):
        if k > 0:
            return self.set_mask([torch.arange(p.numel()).view(p.shape) < p.numel() // 2 for p in self.params])
        return None


def test_user_method_by_import_path():
    cfg = load_config(None, ["isolation.method=tests.test_isolation:HalfIsolation", "isolation.ratio=0.5"])
    w = torch.nn.Parameter(torch.ones(4))
    iso = make_isolation(cfg.isolation, [w])
    iso.start_task(1)
    assert iso.mask[0].tolist() == [True, True, False, False]
    with pytest.raises(ConfigError, match="not a subclass"):
        make_isolation(IsolationConfig(method="torch.nn:Linear"), [w])


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["isolation.method=epic"], "did you mean 'epi'"),
        (["isolation.method=epi", "isolation.ratio=0"], "isolation.ratio"),
        (["isolation.method=epi", "isolation.ratio=1.0"], "isolation.ratio"),
        (["isolation.method=epi", "isolation.refresh_every=0"], "isolation.refresh_every"),
        (["isolation.method=epi", "isolation.ema=1"], "isolation.ema"),
        (["isolation.method=static", "isolation.refresh_every=4"], "only epi refreshes"),
        (["isolation.ratio=0.2"], "not used by isolation method 'none'"),
        (["isolation.ratios=0.2"], "did you mean 'ratio'"),
    ],
)
def test_bad_isolation_settings_name_the_key(overrides, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")):
        load_config(None, overrides)


@pytest.mark.e2e
def test_epi_run_with_replay_logs_the_mask_to_mlflow(tmp_path):
    """A real run (Ray Train, 2 workers, MSSR replay) with EPI: masks refreshed on schedule, logged."""
    import json

    from mlflow import MlflowClient

    from tests.conftest import ROOT, run_cli

    proc = run_cli(
        "run",
        str(ROOT / "configs" / "tiny.yaml"),
        f"run.output_dir={tmp_path}",
        "run.name=epi",
        "isolation.method=epi",
        "isolation.refresh_every=3",
        "isolation.ratio=0.2",
        "--summary-json",
        str(tmp_path / "summary.json"),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    steps = json.loads((tmp_path / "epi" / "progress.json").read_text())["step"]
    iso = summary["isolation"]
    assert iso["method"] == "epi" and iso["fraction"] == pytest.approx(0.2, abs=0.01)
    assert iso["refreshes"] == steps // 3 and len(iso["mask_overlaps"]) == iso["refreshes"] - 1
    assert all(0.0 <= o <= 1.0 for o in iso["mask_overlaps"]) and iso["state_mb"] > 0
    assert summary["replay_samples"] > 0  # isolation and replay together
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(summary["mlflow_run_id"])
    overlaps = client.get_metric_history(run.info.run_id, "isolation/mask_overlap")
    assert [round(m.value, 4) for m in sorted(overlaps, key=lambda m: m.step)] == iso["mask_overlaps"]
    assert [m.step % 3 for m in overlaps] == [0] * len(overlaps)  # every refresh_every steps
    assert run.data.params["isolation.method"] == "epi"
