"""Export: merge a trained LoRA adapter, save it with a model card, and publish it to the Hugging Face Hub.

    medrlvr-lite export runs/rlvr --out exports/rlvr-lora                      # the adapter alone (default)
    medrlvr-lite export runs/rlvr --out exports/rlvr-16bit --merge 16bit       # merged into the 16-bit base
    medrlvr-lite export runs/rlvr --out exports/rlvr-4bit --merge 4bit --force # merged, then NF4 (lossy; CUDA)
    medrlvr-lite export runs/rlvr --out exports/rlvr-16bit --merge 16bit --push-to-hub me/medrlvr-3b --private
    medrlvr-lite export runs/rlvr --out exports/rlvr-gguf --gguf q4_k_m         # GGUF through Unsloth (CUDA)

    from medrlvr_lite.export import export_run
    result = export_run("runs/rlvr", "exports/rlvr-16bit", merge="16bit")

The input is a training run directory (``adapter/`` + ``config.yaml``, as ``train rlvr`` / ``train sft`` and the
study write them) or an adapter directory itself (``adapter_config.json``; its base model comes from the
``config.yaml`` beside it, else from ``base_model_name_or_path``). The ``tiny`` base is rebuilt from the run's
config (it is not on the Hub).

Merge modes:

- ``lora``: the adapter alone (``adapter_model.safetensors``, ``adapter_config.json``) and the tokenizer;
- ``16bit``: ``PeftModel.merge_and_unload()`` into the base in 16-bit (bf16, or fp16 when the run trained in
  fp16; fp32 for the tiny model). An adapter trained on a 4-bit (QLoRA) base is merged into the *16-bit* base
  weights reloaded from the Hub, never into dequantised 4-bit weights, as Unsloth's ``merged_16bit`` does;
- ``4bit``: merged in 16-bit as above, then quantised to NF4 with bitsandbytes (CUDA). Merging into 4-bit weights
  loses accuracy, so it needs ``--force``.

Every export writes ``README.md`` (a model card: base model, method, data, the prompt the model expects, the
reward, the training settings, the study's evaluation table when one lies beside the run, usage),
``medrlvr_config.yaml`` (the run's resolved config) and ``export.json`` (what was done). Weights are safetensors
only; nothing is read with pickle (an adapter saved as ``.bin`` is refused). ``--push-to-hub`` uploads the folder
with ``huggingface_hub``, which finds the token itself (``HF_TOKEN`` or ``hf auth login``); the token is never
printed or written.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.markup import escape

from medrlvr_lite.config import Config, ConfigError, load_config

MERGE_MODES: tuple[str, ...] = ("lora", "16bit", "4bit")
ADAPTER_FILES: tuple[str, ...] = ("adapter_model.safetensors", "adapter_config.json")
TOKENIZER_FILES: tuple[str, ...] = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
)
PICKLE_SUFFIXES: tuple[str, ...] = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
CONFIG_COPY = "medrlvr_config.yaml"
EXPORT_RECORD = "export.json"
GPU_EXTRA = 'pip install "medrlvr-lite[gpu]"'
LOGIN_HINT = (
    "log in with `hf auth login` (older huggingface_hub: `huggingface-cli login`) or set the HF_TOKEN "
    "environment variable to a token with write access"
)
# Pre-quantised checkpoints Unsloth publishes beside the 16-bit ones (``unsloth/Qwen2.5-3B-bnb-4bit`` is the
# 4-bit copy of ``unsloth/Qwen2.5-3B``).
_QUANTISED_SUFFIXES: tuple[str, ...] = ("-unsloth-bnb-4bit", "-bnb-4bit", "-bnb-8bit")
_DATASET_NAMES: dict[str, str] = {
    "medqa": "MedQA-USMLE (Jin et al., 2021)",
    "medqa4": "MedQA-USMLE, 4 options (Jin et al., 2021)",
    "medqa5": "MedQA-USMLE, 5 options (Jin et al., 2021)",
    "mmlu_pro": "MMLU-Pro (Wang et al., 2024)",
    "medmcqa": "MedMCQA (Pal et al., 2022)",
    "pubmedqa": "PubMedQA (Jin et al., 2019)",
    "smoke": "the smoke question set bundled with medrlvr-lite (a few dozen questions written for tests)",
    "jsonl": "a user-supplied JSONL file",
}
_TRAINING_ARG_KEYS: tuple[str, ...] = (
    "learning_rate",
    "lr_scheduler_type",
    "warmup_ratio",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "num_generations",
    "max_completion_length",
    "max_prompt_length",
    "max_length",
    "temperature",
    "top_p",
    "beta",
    "epsilon",
    "epsilon_high",
    "loss_type",
    "scale_rewards",
    "optim",
    "weight_decay",
    "max_grad_norm",
    "bf16",
    "fp16",
    "gradient_checkpointing",
    "use_vllm",
    "seed",
)

console = Console(stderr=True)


def _say(message: str) -> None:
    console.print(escape(message), highlight=False)


class ExportError(RuntimeError):
    """An export that cannot be done as asked; the message says why and what to do instead."""


class PushError(ExportError):
    """The upload to the Hub failed; the local export is complete and stays where it was written."""


@dataclass
class RunSource:
    """What is being exported: where the adapter is, the run's config, the method and the base model."""

    path: Path
    adapter_dir: Path
    run_dir: Path | None
    config: Config
    config_found: bool
    method: str  # "rlvr" | "sft"
    base_model: str  # the model spec trained on: "tiny", "tiny:3", "Qwen/Qwen2.5-3B", a local path
    trained_in_4bit: bool
    adapter_config: dict = field(default_factory=dict)
    run_meta: dict = field(default_factory=dict)
    training_args: dict = field(default_factory=dict)

    @property
    def tiny(self) -> bool:
        from medrlvr_lite.models import is_tiny

        return is_tiny(self.base_model)

    @property
    def section(self) -> Any:
        return self.config.rlvr if self.method == "rlvr" else self.config.sft


