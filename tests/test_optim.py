"""Optimizers, LR schedules, config checks, gradient accumulation, gradient checkpointing, bf16 autocast."""

import contextlib
import io

import pytest
import torch

from mssr.config import ModelConfig, TrainConfig, load_config
from mssr.errors import ConfigError
from mssr.losses import per_sample_loss
from mssr.models import load_model
from mssr.optim import (
    OPTIMIZERS,
    autocast_context,
    backward_in_micro_batches,
    build_optimizer,
    lr_factor,
    resolve_warmup,
)


def _linear(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Linear(6, 3)


def _loss(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(8, 6, generator=g), torch.randn(8, 3, generator=g)
    return ((model(x) - y) ** 2).mean()


def _lrs(train_cfg, total_steps, steps):
    """The learning rate used by each of the first ``steps`` optimizer steps."""
    opt, sched = build_optimizer(_linear(), train_cfg, total_steps)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


# -- optimizers ---------------------------------------------------------------------


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_every_optimizer_steps_and_checkpoints(name):
    model = _linear()
    opt, sched = build_optimizer(model, TrainConfig(optimizer=name, weight_decay=0.01), total_steps=10)
    before = [p.detach().clone() for p in model.parameters()]
    _loss(model).backward()
    opt.step()
    sched.step()
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters())), name
    # its state survives the checkpoint format (torch.load with weights_only=True)
    buf = io.BytesIO()
    torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    opt2, sched2 = build_optimizer(_linear(), TrainConfig(optimizer=name, weight_decay=0.01), total_steps=10)
    opt2.load_state_dict(state["optimizer"])
    sched2.load_state_dict(state["scheduler"])
    assert sched2.last_epoch == 1


def test_registry_has_the_documented_optimizers():
    assert OPTIMIZERS.names() == ["adamw", "adam", "sgd", "rmsprop", "radam", "nadam", "adafactor", "lamb", "adabound"]


def test_default_is_adamw_and_settings_reach_the_optimizer():
    opt, _ = build_optimizer(_linear(), TrainConfig(), 10)
    assert isinstance(opt, torch.optim.AdamW) and opt.param_groups[0]["betas"] == (0.9, 0.999)
    opt, _ = build_optimizer(_linear(), TrainConfig(betas=(0.9, 0.95), lr=3e-4, weight_decay=0.1), 10)
    group = opt.param_groups[0]
    assert group["betas"] == (0.9, 0.95) and group["lr"] == 3e-4 and group["weight_decay"] == 0.1
    assert build_optimizer(_linear(), TrainConfig(optimizer="sgd"), 10)[0].param_groups[0]["momentum"] == 0.9
    assert build_optimizer(_linear(), TrainConfig(optimizer="rmsprop"), 10)[0].param_groups[0]["momentum"] == 0.0
    opt, _ = build_optimizer(_linear(), TrainConfig(optimizer="sgd", momentum=0.5), 10)
    assert opt.param_groups[0]["momentum"] == 0.5


def test_only_trainable_parameters_are_optimized():
    model = torch.nn.Sequential(torch.nn.Linear(6, 6), torch.nn.Linear(6, 3))
    model[0].requires_grad_(False)
    opt, _ = build_optimizer(model, TrainConfig(), 10)
    assert {id(p) for p in opt.param_groups[0]["params"]} == {id(p) for p in model[1].parameters()}


def test_user_optimizer_by_import_path():
    opt, _ = build_optimizer(_linear(), TrainConfig(optimizer="torch.optim:Adagrad", lr=0.05, weight_decay=0.01), 10)
    assert isinstance(opt, torch.optim.Adagrad)
    assert opt.param_groups[0]["lr"] == 0.05 and opt.param_groups[0]["weight_decay"] == 0.01


@pytest.mark.parametrize(
    "path,fragment",
    [
        ("no_such_pkg.optim:Fast", "cannot import module 'no_such_pkg.optim'"),
        ("torch.optim:NoSuchOptimizer", "has no attribute 'NoSuchOptimizer'"),
        ("torch.optim:LBFGS", "cannot be built as LBFGS(params, lr=..., weight_decay=...)"),
        ("torch.nn:Linear", "cannot be built as Linear"),
    ],
)
def test_bad_user_optimizer_names_the_key(path, fragment):
    with pytest.raises(ConfigError) as e:
        build_optimizer(_linear(), TrainConfig(optimizer=path), 10)
    assert str(e.value).startswith("train.optimizer: ") and fragment in str(e.value)


# -- schedules ----------------------------------------------------------------------


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine", "cosine_restarts"])
def test_every_schedule_builds_and_warms_up(schedule):
    lrs = _lrs(TrainConfig(lr=1.0, lr_schedule=schedule, warmup_steps=4, restart_every=10), 40, 6)
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lrs[4] <= 1.0


