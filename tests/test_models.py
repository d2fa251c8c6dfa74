"""Model loading (tiny model, LoRA and full), batching, per-sample loss, evaluation."""

import pytest
import torch
import torch.nn.functional as F

from mssr import optim
from mssr.config import ModelConfig, StreamConfig
from mssr.errors import ModelError
from mssr.evaluation import evaluate_examples
from mssr.losses import answer_logits, answer_reproduced, per_sample_loss
from mssr.models import (
    load_model,
    load_trainable_state_dict,
    resolve_dtype,
    resolve_model_path,
    trainable_state_dict,
)
from mssr.tasks import Example
from mssr.tokenize import IGNORE, PromptEncoder, collate, encoder_options


@pytest.fixture(scope="module")
def tiny_lora():
    return load_model(ModelConfig(name="tiny", dtype="float32", lora={"r": 4, "alpha": 8}), seed=0)


def test_lora_trains_only_the_adapter(tiny_lora):
    model, _ = tiny_lora
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert set(trainable_state_dict(model)) and all("lora_" in k for k in trainable_state_dict(model))


def test_full_finetuning_trains_everything():
    model, _ = load_model(ModelConfig(name="tiny", finetune="full"), seed=0)
    assert all(p.requires_grad for p in model.parameters())


def test_same_seed_same_initialisation():
    a, _ = load_model(ModelConfig(name="tiny"), seed=3)
    b, _ = load_model(ModelConfig(name="tiny"), seed=3)
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_an_incomplete_cached_model_folder_is_replaced(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    from mssr.models import DEFAULT_MODEL, prepare_default_model, prepare_tiny_model

    tokenizer_source = prepare_default_model()  # the real cache's converted model, for the tokenizer
    monkeypatch.setenv("MSSR_CACHE", str(tmp_path))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / DEFAULT_MODEL).symlink_to(tokenizer_source)
    broken = tmp_path / "models" / "tiny-seed3"
    broken.mkdir()
    (broken / "tokenizer.json").write_text("{}")  # a folder without config.json or weights
    path = prepare_tiny_model(3)
    assert path == broken and (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    assert AutoModelForCausalLM.from_pretrained(path).config.num_hidden_layers == 2


def test_bad_target_module_and_missing_model():
    with pytest.raises(ModelError, match="target_modules"):
        load_model(ModelConfig(name="tiny", lora={"target_modules": ["no_such_proj"]}))
    with pytest.raises(ModelError, match="neither a local folder nor a hub id"):
        resolve_model_path("./missing/model/dir")


def test_collate_masks_prompt_and_padding():
    b = collate([[1, 2, 3, 4], [5, 6]], [2, 1], pad_id=0)
    assert b["input_ids"].tolist() == [[1, 2, 3, 4], [5, 6, 0, 0]]
    assert b["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert b["labels"].tolist() == [[IGNORE, IGNORE, 3, 4], [IGNORE, 6, IGNORE, IGNORE]]


def test_per_sample_loss_matches_separate_forward_passes(tiny_lora):
    model, tok = tiny_lora
    enc = PromptEncoder(tok, **encoder_options(StreamConfig()))
    rows = enc.encode_many(["2 + 2 =", "Name a colour, please"], ["4", "blue"])
    batch = collate(rows["input_ids"], rows["prompt_len"], tok.pad_token_id)
    with torch.no_grad():
        together = per_sample_loss(
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, batch["labels"]
        )
        for i, (ids, plen) in enumerate(zip(rows["input_ids"], rows["prompt_len"])):
            logits = model(input_ids=torch.tensor([ids])).logits[0, :-1]
            alone = F.cross_entropy(logits[plen - 1 :], torch.tensor(ids[plen:]))
            assert together[i].item() == pytest.approx(alone.item(), rel=1e-4)


def test_bf16_step_runs():
    model, tok = load_model(ModelConfig(name="tiny", dtype="bfloat16"), seed=0)
    batch = collate([[1, 2, 3, 4]], [1], tok.pad_token_id)
    loss = per_sample_loss(model(input_ids=batch["input_ids"]).logits, batch["labels"]).mean()
    loss.backward()
    assert torch.isfinite(loss) and any(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_adapter_state_roundtrip(tiny_lora):
    model, _ = tiny_lora
    state = {k: v + 1 for k, v in trainable_state_dict(model).items()}
    load_trainable_state_dict(model, state)
    assert all(torch.equal(trainable_state_dict(model)[k], v) for k, v in state.items())


def test_evaluation_scores_every_example_and_counts_tokens(tiny_lora):
    model, tok = tiny_lora
    enc = PromptEncoder(tok, **encoder_options(StreamConfig()))
    examples = [Example("1 + 1 =", "2"), Example("Say yes", "yes"), Example("3 + 3 =", "6")]
    for mode in ("forced", "generate"):
        result = evaluate_examples(model, enc, examples, "exact_match", mode, max_new_tokens=3, batch_size=2)
        assert len(result.scores) == 3 and all(s in (0.0, 1.0) for s in result.scores)
        assert len(result.losses) == 3 and all(x > 0 for x in result.losses)
        assert result.tokens > sum(len(enc.prompt_ids(e.prompt)) for e in examples)


def test_answer_logits_give_the_losses_and_gradients_of_the_full_pass(tiny_lora):
    """Rows of different prompt lengths: the logits from the first answer position on give the
    same per-row loss, exact match and adapter gradients as the logits of every position."""
    model, tok = tiny_lora
    enc = PromptEncoder(tok, **encoder_options(StreamConfig()))
    rows = enc.encode_many(["2 + 2 =", "Name a colour, please, any colour at all"], ["4", "blue"])
    batch = collate(rows["input_ids"], rows["prompt_len"], tok.pad_token_id)
    results = []
    for sliced in (False, True):
        model.zero_grad()
        if sliced:
            logits, labels = answer_logits(model, batch, rows["prompt_len"])
            assert logits.shape[1] < batch["input_ids"].shape[1]  # the prompt positions were left out
        else:
            logits, labels = model(**{k: batch[k] for k in ("input_ids", "attention_mask")}).logits, batch["labels"]
        losses = per_sample_loss(logits, labels)
        losses.mean().backward()
        grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
        results.append((losses.detach(), answer_reproduced(logits, labels), grads))
    (full_loss, full_hit, full_grads), (cut_loss, cut_hit, cut_grads) = results
    torch.testing.assert_close(cut_loss, full_loss, rtol=1e-5, atol=1e-6)
    assert torch.equal(cut_hit, full_hit)
    for a, b in zip(cut_grads, full_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_the_vocabulary_head_gets_a_contiguous_input(tiny_lora):
    model, tok = tiny_lora
    seen = []
    handle = model.get_output_embeddings().register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    try:
        batch = collate([[1, 2, 3, 4, 5], [6, 7, 8]], [3, 2], tok.pad_token_id)  # answers from position 2 on
        answer_logits(model, batch, [3, 2])
    finally:
        handle.remove()
    assert seen and seen[0].shape[1] == 4 and seen[0].is_contiguous()


@pytest.mark.parametrize(
    "dtype, finetune, bf16_matmul, expected",
    [
        ("auto", "lora", True, "bfloat16"),  # a frozen base on a bf16-capable device
        ("auto", "lora", False, "float32"),
        ("auto", "full", True, "float32"),  # master weights stay fp32
        ("float32", "lora", True, "float32"),
        ("bfloat16", "full", False, "bfloat16"),
    ],
)
def test_model_dtype_auto(monkeypatch, dtype, finetune, bf16_matmul, expected):
    monkeypatch.setattr(optim, "has_bf16_matmul", lambda device_type: bf16_matmul)
    assert resolve_dtype(ModelConfig(name="tiny", dtype=dtype, finetune=finetune), "cpu") == expected
    if expected == "bfloat16" and finetune == "lora":  # the base in bf16, the adapters fp32 for the optimizer
        model, _ = load_model(ModelConfig(name="tiny", dtype=dtype, finetune=finetune), seed=0)
        dtypes = {n: p.dtype for n, p in model.named_parameters()}
        assert {d for n, d in dtypes.items() if "lora_" in n} == {torch.float32}
        assert {d for n, d in dtypes.items() if "lora_" not in n} == {torch.bfloat16}