@dataclass
class ExportResult:
    """Where the export went and what it holds."""

    out_dir: Path
    merge: str
    dtype: str | None
    files: list[str]
    notes: list[str]
    card: Path
    gguf_files: list[str] = field(default_factory=list)
    hub_url: str | None = None


# --------------------------------------------------------------------------------------------------------------
# The source: a run directory or an adapter directory


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ExportError(f"{path}: not readable as JSON ({exc})") from exc
    return data if isinstance(data, dict) else {}


def _check_adapter_dir(adapter_dir: Path) -> None:
    if not (adapter_dir / "adapter_config.json").is_file():
        raise ExportError(f"{adapter_dir}: no adapter_config.json (expected a LoRA adapter saved by PEFT)")
    if not (adapter_dir / "adapter_model.safetensors").is_file():
        pickled = [
            p.name for p in adapter_dir.iterdir() if p.suffix in PICKLE_SUFFIXES and "adapter" in p.name
        ]
        if pickled:
            raise ExportError(
                f"{adapter_dir}: the adapter weights are in {', '.join(pickled)} (a pickle file); medrlvr-lite reads "
                "safetensors only, because loading a pickle can run arbitrary code. Re-save the adapter with "
                "`model.save_pretrained(dir)` (PEFT writes adapter_model.safetensors) and export that."
            )
        raise ExportError(f"{adapter_dir}: no adapter_model.safetensors")


def _find_config(adapter_dir: Path, run_dir: Path | None) -> Path | None:
    candidates = [adapter_dir / "config.yaml", adapter_dir / CONFIG_COPY]
    if run_dir is not None:
        candidates.insert(0, run_dir / "config.yaml")
    else:
        candidates.append(adapter_dir.parent / "config.yaml")
    return next((c for c in candidates if c.is_file()), None)


def _method(run_dir: Path | None, adapter_dir: Path, cfg: Config, meta: dict, targs: dict) -> str:
    """rlvr or sft: run.json says so, else which section's output_dir the run is, else what the run left."""
    for key in ("method", "kind", "stage", "trainer", "phase"):
        value = str(meta.get(key, "")).lower()
        if "sft" in value:
            return "sft"
        if "rlvr" in value or "grpo" in value:
            return "rlvr"
    home = run_dir or adapter_dir.parent
    try:
        here = home.resolve()
        if here == Path(cfg.rlvr.output_dir).resolve():
            return "rlvr"
        if here == Path(cfg.sft.output_dir).resolve():
            return "sft"
    except OSError:  # pragma: no cover
        pass
    if "num_generations" in targs or (home / "completions.jsonl").is_file():
        return "rlvr"
    if "sft" in home.name.lower():
        return "sft"
    return "rlvr"


def _trained_in_4bit(cfg: Config, meta: dict, base: str) -> bool:
    from medrlvr_lite.models import is_tiny

    if is_tiny(base):
        return False
    if any(base.lower().endswith(s) for s in _QUANTISED_SUFFIXES):
        return True
    if isinstance(meta.get("trained_in_4bit"), bool):  # export.json of an earlier export
        return meta["trained_in_4bit"]
    info = meta.get("model_info") or meta.get("model") or meta.get("info") or {}
    if isinstance(info, dict) and "load_in_4bit" in info:
        return bool(info["load_in_4bit"])
    if "load_in_4bit" in meta:
        return bool(meta["load_in_4bit"])
    backend = str(meta.get("backend") or (info.get("backend") if isinstance(info, dict) else "") or "")
    if backend == "cpu" or (not backend and cfg.model.backend == "cpu"):
        return False
    return bool(cfg.model.load_in_4bit)


