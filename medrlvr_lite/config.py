"""Typed configuration for every stage of the study, loaded from YAML and overridable from the CLI.

One schema, a section per phase (``model``, ``rlvr``, ``sft``, ``eval``, ``study``), so the same YAML file
drives ``train rlvr``, ``train sft``, ``eval`` and ``study``. Every field carries its help text.

    from medrlvr_lite.config import load_config
    cfg = load_config("configs/smoke.yaml", overrides=["rlvr.learning_rate=1e-5", "model.lora.r=8"])

Overrides are ``dotted.path=value`` strings; the value is parsed as YAML (``1e-5``, ``true``, ``[a, b]``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class ConfigError(ValueError):
    """A config file or override the user has to fix; the message names the file and field."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataOptions(_Section):
    """How records are read from any dataset spec (see ``medrlvr_lite.data``)."""

    add_none_of_the_above: bool = Field(
        False, description="Append a final 'None of the above' option (the paper's MedQA variant)."
    )
    shuffle_options_seed: int | None = Field(
        None,
        description="Shuffle each question's options with this seed (gold letter follows). None: keep order.",
    )
    skip_invalid: bool = Field(
        False, description="Skip malformed rows (and report how many) instead of failing."
    )
    limit: int | None = Field(
        None, description="Read at most this many records (after filtering). None: all."
    )


class LoraSpec(_Section):
    """LoRA adapter. Defaults follow 'LoRA without regret' (Schulman et al., 2025): all linear layers,
    small ranks suffice for RL, learning rate about 10x that of full fine-tuning."""

    r: int = Field(32, description="LoRA rank.")
    alpha: int = Field(64, description="LoRA alpha (scaling = alpha / r).")
    dropout: float = Field(
        0.0, description="LoRA dropout (0 for RL: dropout makes old/new log-probs disagree)."
    )
    target_modules: str | list[str] = Field(
        "all-linear", description="'all-linear' or a list of module names (q_proj, k_proj, ...)."
    )


class ModelConfig(_Section):
    name_or_path: str = Field(
        "Qwen/Qwen2.5-3B",
        description="Hub id or local path of the base model; 'tiny' builds a small random Qwen2 with no download.",
    )
    backend: Literal["auto", "unsloth", "hf", "cpu"] = Field(
        "auto",
        description="auto: unsloth on CUDA if installed, else hf (transformers + bitsandbytes) on CUDA, else cpu.",
    )
    load_in_4bit: bool = Field(True, description="NF4 4-bit base weights (QLoRA) on GPU backends.")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto",
        description="Compute dtype. auto: bf16 on Ampere+, fp16 on older GPUs (T4, V100), fp32 on CPU.",
    )
    max_seq_length: int = Field(2048, description="Longest prompt + completion the model is set up for.")
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"] = Field(
        "auto", description="Attention kernel; auto: flash_attention_2 when installed on Ampere+, else sdpa."
    )
    fast_inference: bool = Field(
        True,
        description="unsloth backend: generate with vLLM through Unsloth's fast_inference when vLLM exists.",
    )
    gpu_memory_utilization: float = Field(
        0.5, description="Share of GPU memory vLLM may take (fast_inference)."
    )
    gradient_checkpointing: bool = Field(True, description="Gradient checkpointing (Unsloth's on unsloth).")
    chat_template: bool = Field(
        False,
        description="Render prompts with the tokenizer's chat template (instruct models). False: plain text.",
    )
    lora: LoraSpec = Field(default_factory=LoraSpec, description="The LoRA adapter trained on top.")
    tiny_hidden_size: int = Field(64, description="'tiny' model: hidden size.")
    tiny_layers: int = Field(2, description="'tiny' model: number of layers.")
    tiny_vocab_size: int = Field(
        512, description="'tiny' model: BPE vocabulary trained on the bundled questions."
    )
    tiny_initializer_range: float = Field(
        0.3, description="'tiny' model: init std; large values give peaked, learnable policies."
    )
    seed: int = Field(0, description="Seed for the tiny model's random weights.")


class RewardConfig(_Section):
    mode: Literal["paper", "strict"] = Field(
        "paper", description="paper: text before <think> allowed (flagged); strict: rejected as bad format."
    )
    correct: float = Field(1.0, description="Reward for a well-formed completion with the gold letter.")
    wrong: float = Field(0.0, description="Reward for a well-formed completion with a wrong or no letter.")
    format_error: float = Field(-1.0, description="Reward for a completion whose format is invalid.")


