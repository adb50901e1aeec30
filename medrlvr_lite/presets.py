"""GPU presets: read the GPU this process runs on and pick the settings that fit it.

A preset is a config file in ``configs/`` whose hardware fields (batch, generations per prompt, completion
length, LoRA rank, vLLM's memory share, ...) are sized for one class of card; each file says in comments what
it trades. ``auto`` chooses by the GPU's total memory:

| preset | file                                         | chosen by ``auto`` when            | cards                      |
|--------|----------------------------------------------|------------------------------------|----------------------------|
| t4     | ``configs/rlvr_qwen2.5-3b_medqa_t4.yaml``    | total memory <= 20 GiB             | T4, P100, V100-16GB (16 GB) |
| 24gb   | ``configs/rlvr_qwen2.5-3b_medqa.yaml``       | total memory <= 32 GiB             | RTX 3090 / 4090, A10, L4    |
| 80gb   | ``configs/rlvr_qwen2.5-3b_medqa_80gb.yaml``  | more                               | A100 40/80 GB, H100, L40S   |

No CUDA GPU (or ``model.backend: cpu``, or the ``tiny`` model) means no preset under ``auto``: the config is
used as it is. ``none`` never applies one.

On top of the preset, the precision rule of the GPU found: bf16 on Ampere or newer (compute capability >= 8),
fp16 on T4 / V100 / P100 (they have no bf16); flash-attn 2 only on Ampere or newer and when installed, SDPA
otherwise. Below compute capability 7.0 (P100) Triton, and so Unsloth and vLLM, do not run: the ``hf`` backend
is taken (when ``model.backend`` is ``auto``) and ``fast_inference`` is switched off.

Only the hardware fields (:data:`HARDWARE_FIELDS`) are copied from the preset file: the model, datasets,
learning rate, steps and output directories stay as the user's config says, and so do fields named in
``keep`` (the CLI passes the keys of its ``--set`` overrides, so an explicit override always wins).

    medrlvr-lite train rlvr --config configs/rlvr_qwen2.5-3b_medqa.yaml --preset auto
    medrlvr-lite study --config configs/smoke.yaml --preset none

    from medrlvr_lite.presets import apply_preset
    cfg, reason = apply_preset(cfg, "auto", keep=["rlvr.num_generations"], output_dir="runs/rlvr")

``apply_preset`` prints which preset it took and why, and with ``output_dir`` writes the same as
``preset.json`` there (requested and chosen preset, reason, GPU, precision, every field it changed).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medrlvr_lite.config import Config, ConfigError, load_config

logger = logging.getLogger(__name__)

PRESET_FILES: dict[str, str] = {
    "t4": "rlvr_qwen2.5-3b_medqa_t4.yaml",
    "24gb": "rlvr_qwen2.5-3b_medqa.yaml",
    "80gb": "rlvr_qwen2.5-3b_medqa_80gb.yaml",
}
PRESET_NAMES: tuple[str, ...] = ("auto", *PRESET_FILES, "none")
# Upper bounds (GiB of total GPU memory, as torch reports it) for ``auto``; above the last: 80gb.
AUTO_LIMITS_GIB: tuple[tuple[str, float], ...] = (("t4", 20.0), ("24gb", 32.0))
# What a preset sets: the fields that decide whether a run fits the card and how fast it goes.
HARDWARE_FIELDS: tuple[str, ...] = (
    "model.load_in_4bit",
    "model.dtype",
    "model.attn_implementation",
    "model.max_seq_length",
    "model.fast_inference",
    "model.gpu_memory_utilization",
    "model.gradient_checkpointing",
    "model.lora.r",
    "model.lora.alpha",
    "rlvr.num_generations",
    "rlvr.per_device_train_batch_size",
    "rlvr.gradient_accumulation_steps",
    "rlvr.max_completion_length",
    "rlvr.max_prompt_length",
    "rlvr.optim",
    "sft.per_device_train_batch_size",
    "sft.gradient_accumulation_steps",
    "sft.max_length",
    "sft.optim",
    "eval.batch_size",
)
CONFIGS_ENV = "MEDRLVR_CONFIGS_DIR"


class PresetError(ConfigError):
    """An unknown preset name or a preset file that cannot be found; the message says what to do."""


@dataclass
class PresetChoice:
    """What ``apply_preset`` did: ``preset`` is the one taken (t4, 24gb, 80gb, or none)."""

    requested: str
    preset: str
    reason: str
    file: str | None = None
    gpu: dict = field(default_factory=dict)
    precision: dict = field(default_factory=dict)
    changes: dict[str, dict[str, Any]] = field(default_factory=dict)
    kept: list[str] = field(default_factory=list)  # preset fields left as the user set them (``keep``)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["at"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        return out

    def write(self, output_dir: str | Path) -> Path:
        """Write ``preset.json`` in ``output_dir`` (created if needed)."""
        path = Path(output_dir) / "preset.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path


def configs_dir() -> Path:
    """Where the preset files are: ``$MEDRLVR_CONFIGS_DIR``, else the checkout's ``configs/`` (next to the
    package in a clone / editable install), else ``./configs``."""
    candidates = []
    if os.environ.get(CONFIGS_ENV):
        candidates.append(Path(os.environ[CONFIGS_ENV]))
    candidates += [Path(__file__).resolve().parents[1] / "configs", Path.cwd() / "configs"]
    for c in candidates:
        if (c / PRESET_FILES["24gb"]).is_file() or (c / PRESET_FILES["t4"]).is_file():
            return c
    raise PresetError(
        "the preset configs were not found (looked in: "
        + ", ".join(str(c) for c in candidates)
        + "); run from a clone of the repository (git clone, then pip install -e .) or set "
        f"{CONFIGS_ENV} to its configs/ folder, or use --preset none"
    )


def preset_path(name: str) -> Path:
    """The YAML file of preset ``name`` (t4, 24gb or 80gb)."""
    if name not in PRESET_FILES:
        raise PresetError(f"unknown preset {name!r}; choose one of {', '.join(PRESET_NAMES)}")
    path = configs_dir() / PRESET_FILES[name]
    if not path.is_file():
        raise PresetError(f"preset {name!r}: {path} is missing; use another preset or --preset none")
    return path


def _short(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return path


def _gpu(gpu: dict | None) -> dict:
    if gpu is not None:
        return gpu
    from medrlvr_lite.models import gpu_info

    return gpu_info()


def _cc(gpu: dict) -> str:
    return ".".join(str(x) for x in gpu.get("compute_capability", ["?"]))


def _describe(gpu: dict) -> str:
    return f"{gpu.get('name', 'GPU')} ({gpu.get('total_memory_gib', '?')} GiB, compute capability {_cc(gpu)})"


def choose_preset(name: str = "auto", cfg: Config | None = None, gpu: dict | None = None) -> tuple[str, str]:
    """``(preset, reason)``: the preset ``name`` resolves to here (t4, 24gb, 80gb or none) and why, in words."""
    name = (name or "none").lower()
    if name not in PRESET_NAMES:
        raise PresetError(f"unknown preset {name!r}; choose one of {', '.join(PRESET_NAMES)}")
    if name == "none":
        return "none", "--preset none: the config's settings are used as they are"
    if name != "auto":
        gpu = _gpu(gpu)
        where = _describe(gpu) if gpu.get("available") else "no CUDA GPU here"
        return name, f"--preset {name} requested ({where})"
    if cfg is not None and cfg.model.backend == "cpu":
        return "none", "auto: model.backend is cpu, so no GPU preset applies"
    if cfg is not None:
        from medrlvr_lite.models import is_tiny

        if is_tiny(cfg.model.name_or_path):
            return "none", "auto: the tiny test model needs no GPU preset"
    gpu = _gpu(gpu)
    if not gpu.get("available"):
        return "none", "auto: no CUDA GPU found, so no GPU preset applies (the config's settings are used)"
    mem = float(gpu.get("total_memory_gib", 0.0))
    name = gpu.get("name", "the GPU")
    for preset, limit in AUTO_LIMITS_GIB:
        if mem <= limit:
            return preset, f"auto: {name} has {mem:g} GiB <= {limit:g} GiB (compute capability {_cc(gpu)})"
    top = AUTO_LIMITS_GIB[-1][1]
    return "80gb", f"auto: {name} has {mem:g} GiB > {top:g} GiB (compute capability {_cc(gpu)})"


def precision_for(gpu: dict) -> dict:
    """The precision rule: dtype, attention kernel and (below Volta) backend for the GPU ``gpu``."""
    cc = tuple(gpu.get("compute_capability", (0, 0)))
    ccs = ".".join(str(x) for x in cc)
    if cc >= (8, 0):
        dtype, why = "bfloat16", f"bf16: compute capability {ccs} >= 8.0 (Ampere or newer)"
    else:
        dtype, why = "float16", f"fp16: compute capability {ccs} < 8.0 has no bf16 (T4 / V100 / P100)"
    if cc >= (8, 0) and gpu.get("flash_attn_installed"):
        attn, attn_why = "flash_attention_2", "flash-attn 2 installed on Ampere or newer"
    elif cc >= (8, 0):
        attn, attn_why = "sdpa", "SDPA (flash-attn not installed)"
    else:
        attn, attn_why = "sdpa", "SDPA (no flash-attn 2 before Ampere)"
    out = {"dtype": dtype, "attn_implementation": attn, "why": f"{why}; {attn_why}"}
    if cc < (7, 0):
        out["backend"] = "hf"
        out["fast_inference"] = False
        out["why"] += "; compute capability < 7.0: no Triton, so no Unsloth / vLLM (hf backend)"
    return out


def _get(cfg: Config, dotted: str) -> Any:
    node: Any = cfg
    for key in dotted.split("."):
        node = getattr(node, key)
    return node


def _set(cfg: Config, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node: Any = cfg
    for key in parents:
        node = getattr(node, key)
    setattr(node, last, value)


def _is_kept(dotted: str, keep: Iterable[str]) -> bool:
    return any(dotted == k or dotted.startswith(k + ".") for k in keep)


def override_keys(overrides: Iterable[str] | None) -> list[str]:
    """The dotted keys of ``--set key=value`` overrides (what a preset must leave alone)."""
    return [o.split("=", 1)[0].strip() for o in overrides or [] if "=" in o]


def resolve_preset(
    cfg: Config, name: str = "auto", *, keep: Iterable[str] | None = None, gpu: dict | None = None
) -> tuple[Config, PresetChoice]:
    """A copy of ``cfg`` with the preset's hardware fields and the GPU's precision rule applied, and what was done."""
    keep = list(keep or [])
    requested = (name or "none").lower()
    preset, reason = choose_preset(requested, cfg, gpu)
    out = cfg.model_copy(deep=True)
    choice = PresetChoice(requested=requested, preset=preset, reason=reason)
    if preset == "none":
        return out, choice
    path = preset_path(preset)
    choice.file = str(path)
    source = load_config(path)

    def put(dotted: str, value: Any, *, force: bool = False) -> None:
        old = _get(out, dotted)
        if _is_kept(dotted, keep) and not force:
            if old != value:
                choice.kept.append(dotted)
            return
        if old != value:
            _set(out, dotted, value)
            choice.changes[dotted] = {"from": old, "to": value}

    for dotted in HARDWARE_FIELDS:
        put(dotted, _get(source, dotted))
    gpu = _gpu(gpu)
    choice.gpu = dict(gpu)
    if gpu.get("available"):
        rule = precision_for(gpu)
        choice.precision = rule
        put("model.dtype", rule["dtype"])
        put("model.attn_implementation", rule["attn_implementation"])
        if "backend" in rule:  # below Volta: no Triton, so neither Unsloth nor vLLM
            if out.model.backend == "auto":  # "auto" asks us to choose, even when given explicitly
                put("model.backend", rule["backend"], force=True)
            elif out.model.backend == "unsloth":
                put("model.backend", rule["backend"])
            put("model.fast_inference", rule["fast_inference"])
    else:
        choice.precision = {"why": "no CUDA GPU here: dtype and attention stay as the preset file says"}
    return out, choice


def apply_preset(
    cfg: Config,
    name: str = "auto",
    *,
    keep: Iterable[str] | None = None,
    output_dir: str | Path | None = None,
    gpu: dict | None = None,
    console: Any = None,
) -> tuple[Config, str]:
    """Apply preset ``name`` (auto, t4, 24gb, 80gb, none) to ``cfg``; returns ``(new_cfg, reason)``.

    Prints which preset was taken and why; with ``output_dir`` also writes ``<output_dir>/preset.json``.
    Fields in ``keep`` (dotted, e.g. ``rlvr.num_generations`` or a whole section ``model.lora``) are untouched.
    """
    new, choice = resolve_preset(cfg, name, keep=keep, gpu=gpu)
    line = (
        f"preset: {choice.preset}"
        + (f" ({_short(choice.file)})" if choice.file else "")
        + f": {choice.reason}"
    )
    if choice.precision.get("why") and choice.preset != "none":
        line += f"; {choice.precision['why']}"
    lines = [line]
    if choice.changes:
        lines.append("  set: " + ", ".join(f"{k}={v['to']}" for k, v in choice.changes.items()))
    if choice.kept and choice.preset != "none":
        lines.append("  kept (from --set): " + ", ".join(choice.kept))
    r = new.rlvr
    if (r.per_device_train_batch_size * r.gradient_accumulation_steps) % r.num_generations:
        lines.append(
            f"  warning: rlvr.per_device_train_batch_size x gradient_accumulation_steps = "
            f"{r.per_device_train_batch_size * r.gradient_accumulation_steps} completions is not a multiple of "
            f"rlvr.num_generations = {r.num_generations}; GRPO needs whole groups: adjust your --set values"
        )
    if console is None:
        from rich.console import Console

        console = Console(stderr=True, soft_wrap=True)
    for text in lines:
        console.print(text, markup=False, highlight=False)
        logger.info(text)
    if output_dir is not None:
        choice.write(output_dir)
    return new, line