def resolve_source(path: str | Path) -> RunSource:
    """Read a run directory (``adapter/`` + ``config.yaml``) or an adapter directory."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ExportError(f"{p}: no such directory (give a training run directory or an adapter directory)")
    if not p.is_dir():
        raise ExportError(f"{p}: not a directory (give a training run directory or an adapter directory)")
    if (p / "adapter" / "adapter_config.json").is_file() or (p / "adapter").is_dir():
        run_dir: Path | None = p
        adapter_dir = p / "adapter"
    elif (p / "adapter_config.json").is_file() or any(p.glob("adapter_model.*")):
        adapter_dir = p
        parent = p.parent
        run_dir = (
            parent
            if (parent / "config.yaml").is_file()
            and (p.name == "adapter" or p.name.startswith("checkpoint-"))
            else None
        )
    else:
        checkpoints = sorted(
            p.glob("checkpoint-*"),
            key=lambda c: int(c.name.split("-")[-1]) if c.name.split("-")[-1].isdigit() else -1,
        )
        hint = f"; to export a checkpoint, give it: {checkpoints[-1]}" if checkpoints else ""
        raise ExportError(
            f"{p}: neither a run directory (no adapter/) nor an adapter directory (no adapter_config.json){hint}"
        )
    _check_adapter_dir(adapter_dir)
    adapter_config = _read_json(adapter_dir / "adapter_config.json")

    cfg_path = _find_config(adapter_dir, run_dir)
    if cfg_path is not None:
        try:
            cfg = load_config(cfg_path)
        except ConfigError as exc:
            raise ExportError(str(exc)) from exc
    else:
        from medrlvr_lite.models import is_tiny

        base = adapter_config.get("base_model_name_or_path")
        if base and is_tiny(str(base)):
            raise ExportError(
                f"{adapter_dir}: the adapter was trained on the tiny model, which is rebuilt from the run's config "
                "(its seed and shape), and there is no config.yaml beside the adapter: export the run directory "
                "that trained it"
            )
        if not base:
            raise ExportError(
                f"{adapter_dir}: cannot tell the base model: adapter_config.json has no base_model_name_or_path and "
                "there is no config.yaml beside the adapter (export the run directory that trained it)"
            )
        cfg = load_config(None, [f"model.name_or_path={json.dumps(base)}"])
    home = run_dir or adapter_dir
    # run.json of the run (backend, model info, SFT's settings_used), or export.json of an earlier export
    meta_path = next((c for c in (home / "run.json", adapter_dir / EXPORT_RECORD) if c.is_file()), None)
    meta = _read_json(meta_path) if meta_path else {}
    targs_path = next(
        (c for c in (home / "training_args.json", adapter_dir / "training_args.json") if c.is_file()), None
    )
    targs = _read_json(targs_path) if targs_path else {}
    if not targs and isinstance(meta.get("settings_used"), dict):
        targs = dict(meta["settings_used"])
    if run_dir is not None and (run_dir / "best.json").is_file():  # SFT's --lr-grid winner
        meta = {**meta, "lr_grid_best": _read_json(run_dir / "best.json")}
    base = cfg.model.name_or_path
    return RunSource(
        path=p,
        adapter_dir=adapter_dir,
        run_dir=run_dir,
        config=cfg,
        config_found=cfg_path is not None,
        method=_method(run_dir, adapter_dir, cfg, meta, targs),
        base_model=base,
        trained_in_4bit=_trained_in_4bit(cfg, meta, base),
        adapter_config=adapter_config,
        run_meta=meta,
        training_args=targs,
    )


# --------------------------------------------------------------------------------------------------------------
# Base model and merge


def base_16bit_name(name: str) -> str:
    """The 16-bit checkpoint of a base: ``unsloth/Qwen2.5-3B-bnb-4bit`` -> ``unsloth/Qwen2.5-3B``; others as given."""
    for suffix in _QUANTISED_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def merge_dtype(source: RunSource) -> str:
    """float32 for the tiny model; float16 when the run trained in fp16 (T4); else bfloat16."""
    if source.tiny:
        return "float32"
    info = source.run_meta.get("model")
    trained = info.get("dtype") if isinstance(info, dict) else None
    if (
        source.config.model.dtype == "float16"
        or source.training_args.get("fp16") is True
        or trained == "float16"
    ):
        return "float16"
    return "bfloat16"


def _load_base(source: RunSource, dtype: str) -> tuple[Any, Any]:
    """The base model in ``dtype`` (never quantised) and its tokenizer, from safetensors only."""
    import torch

    if source.tiny:
        from medrlvr_lite.models import build_tiny

        return build_tiny(source.config.model)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = base_16bit_name(source.base_model)
    try:
        model = AutoModelForCausalLM.from_pretrained(name, dtype=getattr(torch, dtype), use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(name)
    except OSError as exc:
        raise ExportError(
            f"could not load the base model {name!r} in 16-bit: {exc}. It must be a local directory or a Hub id "
            "with safetensors weights (log in with `hf auth login` for gated models)"
        ) from exc
    if getattr(model.config, "quantization_config", None):
        raise ExportError(
            f"the base model {name!r} is a quantised checkpoint; merging into it would merge into dequantised weights. "
            "Set model.name_or_path in the run's config.yaml to the 16-bit model (e.g. Qwen/Qwen2.5-3B) and export again"
        )
    return model, tokenizer


def merge_notes(source: RunSource, merge: str, dtype: str | None) -> list[str]:
    """What the console and the card say about how the weights were produced."""
    if merge == "lora":
        return ["LoRA adapter only: load it on top of the base model with PEFT."]
    if source.trained_in_4bit:
        notes = [
            f"The adapter was trained on a 4-bit (NF4, QLoRA) base. It was merged into the 16-bit base weights "
            f"({dtype}) reloaded from {base_16bit_name(source.base_model)}, not into dequantised 4-bit weights "
            "(as Unsloth's merged_16bit does)."
        ]
    elif source.tiny:
        notes = [f"The tiny model was merged in {dtype} (it trains in full precision on CPU)."]
    else:
        notes = [f"The adapter was merged into the base weights in {dtype}."]
    if merge == "4bit":
        notes.append(
            "Quantised to 4-bit NF4 with bitsandbytes after the 16-bit merge: expect lower accuracy than the "
            "16-bit merge or the adapter; loading needs bitsandbytes and a CUDA GPU."
        )
    return notes


def merge_adapter(source: RunSource, dtype: str | None = None) -> tuple[Any, Any, str]:
    """Base (16-bit, or fp32 for tiny) + adapter, merged with ``merge_and_unload``: (model, tokenizer, dtype)."""
    from peft import PeftModel

    dtype = dtype or merge_dtype(source)
    base, tokenizer = _load_base(source, dtype)
    peft_model = PeftModel.from_pretrained(base, str(source.adapter_dir), is_trainable=False)
    merged = peft_model.merge_and_unload(safe_merge=True)
    merged.eval()
    return merged, tokenizer, dtype


# --------------------------------------------------------------------------------------------------------------
# Writing the folder


def _copy_tokenizer(source: RunSource, out: Path, tokenizer: Any | None) -> list[str]:
    """The tokenizer the run saved beside its adapter, else the base model's."""
    files = [f for f in TOKENIZER_FILES if (source.adapter_dir / f).is_file()]
    if "tokenizer.json" in files or "vocab.json" in files or "tokenizer.model" in files:
        for f in files:
            shutil.copy2(source.adapter_dir / f, out / f)
        return files
    if tokenizer is None:
        if source.tiny:
            from medrlvr_lite.models import build_tiny_tokenizer

            tokenizer = build_tiny_tokenizer(source.config.model)
        else:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(base_16bit_name(source.base_model))
    before = set(out.iterdir())
    tokenizer.save_pretrained(str(out))
    return sorted(p.name for p in set(out.iterdir()) - before)