def test_warmup_ratio_is_a_fraction_of_all_steps():
    cfg = TrainConfig(lr=1.0, warmup_ratio=0.1)
    assert resolve_warmup(cfg, 50) == 5 and resolve_warmup(cfg, 51) == 6  # rounded up
    assert _lrs(cfg, 50, 7) == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 1.0])
    assert resolve_warmup(TrainConfig(warmup_steps=3), 50) == 3


def test_linear_and_cosine_decay_to_zero_at_the_end():
    total = 100
    for schedule in ("linear", "cosine"):
        cfg = TrainConfig(lr=1.0, lr_schedule=schedule, warmup_steps=10)
        lrs = _lrs(cfg, total, total + 1)
        assert lrs[9] == 1.0 and all(a >= b for a, b in zip(lrs[9:], lrs[10:]))  # monotone after warmup
        assert lrs[total - 1] < 0.02 and lrs[total] == pytest.approx(0.0, abs=1e-12)
    cos = _lrs(TrainConfig(lr=1.0, lr_schedule="cosine"), total, total)
    assert cos[50] == pytest.approx(0.5) and cos[-1] < 1e-3


def test_cosine_restarts_go_back_up_at_each_restart():
    cfg = TrainConfig(lr=1.0, lr_schedule="cosine_restarts", warmup_steps=2, restart_every=10)
    lrs = _lrs(cfg, 50, 43)
    assert lrs[:2] == pytest.approx([0.5, 1.0])
    for start in (2, 12, 22, 32):  # cycles start after the warmup
        assert lrs[start] == 1.0
        assert lrs[start + 5] == pytest.approx(0.5)
        assert all(a > b for a, b in zip(lrs[start : start + 9], lrs[start + 1 : start + 10]))
        assert lrs[start + 9] < 0.03 < lrs[start + 10] == 1.0  # down to ~0, then back up


def test_constant_stays_constant_and_lr_factor_is_documented():
    assert _lrs(TrainConfig(lr=0.5), 10, 10) == [0.5] * 10
    assert [lr_factor(s, "constant", 4, 10) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]


# -- bad settings --------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides,fragments",
    [
        (["train.optimizer=adamww"], ["train.optimizer", "unknown optimizer 'adamww'", "did you mean 'adamw'"]),
        (["train.optimizer=lamp"], ["train.optimizer", "did you mean 'lamb'"]),
        (["train.optimizer=sgd", "train.momentum=-0.5"], ["train.momentum"]),
        (["train.optimizer=sgd", "train.momentum=1.5"], ["train.momentum"]),
        (["train.momentum=0.9"], ["momentum: only sgd and rmsprop use it, not 'adamw'; set betas instead"]),
        (["train.optimizer=sgd", "train.betas=[0.9, 0.99]"], ["betas: only", "not 'sgd'"]),
        (["train.optimizer=my_pkg.optim:Fast", "train.momentum=0.9"], ["momentum: only"]),  # not passed to it
        (["train.betas=[0.9, 1.5]"], ["train.betas", "[0, 1)"]),
        (["train.betas=[0.9]"], ["train.betas"]),
        (["train.warmup_ratio=1.0"], ["train.warmup_ratio"]),
        (["train.warmup_ratio=-0.1"], ["train.warmup_ratio"]),
        (["train.warmup_steps=10", "train.warmup_ratio=0.1"], ["warmup_steps and warmup_ratio are both set"]),
        (["train.lr_schedule=cosine_restart"], ["train.lr_schedule"]),
        (["train.restart_every=0"], ["train.restart_every"]),
        (["train.grad_accum_steps=0"], ["train.grad_accum_steps"]),
        (["train.grad_accum_steps=5"], ["grad_accum_steps: 5 chunks", "batch_size // num_workers = 4"]),
        (["train.autocast=fp16"], ["train.autocast"]),
    ],
)
def test_bad_settings_raise_config_error_naming_the_key(overrides, fragments):
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    for fragment in fragments:
        assert fragment in str(e.value), str(e.value)


def test_good_settings_load():
    cfg = load_config(
        None,
        [
            "train.optimizer=sgd",
            "train.momentum=0.8",
            "train.lr_schedule=cosine_restarts",
            "train.warmup_ratio=0.05",
            "train.grad_accum_steps=4",
            "train.autocast=bf16",
            "train.gradient_checkpointing=true",
        ],
    )
    assert cfg.train.momentum == 0.8 and cfg.train.grad_accum_steps == 4 and cfg.train.autocast == "bf16"
    assert load_config(None, ["train.betas=[0.9, 0.95]"]).train.betas == (0.9, 0.95)
    # an import path is resolved when the optimizer is built, not when the config is read
    assert load_config(None, ["train.optimizer=my_pkg.optim:Fast"]).train.optimizer == "my_pkg.optim:Fast"