class RLVRConfig(_Section):
    output_dir: str = Field("runs/rlvr", description="Where checkpoints, adapter and logs go.")
    dataset: str = Field("medqa:train", description="Training data spec (see `medrlvr-lite data list`).")
    prompt: Literal["r1", "cot", "direct"] = Field("r1", description="Prompt template (r1: the paper's).")
    reward: RewardConfig = Field(default_factory=RewardConfig, description="Verifier reward settings.")
    num_generations: int = Field(8, description="Completions sampled per prompt (the GRPO group).")
    per_device_train_batch_size: int = Field(
        8,
        description="Completions (not prompts) per device per micro-batch; a multiple of num_generations / accum.",
    )
    gradient_accumulation_steps: int = Field(4, description="Micro-batches per optimizer step.")
    max_completion_length: int = Field(512, description="Longest completion in tokens.")
    max_prompt_length: int | None = Field(
        768, description="Prompts longer than this many tokens are dropped from training (None: keep all)."
    )
    temperature: float = Field(1.0, description="Sampling temperature for rollouts.")
    top_p: float = Field(1.0, description="Nucleus sampling for rollouts.")
    beta: float = Field(
        0.0, description="KL coefficient against the reference model (0: no KL, no ref model)."
    )
    epsilon: float = Field(0.2, description="Lower clip epsilon of the policy ratio.")
    epsilon_high: float | None = Field(
        0.28, description="Upper clip epsilon (DAPO clip-higher); None: = epsilon."
    )
    loss_type: Literal["grpo", "dr_grpo", "dapo", "bnpo"] = Field(
        "dapo", description="GRPO loss normalisation."
    )
    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group", description="Advantage scaling: by group std (GRPO), batch std, or none (Dr. GRPO)."
    )
    learning_rate: float = Field(5e-6, description="Peak learning rate (LoRA: ~10x full fine-tuning).")
    lr_scheduler_type: str = Field("constant_with_warmup", description="transformers scheduler name.")
    warmup_ratio: float = Field(0.0, description="Share of steps spent warming up.")
    weight_decay: float = Field(0.0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, description="Gradient clipping.")
    optim: str = Field("adamw_torch", description="Optimizer name (adamw_8bit saves memory on GPU).")
    num_train_epochs: float = Field(
        1.0, description="Epochs over the training prompts (ignored if max_steps > 0)."
    )
    max_steps: int = Field(-1, description="Optimizer steps; -1: from num_train_epochs.")
    seed: int = Field(42, description="Seed for sampling, shuffling and LoRA init.")
    logging_steps: int = Field(1, description="Log metrics every N steps.")
    save_steps: int = Field(25, description="Checkpoint every N steps.")
    save_total_limit: int | None = Field(3, description="Keep this many checkpoints.")
    log_completions_every: int = Field(
        1, description="Write sampled completions to completions.jsonl every N steps."
    )
    log_completions_n: int = Field(16, description="How many completions per logged step.")
    report_to: Literal["none", "tensorboard", "wandb", "trackio"] = Field(
        "none", description="Experiment tracker."
    )
    format_warmup_steps: int = Field(
        0,
        description="SFT steps that teach the tag format before GRPO (tiny model only; a base 3B needs none).",
    )
    format_warmup_lr: float = Field(3e-3, description="Learning rate of the format warm-up.")
    max_train_prompts: int | None = Field(
        None,
        description="Train on the first N questions of rlvr.dataset only (None: all); the smoke run uses a few.",
        ge=1,
    )