def _write_lora(source: RunSource, out: Path) -> list[str]:
    shutil.copy2(source.adapter_dir / "adapter_model.safetensors", out / "adapter_model.safetensors")
    adapter_config = dict(source.adapter_config)
    if not adapter_config.get("base_model_name_or_path") or source.tiny:
        # The tiny base has no Hub id: record the model spec that rebuilds it (medrlvr_lite.models.build_tiny).
        adapter_config["base_model_name_or_path"] = source.base_model
    (out / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2, sort_keys=True) + "\n")
    return list(ADAPTER_FILES)


def _quantise_nf4(merged_dir: Path, out: Path, dtype: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=getattr(torch, dtype),
        bnb_4bit_use_double_quant=True,
    )
    model = AutoModelForCausalLM.from_pretrained(
        str(merged_dir), quantization_config=quant, device_map={"": 0}, use_safetensors=True
    )
    model.save_pretrained(str(out))


def _check_preconditions(source: RunSource, merge: str, gguf: str | None, force: bool) -> None:
    from medrlvr_lite.models import _cuda_available, _has_module

    if merge not in MERGE_MODES:
        raise ExportError(f"--merge must be one of {', '.join(MERGE_MODES)}, not {merge!r}")
    if merge == "4bit":
        if not force:
            raise ExportError(
                "--merge 4bit quantises the merged model to 4-bit NF4, which loses accuracy (rounding the merged "
                "weights to 4 bits erases part of what the adapter learned; users of merged 4-bit models report "
                "lower scores). Prefer --merge 16bit or the adapter (--merge lora); add --force to export 4-bit anyway."
            )
        if not _cuda_available():
            raise ExportError(
                "--merge 4bit needs a CUDA GPU (bitsandbytes quantises on the GPU) and none was found; use "
                "--merge 16bit here, or run the export on a machine with an NVIDIA GPU"
            )
        if not _has_module("bitsandbytes"):
            raise ExportError(f"--merge 4bit needs bitsandbytes: {GPU_EXTRA}")
    if gguf:
        if not _has_module("unsloth"):
            raise ExportError(
                f"--gguf {gguf} uses Unsloth's GGUF export, and Unsloth is not installed: on a machine with a CUDA "
                f"GPU run `{GPU_EXTRA}`, then export again (or export --merge 16bit and convert with llama.cpp's "
                "convert_hf_to_gguf.py)"
            )
        if not _cuda_available():
            raise ExportError(f"--gguf {gguf} runs through Unsloth, which needs a CUDA GPU; none was found")
        if source.tiny:
            raise ExportError(
                f"--gguf {gguf}: the tiny model is built in memory and Unsloth can only load a Hub or local model; "
                "export the tiny model with --merge 16bit instead"
            )


def _export_gguf(source: RunSource, out: Path, quant: str) -> list[str]:
    from medrlvr_lite.models import import_unsloth

    import_unsloth()
    from unsloth import FastLanguageModel

    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=str(source.adapter_dir),
        max_seq_length=source.config.model.max_seq_length,
        dtype=None,
        load_in_4bit=False,
    )
    target = out / "gguf"
    model.save_pretrained_gguf(str(target), tokenizer, quantization_method=quant)
    found = sorted({*out.rglob("*.gguf"), *Path(f"{target}_gguf").glob("*.gguf")})
    return [str(f) for f in found]


def _prepare_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise ExportError(
                f"--out {out}: the directory is not empty; choose a new one, or add --force to write over it"
            )
        record = out / EXPORT_RECORD
        if record.is_file():  # a previous export: remove what it wrote, so two exports never mix
            for name in _read_json(record).get("files", []):
                target = out / name
                if target.is_file() and target.parent == out:
                    target.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _pickle_files(out: Path) -> list[str]:
    return sorted(
        str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.suffix in PICKLE_SUFFIXES
    )


def export_run(
    path: str | Path,
    out: str | Path,
    *,
    merge: str = "lora",
    push_to_hub: str | None = None,
    private: bool = False,
    gguf: str | None = None,
    force: bool = False,
    license: str | None = None,
    say: Any = None,
) -> ExportResult:
    """Export the adapter of ``path`` (run or adapter directory) into ``out`` as ``merge`` (lora | 16bit | 4bit),
    write the model card, optionally a GGUF file, and optionally upload ``out`` to the Hub repo ``push_to_hub``.

    Raises :class:`ExportError` before writing anything when the export cannot be done as asked, and
    :class:`PushError` (after the local export is complete) when the upload fails."""
    say = say or _say
    source = resolve_source(path)
    _check_preconditions(source, merge, gguf, force)
    if push_to_hub is not None:
        _check_repo_id(push_to_hub)
    out = Path(out).expanduser()
    created = not out.exists()
    _prepare_out(out, force)
    try:
        result = _export_into(source, out, merge, gguf, license, push_to_hub, say)
    except BaseException:
        if created:  # everything in it is ours: leave no half-written export behind
            shutil.rmtree(out, ignore_errors=True)
        raise
    if push_to_hub is not None:
        result.hub_url = push_folder(out, push_to_hub, private=private, say=say)
    return result


