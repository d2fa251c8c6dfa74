"""Model loading (tiny model, LoRA and full), batching, per-sample loss, evaluation."""

import pytest
import torch
import torch.nn.functional as F

from mssr.config import ModelConfig, StreamConfig
from mssr.errors import ModelError
from mssr.evaluation import evaluate_examples
from mssr.losses import per_sample_loss
from mssr.models import load_model, load_trainable_state_dict, resolve_model_path, trainable_state_dict
from mssr.tasks import Example
from mssr.tokenize import IGNORE, PromptEncoder, collate, encoder_options


@pytest.fixture(scope="module")
def tiny_lora():
    return load_model(ModelConfig(name="tiny", lora={"r": 4, "alpha": 8}), seed=0)


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