# -- gradient accumulation -----------------------------------------------------------


@pytest.mark.parametrize("n_rows,micro", [(8, 1), (8, 2), (8, 3), (7, 4), (3, 8)])
def test_micro_batches_give_the_full_batch_gradients(n_rows, micro):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n_rows, 6, generator=g), torch.randn(n_rows, 3, generator=g)

    def per_sample(model, a, b):
        return ((model(x[a:b]) - y[a:b]) ** 2).mean(dim=1)

    full = _linear()
    per_sample(full, 0, n_rows).mean().backward()
    chunked = _linear()
    syncs = []

    @contextlib.contextmanager
    def no_sync():
        syncs.append(1)
        yield

    losses = backward_in_micro_batches(lambda a, b: per_sample(chunked, a, b), n_rows, micro, no_sync=no_sync)
    assert losses.shape == (n_rows,) and not losses.requires_grad
    assert torch.allclose(losses, per_sample(full, 0, n_rows).detach(), atol=1e-6)
    for p, q in zip(full.parameters(), chunked.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6)
    assert len(syncs) == min(micro, n_rows) - 1  # every chunk but the last skips the all-reduce


# -- gradient checkpointing and autocast on the tiny model ---------------------------


def _tiny_batch(vocab):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab, (3, 16), generator=g)
    mask = torch.ones_like(ids)
    mask[0, :4] = 0  # some padding
    labels = ids.clone()
    labels[:, :8] = -100  # loss on the "answer" half only
    return ids, mask, labels


def _loss_and_grads(model):
    model.train()
    ids, mask, labels = _tiny_batch(model.config.vocab_size)
    loss = per_sample_loss(model(input_ids=ids, attention_mask=mask).logits, labels).mean()
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return loss.item(), grads


@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(finetune):
    cfg = ModelConfig(name="tiny", finetune=finetune, lora={"r": 4, "alpha": 8})
    plain, _ = load_model(cfg, seed=0)
    checkpointed, _ = load_model(cfg, seed=0, gradient_checkpointing=True)
    layer = (checkpointed.get_base_model() if finetune == "lora" else checkpointed).model.layers[0]
    calls = []
    # a pre-hook: torch stops a recomputation early, once it has every tensor the backward needs
    layer.self_attn.register_forward_pre_hook(lambda *_: calls.append(1))
    loss_a, grads_a = _loss_and_grads(plain)
    loss_b, grads_b = _loss_and_grads(checkpointed)
    assert len(calls) == 2  # the layer ran again in the backward pass: it really was checkpointed
    assert loss_a == pytest.approx(loss_b, rel=1e-5)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for n in grads_a:
        assert torch.allclose(grads_a[n], grads_b[n], rtol=1e-4, atol=1e-6), n
    assert any(g.abs().sum() > 0 for n, g in grads_b.items() if "lora_B" in n or finetune == "full")


def test_bf16_autocast_runs_a_forward_on_cpu():
    model, _ = load_model(ModelConfig(name="tiny", dtype="float32", lora={"r": 4, "alpha": 8}), seed=0)
    ids, mask, labels = _tiny_batch(model.config.vocab_size)
    with autocast_context("bf16", "cpu"):
        logits = model(input_ids=ids, attention_mask=mask).logits
    assert logits.dtype == torch.bfloat16
    loss = per_sample_loss(logits, labels).mean()
    loss.backward()
    assert torch.isfinite(loss) and loss.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay fp32
    with autocast_context("none", "cpu"):
        assert model(input_ids=ids, attention_mask=mask).logits.dtype == torch.float32


def test_auto_autocast_follows_the_hardware(monkeypatch):
    import mssr.optim as optim

    for has, expected in ((True, "bf16"), (False, "none")):
        monkeypatch.setattr(optim, "has_bf16_matmul", lambda device_type, has=has: has)
        assert optim.resolve_autocast("auto", "cuda") == expected
        assert optim.resolve_autocast("auto", "cpu") == "none"  # CPUs: fp32 unless asked, whatever their flags
        assert optim.resolve_autocast("none", "cpu") == "none" and optim.resolve_autocast("bf16", "cpu") == "bf16"
        # evaluation (no backward, batches of many rows): bf16 wherever the device has bf16 matmuls
        assert optim.resolve_autocast("auto", "cpu", "eval") == expected
        assert optim.resolve_autocast("none", "cpu", "eval") == "none"
    assert TrainConfig().autocast == "auto"