def _export_into(
    source: RunSource,
    out: Path,
    merge: str,
    gguf: str | None,
    license: str | None,
    push_to_hub: str | None,
    say: Any,
) -> ExportResult:
    notes: list[str] = []
    say(f"export {source.adapter_dir} ({source.method}, base {source.base_model}) -> {out} [{merge}]")

    dtype: str | None = None
    if merge == "lora":
        files = _write_lora(source, out)
        files += _copy_tokenizer(source, out, None)
        notes += merge_notes(source, merge, None)
    else:
        dtype = merge_dtype(source)
        notes += merge_notes(source, merge, dtype)
        say(f"merging the adapter into {base_16bit_name(source.base_model)} in {dtype} ...")
        merged, tokenizer, dtype = merge_adapter(source, dtype)
        before = set(out.iterdir())
        if merge == "16bit":
            merged.save_pretrained(str(out))
        else:
            with tempfile.TemporaryDirectory(prefix="medrlvr-merge-") as tmp:
                merged.save_pretrained(tmp)
                del merged
                say("quantising the merged model to 4-bit NF4 with bitsandbytes ...")
                _quantise_nf4(Path(tmp), out, dtype)
        files = sorted(p.name for p in set(out.iterdir()) - before)
        files += _copy_tokenizer(source, out, tokenizer)
    for note in notes:
        say(f"  note: {note}")

    gguf_files: list[str] = []
    if gguf:
        say(f"writing GGUF ({gguf}) through Unsloth ...")
        gguf_files = _export_gguf(source, out, gguf)
        if not gguf_files:
            notes.append(f"Unsloth's GGUF export ({gguf}) ran but no .gguf file was found under {out}.")
        say(f"  GGUF: {', '.join(gguf_files) or 'none found'}")

    pickled = _pickle_files(out)
    if pickled:  # pragma: no cover - transformers / PEFT write safetensors; a guard, not a path
        raise ExportError(
            f"{out}: pickle files were written ({', '.join(pickled)}); this export is safetensors only"
        )

    from medrlvr_lite.config import save_config

    save_config(source.config, out / CONFIG_COPY)
    card = out / "README.md"
    card.write_text(
        model_card(source, merge=merge, dtype=dtype, notes=notes, repo_id=push_to_hub, license=license),
        encoding="utf-8",
    )
    files = sorted({*files, CONFIG_COPY, "README.md", EXPORT_RECORD})
    _write_record(source, out, merge, dtype, notes, files, gguf)
    say(f"wrote {out}: {', '.join(files)}")
    result = ExportResult(
        out_dir=out, merge=merge, dtype=dtype, files=files, notes=notes, card=card, gguf_files=gguf_files
    )
    return result


def _write_record(
    source: RunSource,
    out: Path,
    merge: str,
    dtype: str | None,
    notes: list[str],
    files: list[str],
    gguf: str | None,
) -> None:
    from medrlvr_lite import __version__

    record = {
        "source": str(source.path) if not source.path.is_absolute() else "/".join(source.path.parts[-2:]),
        "method": source.method,
        "base_model": source.base_model,
        "merge": merge,
        "dtype": dtype,
        "trained_in_4bit": source.trained_in_4bit,
        "gguf": gguf,
        "notes": notes,
        "files": files,
        "medrlvr_lite": __version__,
    }
    (out / EXPORT_RECORD).write_text(json.dumps(record, indent=2) + "\n")


# --------------------------------------------------------------------------------------------------------------
# The Hub


def _check_repo_id(repo_id: str) -> None:
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(parts) or any(c.isspace() for c in repo_id):
        raise ExportError(
            f"--push-to-hub {repo_id!r}: expected USER/REPO (or ORG/REPO), e.g. me/medrlvr-qwen2.5-3b"
        )