class SFTStageConfig(_Section):
    output_dir: str = Field("runs/sft", description="Where checkpoints, adapter and logs go.")
    dataset: str = Field("medqa:train", description="Training data spec.")
    dev_dataset: str | None = Field("medqa:dev", description="Dev split to pick the best of --lr-grid.")
    prompt: Literal["direct", "r1", "cot"] = Field("direct", description="Prompt the model is trained with.")
    target: Literal["answer", "letter"] = Field(
        "answer",
        description="answer: 'B. option text' (the paper: answers only, no reasoning); letter: the letter alone.",
    )
    learning_rate: float = Field(5e-5, description="Learning rate (LoRA).")
    lr_grid: list[float] | None = Field(
        None, description="Train once per learning rate and keep the best on dev (paper: 1e-5, 5e-6, 1e-6)."
    )
    num_train_epochs: float = Field(3.0, description="Epochs (paper: 10, full fine-tuning).")
    max_steps: int = Field(-1, description="Optimizer steps; -1: from num_train_epochs.")
    per_device_train_batch_size: int = Field(8, description="Examples per device per micro-batch.")
    gradient_accumulation_steps: int = Field(2, description="Micro-batches per optimizer step.")
    max_length: int = Field(1024, description="Longest prompt + target in tokens.")
    lr_scheduler_type: str = Field("cosine", description="transformers scheduler name.")
    warmup_ratio: float = Field(0.03, description="Share of steps spent warming up.")
    weight_decay: float = Field(0.0, description="AdamW weight decay.")
    optim: str = Field("adamw_torch", description="Optimizer name.")
    seed: int = Field(42, description="Seed.")
    logging_steps: int = Field(5, description="Log every N steps.")
    save_steps: int = Field(200, description="Checkpoint every N steps.")
    save_total_limit: int | None = Field(2, description="Keep this many checkpoints.")
    dev_limit: int | None = Field(300, description="Dev questions used to compare grid points (None: all).")
    report_to: Literal["none", "tensorboard", "wandb", "trackio"] = Field(
        "none", description="Experiment tracker."
    )


class EvalStageConfig(_Section):
    output_dir: str = Field("runs/eval", description="Where predictions, results and the table go.")
    datasets: list[str] = Field(
        default_factory=lambda: ["medqa:test", "mmlu_pro:health"], description="Dataset specs to evaluate on."
    )
    prompt: Literal["r1", "cot", "direct"] = Field("r1", description="Prompt template.")
    max_new_tokens: int = Field(
        1024, description="Longest completion (direct prompts use direct_max_new_tokens)."
    )
    direct_max_new_tokens: int = Field(16, description="Longest completion for the direct-answer prompt.")
    temperature: float = Field(0.0, description="0: greedy decoding; > 0: sampling.")
    top_p: float = Field(1.0, description="Nucleus sampling (temperature > 0).")
    num_samples: int = Field(1, description="Samples per question (sampling); accuracy averages over them.")
    seed: int = Field(0, description="Sampling seed.")
    batch_size: int = Field(32, description="Prompts per generation batch (HF generate).")
    bootstrap_resamples: int = Field(1000, description="Bootstrap resamples for the SD (the paper: 1000).")
    reward: RewardConfig = Field(default_factory=RewardConfig, description="Verifier settings used to score.")


class StudyConfig(_Section):
    output_dir: str = Field("runs/study", description="Study directory: phases, report, results.")
    in_distribution: str = Field("medqa:test", description="In-distribution evaluation set.")
    out_of_distribution: list[str] = Field(
        default_factory=lambda: ["mmlu_pro:health"],
        description="Out-of-distribution sets (medmcqa:dev and pubmedqa:test selectable).",
    )
    eval_limit: int | None = Field(None, description="Evaluate on at most this many questions per set.")


class Config(_Section):
    """The whole study: one file, a section per phase."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataOptions = Field(default_factory=DataOptions)
    rlvr: RLVRConfig = Field(default_factory=RLVRConfig)
    sft: SFTStageConfig = Field(default_factory=SFTStageConfig)
    eval: EvalStageConfig = Field(default_factory=EvalStageConfig)
    study: StudyConfig = Field(default_factory=StudyConfig)


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    node = tree
    keys = dotted.split(".")
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted!r}: {key!r} is not a section")
        node = child
    node[keys[-1]] = value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read ``path`` (YAML; None: all defaults), apply ``key.sub=value`` overrides, validate."""
    tree: dict = {}
    source = "defaults"
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            tree = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
        if not isinstance(tree, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of sections")
        source = str(p)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key.path=value")
        key, raw = item.split("=", 1)
        _set_dotted(tree, key.strip(), yaml.safe_load(raw) if raw.strip() else None)
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        lines = [f"{source}: invalid config"]
        for err in exc.errors():
            loc = ".".join(str(x) for x in err["loc"])
            lines.append(f"  {loc}: {err['msg']}")
        raise ConfigError("\n".join(lines)) from None


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the resolved config (what actually ran) as YAML."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