def push_folder(folder: str | Path, repo_id: str, *, private: bool = False, say: Any = None) -> str:
    """Create ``repo_id`` (if needed) and upload ``folder``; huggingface_hub finds the token (HF_TOKEN or the
    cached login). Returns the repo URL; raises :class:`PushError` with what to do when it fails."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError

    say = say or _say
    _check_repo_id(repo_id)
    folder = Path(folder)
    kept = f"The local export is complete in {folder}; push it again with `medrlvr-lite export ... --push-to-hub {repo_id}` or `hf upload {repo_id} {folder}`."
    api = HfApi()
    say(f"uploading {folder} to https://huggingface.co/{repo_id} ({'private' if private else 'public'}) ...")
    try:
        repo = api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            commit_message="Upload model exported with medrlvr-lite",
        )
    except LocalTokenNotFoundError as exc:
        raise PushError(f"no Hugging Face token found: {LOGIN_HINT}. {kept}") from exc
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status == 401:
            why = f"the Hub rejected the token (401 Unauthorized): {LOGIN_HINT}"
        elif status == 403:
            why = (
                f"the token may not write to {repo_id} (403 Forbidden): use a token with write access, and check that "
                "the user or organisation in the repo name is yours"
            )
        elif status == 404:
            why = f"repository {repo_id} was not found (404): check the repo name and that the token may create it"
        else:
            why = f"the Hub answered with an error{f' ({status})' if status else ''}: {_first_line(exc)}"
        raise PushError(f"push to {repo_id} failed: {why}. {kept}") from exc
    except (
        OSError,
        ConnectionError,
    ) as exc:  # network down, DNS, TLS, timeouts (httpx errors are OSErrors here)
        raise PushError(
            f"push to {repo_id} failed: could not reach the Hugging Face Hub ({type(exc).__name__}: {_first_line(exc)}); "
            f"check the network connection and try again. {kept}"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - httpx transport errors and other client failures
        raise PushError(
            f"push to {repo_id} failed: {type(exc).__name__}: {_first_line(exc)}. {kept}"
        ) from exc
    url = str(getattr(repo, "url", None) or f"https://huggingface.co/{repo_id}")
    say(f"pushed to {url}")
    return url


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# --------------------------------------------------------------------------------------------------------------
# The model card


def _license(base: str, override: str | None) -> dict[str, str]:
    from medrlvr_lite.models import is_tiny

    if override:
        return {"license": override}
    low = base.lower()
    if is_tiny(base):
        return {"license": "apache-2.0"}
    if "qwen2.5-3b" in low:
        return {
            "license": "other",
            "license_name": "qwen-research",
            "license_link": "https://huggingface.co/Qwen/Qwen2.5-3B/blob/main/LICENSE",
        }
    if "qwen2.5-72b" in low:
        return {
            "license": "other",
            "license_name": "qwen",
            "license_link": "https://huggingface.co/Qwen/Qwen2.5-72B/blob/main/LICENSE",
        }
    if "qwen2.5" in low or "qwen3" in low:
        return {"license": "apache-2.0"}
    return {"license": "other"}


def _hub_id(name: str) -> str | None:
    """``name`` when it looks like a Hub model id (owner/name, not a local path), else None."""
    from medrlvr_lite.models import is_tiny

    if is_tiny(name) or name.startswith((".", "/", "~")) or name.count("/") != 1 or Path(name).exists():
        return None
    return base_16bit_name(name)


def _dataset_text(spec: str) -> str:
    bare, _, where = spec.partition("@")
    name, _, subset = bare.partition(":")
    label = _DATASET_NAMES.get(name.strip().lower(), name)
    text = f"`{bare}`: {label}" + (f", split/subset `{subset}`" if subset else "")
    return text + (" (read from a local file)" if where else "")


def _fmt_pct(entry: Any) -> str:
    if not isinstance(entry, dict) or not isinstance(entry.get("accuracy"), (int, float)):
        return "–"
    text = f"{100 * entry['accuracy']:.2f}"
    if isinstance(entry.get("bootstrap_sd"), (int, float)):
        text += f" ± {100 * entry['bootstrap_sd']:.2f}"
    if entry.get("n") is not None:
        text += f" (n={entry['n']})"
    return text


def study_table(source: RunSource) -> str | None:
    """The evaluation table of the study the run belongs to (``results.json`` in the run's parent), or None."""
    if source.run_dir is None:
        return None
    path = source.run_dir.parent / "results.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    evaluations = data.get("evaluations") if isinstance(data, dict) else None
    if not isinstance(evaluations, dict) or not evaluations:
        return None
    try:
        from medrlvr_lite.report import PHASE_LABELS, paper_accuracy, set_label
    except Exception:  # noqa: BLE001 - the card must not depend on the report module's state
        PHASE_LABELS, paper_accuracy, set_label = {}, (lambda phase, spec: None), (lambda spec: spec)
    sets: list[str] = []
    for per_set in evaluations.values():
        if isinstance(per_set, dict):
            sets += [s for s in per_set if s not in sets]
    if not sets:
        return None
    this = data.get(f"{source.method}_run", source.method)
    this_phase = source.method if this == source.run_dir.name else None
    header = ["model"] + [f"{set_label(s)} (ours)" for s in sets] + [f"{set_label(s)} (paper)" for s in sets]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    order = [p for p in ("base_direct", "base_cot", "sft", "rlvr") if p in evaluations]
    order += [p for p in evaluations if p not in order]
    for phase in order:
        per_set = evaluations[phase] if isinstance(evaluations[phase], dict) else {}
        label = PHASE_LABELS.get(phase, phase)
        if phase == this_phase:
            label = f"**{label} (this model)**"
        paper = []
        for s in sets:
            ref = paper_accuracy(phase, s)
            paper.append(
                "–" if not ref else f"{ref['pct']:.2f}" + (f" ± {ref['sd']:.2f}" if ref.get("sd") else "")
            )
        lines.append("| " + " | ".join([label] + [_fmt_pct(per_set.get(s)) for s in sets] + paper) + " |")
    return "\n".join(lines)


def _eval_tables(source: RunSource) -> list[str]:
    """``results.md`` of stand-alone evaluation directories near the run whose results name this run's adapter."""
    if source.run_dir is None:
        return []
    parent = source.run_dir.parent
    adapter = source.adapter_dir.resolve()
    found: list[str] = []
    candidates = sorted(
        {*source.run_dir.glob("*/results.md"), *parent.glob("*/results.md"), *parent.glob("*/*/results.md")}
    )
    for md in candidates:
        match = False
        for res in md.parent.glob("*/results.json"):
            try:
                named = json.loads(res.read_text(encoding="utf-8")).get("adapter")
            except (OSError, ValueError, AttributeError):
                continue
            if named and _names_adapter(str(named), md, adapter):
                match = True
                break
        if match:
            body = [ln for ln in md.read_text(encoding="utf-8").splitlines() if not ln.startswith("# ")]
            found.append("\n".join(body).strip())
    return found


def _names_adapter(named: str, md: Path, adapter: Path) -> bool:
    """Whether the adapter path an evaluation recorded (relative to where it ran) is ``adapter``."""
    p = Path(named).expanduser()
    bases = [Path()] if p.is_absolute() else [Path.cwd(), *md.resolve().parents]
    return any((base / p).resolve() == adapter for base in bases)


def _training_settings(source: RunSource) -> list[str]:
    sec = source.section
    m = source.config.model
    rows: list[tuple[str, Any]] = [("dataset", sec.dataset.split("@", 1)[0]), ("prompt", sec.prompt)]
    if source.method == "rlvr":
        keys = ("num_generations", "per_device_train_batch_size", "gradient_accumulation_steps", "max_completion_length",
                "temperature", "beta", "epsilon", "epsilon_high", "loss_type", "scale_rewards", "learning_rate",
                "lr_scheduler_type", "num_train_epochs", "max_steps", "optim", "seed")  # fmt: skip
    else:
        keys = ("target", "learning_rate", "lr_grid", "num_train_epochs", "max_steps", "per_device_train_batch_size",
                "gradient_accumulation_steps", "max_length", "lr_scheduler_type", "optim", "seed")  # fmt: skip
    rows += [(k, getattr(sec, k)) for k in keys if hasattr(sec, k)]
    rows += [
        (
            "LoRA",
            f"r={m.lora.r}, alpha={m.lora.alpha}, dropout={m.lora.dropout}, targets={m.lora.target_modules}",
        ),
        ("base weights", "4-bit NF4 (QLoRA)" if source.trained_in_4bit else "full precision / 16-bit"),
        ("backend", source.run_meta.get("backend") or m.backend),
        ("max_seq_length", m.max_seq_length),
    ]
    lines = ["| setting | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    best = source.run_meta.get("lr_grid_best")
    if isinstance(best, dict) and "learning_rate" in best:
        acc = best.get("dev_accuracy")
        lines += [
            "",
            f"Learning rate {best['learning_rate']:g} was picked from the grid "
            f"{', '.join(str(k) for k in (best.get('grid') or {}))} by accuracy on "
            f"`{str(best.get('dev_dataset') or 'dev').split('@', 1)[0]}`"
            + (f" ({100 * acc:.2f}%)." if isinstance(acc, (int, float)) else "."),
        ]
    used = {k: source.training_args[k] for k in _TRAINING_ARG_KEYS if source.training_args.get(k) is not None}
    if used:
        lines += [
            "",
            "Settings the trainer actually used:",
            "",
            "| argument | value |",
            "|---|---|",
        ]
        lines += [f"| {k} | {v} |" for k, v in used.items()]
    return lines


def _metrics_summary(source: RunSource) -> str | None:
    if source.run_dir is None or not (source.run_dir / "metrics.jsonl").is_file():
        return None
    rows = []
    for line in (source.run_dir / "metrics.jsonl").read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and "step" in row:
            rows.append(row)
    if not rows:
        return None
    last = rows[-1]
    parts = [f"{len(rows)} logged step{'s' if len(rows) != 1 else ''}, the last at step {last['step']}"]
    for key in ("reward", "accuracy", "format_ok", "loss"):
        if isinstance(last.get(key), (int, float)):
            parts.append(f"{key} {last[key]:.3f}")
    return "Training log (`metrics.jsonl`): " + ", ".join(parts) + "."


def model_card(
    source: RunSource,
    *,
    merge: str,
    dtype: str | None,
    notes: list[str],
    repo_id: str | None = None,
    license: str | None = None,
) -> str:
    """README.md for the exported folder: YAML front matter + what the model is, how it was trained, how to use it."""
    from medrlvr_lite import prompts

    rlvr = source.method == "rlvr"
    sec = source.section
    hub_base = _hub_id(source.base_model)
    tags = ["medical", "medrlvr-lite", "multiple-choice-qa"]
    tags += ["rlvr", "grpo", "reinforcement-learning", "trl"] if rlvr else ["sft", "trl"]
    tags += ["lora", "peft"] if merge == "lora" else ["merged-lora"]
    if source.trained_in_4bit:
        tags.append("qlora")
    if merge == "4bit":
        tags += ["4-bit", "bitsandbytes"]
    front: dict[str, Any] = {}
    if hub_base:
        front["base_model"] = hub_base
    front["library_name"] = "peft" if merge == "lora" else "transformers"
    front.update(_license(source.base_model, license))
    front["pipeline_tag"] = "text-generation"
    front["language"] = ["en"]
    front["tags"] = tags
    name = (
        repo_id.split("/")[-1]
        if repo_id
        else f"{source.method}-{base_16bit_name(source.base_model).split('/')[-1]}"
    )
    method = (
        "RLVR (reinforcement learning from verifiable rewards) with GRPO"
        if rlvr
        else "SFT (supervised fine-tuning on the gold answers, no reasoning)"
    )
    what = {
        "lora": "a LoRA adapter (load it on the base model with PEFT)",
        "16bit": f"the LoRA adapter merged into the base model ({dtype})",
        "4bit": "the LoRA adapter merged into the base model in 16-bit, then quantised to 4-bit NF4 (bitsandbytes)",
    }[merge]
    base_text = f"`{source.base_model}`"
    if source.tiny:
        base_text += (
            " — a tiny random Qwen2 built in memory by `medrlvr_lite.models.build_tiny` from `medrlvr_config.yaml` "
            "(a test model: its answers mean nothing)"
        )
    md: list[str] = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "", f"# {name}", ""]
    md += [
        f"{method.split(' (')[0]} on medical multiple-choice questions, following Med-RLVR (Zhang et al., 2025, "
        "arXiv:2502.19655), trained with medrlvr-lite. This repository holds "
        f"{what}.",
        "",
        f"- **Base model:** {base_text}",
        f"- **Method:** {method}"
        + (
            " (TRL's GRPOTrainer, critic-free, the verifier as reward)" if rlvr else ", with TRL's SFTTrainer"
        ),
        f"- **Data:** {_dataset_text(sec.dataset)}",
        f"- **Export:** {merge}" + (f", {dtype}" if dtype else ""),
        "",
    ]
    if notes:
        md += ["Notes:", ""] + [f"- {n}" for n in notes] + [""]
    style = sec.prompt
    template = {"r1": prompts.R1_TEMPLATE, "direct": prompts.DIRECT_TEMPLATE, "cot": prompts.COT_TEMPLATE}[
        style
    ]
    md += ["## Prompt", ""]
    if style == "r1":
        md.append(
            "The model expects the paper's R1-Zero template in plain text (no chat template), with `{question}` "
            "replaced by the question and its lettered options, one per line (`A. ...`). It answers with its "
            "reasoning inside `<think> </think>` and the option letter inside `<answer> </answer>`:"
        )
    else:
        md.append(
            f"The model expects the `{style}` prompt in plain text, with `{{question}}` replaced by the question and "
            "its lettered options, one per line (`A. ...`)"
            + (
                f"; it was trained to answer with {'the letter' if getattr(sec, 'target', '') == 'letter' else 'the letter and the option text'}."
                if not rlvr
                else "."
            )
        )
    if source.config.model.chat_template:
        md.append(
            "(Training rendered this instruction through the tokenizer's chat template: `model.chat_template: true`.)"
        )
    md += ["", "```text", template, "```", ""]
    md += ["## Reward", ""]
    if rlvr:
        r = sec.reward
        md += [
            "The verifier's reward (`medrlvr_lite.verifier`, the same code that scores the evaluation):",
            "",
            "| completion | reward |",
            "|---|---|",
            f"| invalid format (tags missing or malformed) | {r.format_error} |",
            f"| valid format, the gold letter in `<answer>` | {r.correct} |",
            f"| valid format, a wrong or no letter | {r.wrong} |",
            "",
            f"Verifier mode: `{r.mode}` ("
            + (
                "text before `<think>` allowed and flagged, as in the paper"
                if r.mode == "paper"
                else "text before `<think>` is a format error"
            )
            + ").",
            "",
        ]
    else:
        md += [
            "None: SFT minimises the cross-entropy of the gold answer; evaluation reads the letter with the verifier's rules.",
            "",
        ]
    md += ["## Training settings", ""] + _training_settings(source) + [""]
    summary = _metrics_summary(source)
    if summary:
        md += [summary, ""]
    if not source.config_found:
        md += [
            "(No config.yaml was found beside the adapter: the settings above are medrlvr-lite's defaults.)",
            "",
        ]
    table = study_table(source)
    eval_tables = _eval_tables(source)
    if table or eval_tables:
        md += ["## Evaluation", ""]
    if table:
        md += [
            "Accuracy % ± SD over 1000 bootstrap resamples, from the study this model belongs to (`results.json`), with "
            "the paper's numbers (Qwen2.5-3B; PPO and full fine-tuning on 32 A100 GPUs) beside ours:",
            "",
            table,
            "",
        ]
    for body in eval_tables:
        md += ["Evaluation of this model (`results.md`):", "", body, ""]
    ref = repo_id or str(Path("path/to/export"))
    md += ["## Usage", "", "```python"]
    md += ["import torch", "from transformers import AutoModelForCausalLM, AutoTokenizer"]
    if merge == "lora":
        md.append("from peft import PeftModel")
        md.append("")
        if source.tiny:
            md += [
                "from medrlvr_lite.config import load_config",
                "from medrlvr_lite.models import build_tiny",
                "",
                f'base, _ = build_tiny(load_config("{ref}/{CONFIG_COPY}").model)',
            ]
        else:
            md.append(
                f'base = AutoModelForCausalLM.from_pretrained("{base_16bit_name(source.base_model)}", dtype="auto")'
            )
        md += [
            f'model = PeftModel.from_pretrained(base, "{ref}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{ref}")',
        ]
    else:
        md += [
            "",
            f'model = AutoModelForCausalLM.from_pretrained("{ref}", dtype="auto")',
            f'tokenizer = AutoTokenizer.from_pretrained("{ref}")',
        ]
    md += [
        "",
        'question = "A 45-year-old man has crushing chest pain ... Which is the most likely diagnosis?\\n"',
        'question += "A. Myocardial infarction\\nB. Pneumonia\\nC. Pulmonary embolism\\nD. Aortic dissection"',
        f'PROMPT = """{template}"""',
        "prompt = PROMPT.format(question=question)",
        'inputs = tokenizer(prompt, return_tensors="pt").to(model.device)',
        "with torch.no_grad():",
        f"    out = model.generate(**inputs, max_new_tokens={1024 if style != 'direct' else 16}, do_sample=False)",
        'completion = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)',
        "print(completion)",
        "```",
        "",
        "Score completions with the same verifier that "
        + ("rewarded training" if rlvr else "scored the evaluation")
        + " (`pip install medrlvr-lite`): one JSON line per completion, then",
        "",
        "```bash",
        'echo \'{"completion": "<think> ... </think><answer> A </answer>", "answer": "A", '
        '"options": {"A": "Myocardial infarction", "B": "Pneumonia"}}\' > completions.jsonl',
        "medrlvr-lite score completions.jsonl      # format_ok, letter, correct, reward, hacking flags",
        "```",
        "",
        "## Limitations",
        "",
        "A research artefact reproducing a study of how reasoning emerges under RLVR; not a medical device and not "
        "medical advice. Multiple-choice accuracy on exam questions says little about clinical safety."
        + (" The base model's license applies." if hub_base else ""),
        "",
    ]
    return "\n".join(md)
