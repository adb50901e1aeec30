"""SFT baseline: supervised fine-tuning on the gold answers, the other half of the paper's comparison.

The paper's SFT baseline trains Qwen2.5-3B on MedQA train with the *answer only* as target (no reasoning), 10
epochs, learning rate picked from the grid 1e-5 / 5e-6 / 1e-6 on the dev split. Ours runs TRL's ``SFTTrainer`` on
the same data, the same backends and the same LoRA as RLVR (``models.load_model``):

- prompt: ``prompts.render_prompt(record, cfg.sft.prompt)`` (``direct`` by default: "...Answer:");
- completion: ``prompts.sft_target(record, cfg.sft.target)`` (`` B. option text``), EOS appended by TRL;
- loss on the completion only: the dataset is in TRL's prompt-completion format ({"prompt", "completion"}),
  for which ``SFTTrainer`` builds ``labels`` with -100 on every prompt token (``completion_only_loss``, set
  explicitly here rather than left to TRL's default);
- precision: fp32 on CPU (``bf16=False``: TRL's default bf16 fails there), bf16 on Ampere+ GPUs, fp16 on
  T4-class GPUs (then the LoRA weights are kept in fp32 so the fp16 gradient scaler can unscale them).

Run it:

    medrlvr-lite train sft --config configs/sft_qwen2.5-3b_medqa.yaml
    medrlvr-lite train sft --config configs/sft_qwen2.5-3b_medqa.yaml --lr-grid 1e-5,5e-6,1e-6
    medrlvr-lite train sft --config configs/smoke.yaml --resume        # continue after an interruption

    from medrlvr_lite.sft import train_sft
    adapter = train_sft(load_config("configs/smoke.yaml"))

Outputs (``sft.output_dir``, the same layout as an RLVR run):

    config.yaml          the resolved config that ran
    checkpoint-N/        Trainer checkpoints (adapter + optimizer + scheduler + RNG state), for --resume
    adapter/             the final LoRA adapter and tokenizer
    metrics.jsonl        one line per logged step: step, loss, learning_rate, epoch, grad_norm,
                         mean_token_accuracy, entropy, num_tokens (what TRL logs)
    run.json             status (complete / interrupted), backend and model info, the settings actually used
                         (Unsloth may override some), dataset size, versions, git commit, timing per session

With a learning-rate grid (``--lr-grid`` or ``sft.lr_grid``) each value trains into ``<out>/lr_<value>/`` (the
layout above), is evaluated on ``sft.dev_dataset`` (at most ``sft.dev_limit`` questions) with the evaluation
harness and the training prompt, and the best (highest dev accuracy; ties: the earlier grid value) is copied to
``<out>/adapter/``. ``grid.json`` maps each learning rate to its dev accuracy; ``best.json`` names the winner.

Resume: ``--resume`` continues from the last ``checkpoint-N`` (optimizer, scheduler and data order restored by
the Trainer); ``metrics.jsonl`` is cut back to the lines with ``step <= N`` first, so no line is written twice.
A finished run is left as it is; in a grid, finished grid points are skipped. SIGTERM / SIGINT (Ctrl-C,
a preempted Colab / Kaggle / SLURM job) make the trainer save a checkpoint after the current step and stop,
with a message saying how to resume; a second Ctrl-C stops at once.

The callbacks at the end of this module (JSONL metrics, graceful stop, rich progress) know nothing about SFT and
could serve the RLVR trainer as well.
"""

from __future__ import annotations

import datetime as _dt
import gc
import json
import math
import os
import re
import shutil
import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medrlvr_lite.config import Config, save_config
from medrlvr_lite.runs import checkpoint_step
from medrlvr_lite.runs import find_last_checkpoint as last_checkpoint
from medrlvr_lite.runs import run_versions as _versions
from medrlvr_lite.runs import truncate_jsonl as truncate_metrics
from medrlvr_lite.runs import write_json as _write_json

METRIC_KEYS = ("loss", "learning_rate", "epoch", "grad_norm", "mean_token_accuracy", "entropy", "num_tokens")


class SFTError(ValueError):
    """An SFT run the user has to fix (existing output, empty data, bad grid); the message says how."""


class TrainingInterrupted(RuntimeError):
    """Training stopped on SIGTERM / SIGINT after saving ``checkpoint``; rerun with ``--resume`` to continue.
    ``exit_code`` is 128 + the signal number (130 for Ctrl-C, 143 for SIGTERM), as for rlvr.py."""

    def __init__(self, output_dir: Path, checkpoint: Path | None, signum: int):
        self.output_dir = Path(output_dir)
        self.checkpoint = checkpoint
        self.signum = int(signum)
        self.signal_name = signal.Signals(self.signum).name
        self.exit_code = 128 + self.signum
        where = f"saved {checkpoint}" if checkpoint else "no checkpoint could be saved"
        super().__init__(
            f"{self.signal_name} received: training stopped, {where}. "
            f"Resume with the same command and --resume (run directory {self.output_dir})."
        )


# --------------------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------------------


def sft_examples(
    records: Sequence[Any],
    prompt: str = "direct",
    target: str = "answer",
    tokenizer: Any = None,
    chat: bool = False,
) -> list[dict[str, str]]:
    """Prompt-completion examples ({"id", "prompt", "completion"}) of ``records`` (no EOS: TRL appends it)."""
    from medrlvr_lite.prompts import render_prompt, sft_target

    rows = []
    for r in records:
        completion = sft_target(r, target)
        rows.append(
            {
                "id": str(r.id),
                "prompt": render_prompt(r, style=prompt, tokenizer=tokenizer, chat=chat),
                # a chat prompt ends with the assistant header (a newline), not with "Answer:"
                "completion": completion.lstrip() if chat else completion,
            }
        )
    return rows


def build_dataset(records: Sequence[Any], cfg: Config, tokenizer: Any = None) -> Any:
    """The ``datasets.Dataset`` SFTTrainer trains on (prompt-completion format)."""
    from datasets import Dataset

    rows = sft_examples(records, cfg.sft.prompt, cfg.sft.target, tokenizer, cfg.model.chat_template)
    return Dataset.from_list(rows)


# --------------------------------------------------------------------------------------------------------------
# Trainer
# --------------------------------------------------------------------------------------------------------------


def precision_flags(loaded: Any) -> dict[str, bool]:
    """``bf16`` / ``fp16`` / ``use_cpu`` for the Trainer from what the model was loaded with."""
    info = getattr(loaded, "info", {}) or {}
    on_gpu = loaded.backend != "cpu" and str(info.get("device", "cuda")).startswith("cuda")
    dtype = str(info.get("dtype", "float32"))
    return {
        "bf16": on_gpu and dtype == "bfloat16",
        "fp16": on_gpu and dtype == "float16",
        "use_cpu": not on_gpu,
    }


def make_sft_args(
    cfg: Config, output_dir: str | Path, loaded: Any, *, learning_rate: float | None = None
) -> Any:
    """TRL ``SFTConfig`` for ``cfg.sft`` (precision from the loaded model; gradient checkpointing is already set
    up by ``models.load_model``, so the Trainer does not enable it a second time)."""
    import dataclasses

    from trl import SFTConfig

    s = cfg.sft
    if not 0.0 <= s.warmup_ratio < 1.0:
        raise SFTError(f"sft.warmup_ratio is {s.warmup_ratio}; it is a share of the steps, in [0, 1)")
    fields = {f.name for f in dataclasses.fields(SFTConfig)}
    # transformers 5 renamed gradient_checkpointing and folded warmup_ratio into a float warmup_steps
    version_dependent = {
        "activation_checkpointing"
        if "activation_checkpointing" in fields
        else "gradient_checkpointing": False,
        "warmup_ratio" if "warmup_ratio" in fields else "warmup_steps": s.warmup_ratio,
    }
    return SFTConfig(
        output_dir=str(output_dir),
        learning_rate=learning_rate if learning_rate is not None else s.learning_rate,
        num_train_epochs=s.num_train_epochs,
        max_steps=s.max_steps,
        per_device_train_batch_size=s.per_device_train_batch_size,
        gradient_accumulation_steps=s.gradient_accumulation_steps,
        max_length=s.max_length,
        lr_scheduler_type=s.lr_scheduler_type,
        weight_decay=s.weight_decay,
        optim=s.optim,
        seed=s.seed,
        data_seed=s.seed,
        logging_steps=s.logging_steps,
        save_strategy="steps",
        save_steps=s.save_steps,
        save_total_limit=s.save_total_limit,
        report_to=s.report_to,
        completion_only_loss=True,
        packing=False,
        disable_tqdm=True,
        dataloader_num_workers=0,
        **version_dependent,
        **precision_flags(loaded),
    )


def build_trainer(
    cfg: Config,
    loaded: Any,
    records: Sequence[Any],
    output_dir: str | Path,
    *,
    learning_rate: float | None = None,
    callbacks: Sequence[Any] = (),
) -> Any:
    """An ``SFTTrainer`` for ``records`` on the model in ``loaded`` (a PEFT model from ``models.load_model``)."""
    import datasets
    import torch
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import SFTTrainer

    args = make_sft_args(cfg, output_dir, loaded, learning_rate=learning_rate)
    dataset = build_dataset(records, cfg, loaded.tokenizer)
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # five tokenising passes, each with its own bar: noise on a terminal
    try:
        trainer = SFTTrainer(
            model=loaded.model,
            args=args,
            train_dataset=dataset,
            processing_class=loaded.tokenizer,
            callbacks=list(callbacks),
        )
    finally:
        if bars:
            datasets.enable_progress_bars()
    for cb in (PrinterCallback, ProgressCallback):  # our JSONL + rich progress replace them
        trainer.remove_callback(cb)
    if args.fp16 and loaded.backend != "unsloth":
        # TRL casts a quantized model's LoRA weights to bf16; the fp16 gradient scaler needs fp32 master weights.
        for p in trainer.model.parameters():
            if p.requires_grad and p.dtype != torch.float32:
                p.data = p.data.float()
    return trainer


def _used_settings(trainer: Any) -> dict[str, Any]:
    a = trainer.args
    keys = (
        "learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
        "max_length", "lr_scheduler_type", "warmup_steps", "warmup_ratio", "weight_decay", "optim", "seed", "bf16",
        "fp16", "activation_checkpointing", "gradient_checkpointing", "completion_only_loss", "logging_steps", "save_steps", "save_total_limit",
    )  # fmt: skip
    out = {k: getattr(a, k, None) for k in keys}
    out["optim"] = str(out["optim"].value if hasattr(out["optim"], "value") else out["optim"])
    out["lr_scheduler_type"] = str(getattr(out["lr_scheduler_type"], "value", out["lr_scheduler_type"]))
    out["world_size"] = getattr(a, "world_size", 1)
    return out


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _is_complete(run_dir: Path) -> bool:
    run = run_dir / "run.json"
    if not (run_dir / "adapter" / "adapter_config.json").is_file() or not run.is_file():
        return False
    try:
        return json.loads(run.read_text()).get("status") == "complete"
    except ValueError:
        return False


def _cfg_for(
    cfg: Config, output_dir: Path, learning_rate: float | None, grid: Sequence[float] | None
) -> Config:
    run_cfg = cfg.model_copy(deep=True)
    run_cfg.sft.output_dir = str(output_dir)
    if learning_rate is not None:
        run_cfg.sft.learning_rate = float(learning_rate)
    run_cfg.sft.lr_grid = [float(x) for x in grid] if grid else None
    return run_cfg


def _release_memory() -> None:
    """Collect what the caller has dropped (a trainer, a model) and hand cached GPU memory back."""
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover
        pass


def _train_one(
    cfg: Config,
    out: Path,
    *,
    resume: bool,
    learning_rate: float | None = None,
    callbacks: Sequence[Any] = (),
    progress: bool = True,
    keep_model: bool = False,
    label: str = "sft",
) -> tuple[Path, Any]:
    """Train one run into ``out``; returns (adapter dir, the trained ``Loaded`` when ``keep_model`` else None)."""
    from rich.console import Console

    from medrlvr_lite import data as data_mod
    from medrlvr_lite import models

    console = Console(stderr=True)
    adapter_dir = out / "adapter"
    if _is_complete(out):
        if resume:
            console.print(f"[dim]{label}: {out} is complete, nothing to do[/]")
            return adapter_dir, None
        raise SFTError(
            f"{out} already holds a finished SFT run; pass --resume to keep it, --overwrite to start over, "
            "or choose another --output-dir"
        )
    ckpt = last_checkpoint(out)
    if ckpt is not None and not resume:
        raise SFTError(
            f"{out} already holds checkpoints ({ckpt.name}); pass --resume to continue that run, --overwrite to "
            "start over, or choose another --output-dir"
        )

    records = data_mod.load_records(cfg.sft.dataset, cfg.data)
    if not records:
        raise SFTError(f"sft.dataset {cfg.sft.dataset!r}: no records to train on")
    out.mkdir(parents=True, exist_ok=True)
    run_cfg = _cfg_for(cfg, out, learning_rate, None)
    main = _is_main_process()
    if main:
        save_config(run_cfg, out / "config.yaml")

    # Unsloth patches transformers / TRL on import: it has to come first.
    backend = models.pick_backend(cfg.model.backend)
    if backend == "unsloth" and not models.is_tiny(cfg.model.name_or_path):
        models.import_unsloth()
    loaded = models.load_model(cfg.model, for_training=True)

    metrics_path = out / "metrics.jsonl"
    start_step = 0
    if ckpt is not None:
        start_step = checkpoint_step(ckpt)
        dropped = truncate_metrics(metrics_path, start_step) if main else 0
        console.print(
            f"{label}: resuming from {ckpt} (step {start_step})"
            + (f"; dropped {dropped} metrics lines after it" if dropped else "")
        )
    else:
        if metrics_path.exists() and main:
            metrics_path.unlink()
        if resume:
            console.print(f"[dim]{label}: no checkpoint in {out}; starting from scratch[/]")

    stopper = GracefulStopCallback()
    cbs: list[Any] = [JsonlMetricsCallback(metrics_path), stopper]
    if progress:
        cbs.append(RichProgressCallback(description=label))
    cbs += list(callbacks)
    trainer = build_trainer(cfg, loaded, records, out, learning_rate=run_cfg.sft.learning_rate, callbacks=cbs)

    previous = _read_json(out / "run.json") or {}
    sessions = list(previous.get("sessions", [])) if ckpt is not None else []
    started, t0 = _now(), time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(ckpt) if ckpt is not None else None)
    seconds = time.perf_counter() - t0
    state = trainer.state
    sessions.append(
        {
            "started": started,
            "finished": _now(),
            "seconds": round(seconds, 2),
            "from_step": start_step,
            "to_step": state.global_step,
            "status": "interrupted" if stopper.stopped else "complete",
        }
    )
    run = {
        "status": "interrupted" if stopper.stopped else "complete",
        "kind": "sft",
        "backend": loaded.backend,
        "model": loaded.info,
        "dataset": cfg.sft.dataset,
        "train_examples": len(trainer.train_dataset),
        # examples whose completion max_length cut off entirely carry no loss: TRL drops them
        "dropped_examples": len(records) - len(trainer.train_dataset),
        "prompt": cfg.sft.prompt,
        "target": cfg.sft.target,
        "global_step": state.global_step,
        "max_steps": state.max_steps,
        "epoch": state.epoch,
        "train_loss": (result.metrics or {}).get("train_loss") if result is not None else None,
        "settings_used": _used_settings(trainer),
        "resumed_from": str(ckpt) if ckpt is not None else None,
        "versions": _versions(),
        "git_commit": _git_commit(),
        "timing": {
            "load_seconds": loaded.info.get("load_seconds"),
            "train_seconds": round(seconds, 2),
            "train_seconds_total": round(sum(s["seconds"] for s in sessions), 2),
            "steps_per_second": round((state.global_step - start_step) / seconds, 4) if seconds > 0 else None,
        },
        "sessions": sessions,
    }
    if stopper.stopped:
        saved = last_checkpoint(out)
        if main:
            _write_json(out / "run.json", run)
        raise TrainingInterrupted(out, saved, stopper.signum or signal.SIGTERM)

    trainer.save_model(str(adapter_dir))  # rank 0 only under accelerate launch
    if main:
        loaded.tokenizer.save_pretrained(str(adapter_dir))
        _write_json(out / "run.json", run)
    console.print(f"{label}: {state.global_step} steps in {seconds:.1f}s -> {adapter_dir}")
    del trainer, result
    if not keep_model:
        loaded = None
    _release_memory()
    return adapter_dir, loaded


# --------------------------------------------------------------------------------------------------------------
# Learning-rate grid
# --------------------------------------------------------------------------------------------------------------


def lr_dirname(lr: float) -> str:
    """``lr_1e-05`` for 1e-5: the grid point's sub-directory."""
    return f"lr_{float(lr):g}"


def parse_lr_grid(text: str | Sequence[float] | None) -> list[float] | None:
    """``"1e-5,5e-6,1e-6"`` (or a list) -> [1e-05, 5e-06, 1e-06]; None / empty -> None."""
    if text is None:
        return None
    items = [x for x in re.split(r"[,\s]+", text.strip()) if x] if isinstance(text, str) else list(text)
    if not items:
        return None
    grid: list[float] = []
    for item in items:
        try:
            value = float(item)
        except (TypeError, ValueError):
            raise SFTError(f"--lr-grid: {item!r} is not a number (expected e.g. 1e-5,5e-6,1e-6)") from None
        if not (value > 0 and math.isfinite(value)):
            raise SFTError(f"--lr-grid: learning rates must be positive, got {item!r}")
        grid.append(value)
    if len({lr_dirname(v) for v in grid}) != len(grid):
        raise SFTError(f"--lr-grid: repeated learning rate in {items}")
    return grid


def pick_best(accuracies: dict[float, float], order: Sequence[float] | None = None) -> float:
    """The learning rate with the highest dev accuracy; ties go to the earlier one in ``order``."""
    if not accuracies:
        raise SFTError("no grid point was evaluated")
    order = list(order) if order is not None else list(accuracies)
    ranked = [lr for lr in order if lr in accuracies]
    return max(ranked, key=lambda lr: (accuracies[lr], -ranked.index(lr)))


def dev_eval(cfg: Config, adapter: Path, output_dir: Path, loaded: Any = None, progress: bool = True) -> dict:
    """Results of ``adapter`` on ``cfg.sft.dev_dataset`` (at most ``cfg.sft.dev_limit`` questions) through the
    evaluation harness, with the prompt the model was trained with."""
    from medrlvr_lite import evaluate as evaluate_mod

    spec = cfg.sft.dev_dataset
    eval_cfg = cfg.eval.model_copy(update={"prompt": cfg.sft.prompt})
    results = evaluate_mod.evaluate(
        cfg.model,
        eval_cfg,
        adapter=str(adapter),
        datasets=[spec],
        output_dir=str(output_dir),
        data_options=cfg.data,
        limit=cfg.sft.dev_limit,
        loaded=loaded,
        progress=progress,
    )
    return results[spec]


def _run_grid(
    cfg: Config, out: Path, grid: list[float], *, resume: bool, callbacks: Sequence[Any], progress: bool
) -> Path:
    from rich.console import Console

    console = Console(stderr=True)
    if not cfg.sft.dev_dataset:
        raise SFTError("--lr-grid needs a dev split to compare on: set sft.dev_dataset (e.g. medqa:dev@PATH)")
    existing = [p.name for p in out.glob("lr_*")] + [
        n for n in ("grid.json", "adapter") if (out / n).exists()
    ]
    if existing and not resume:
        raise SFTError(
            f"{out} already holds a learning-rate grid ({', '.join(sorted(existing))}); pass --resume to continue "
            "it (finished grid points are skipped), --overwrite to start over, or choose another --output-dir"
        )
    # read the dev split now, not after hours of training the first grid point
    from medrlvr_lite import data as data_mod

    dev_opts = cfg.data.model_copy(update={"limit": cfg.sft.dev_limit} if cfg.sft.dev_limit else {})
    if not data_mod.load_records(cfg.sft.dev_dataset, dev_opts):
        raise SFTError(f"sft.dev_dataset {cfg.sft.dev_dataset!r}: no records to compare the grid points on")
    out.mkdir(parents=True, exist_ok=True)
    save_config(_cfg_for(cfg, out, None, grid), out / "config.yaml")
    grid_path = out / "grid.json"
    accuracies: dict[float, float] = {}
    details: dict[float, dict] = {}
    for k, lr in enumerate(grid, 1):
        sub = out / lr_dirname(lr)
        label = f"sft lr={lr:g} ({k}/{len(grid)})"
        adapter, loaded = _train_one(
            cfg, sub, resume=resume, learning_rate=lr, callbacks=callbacks, progress=progress, keep_model=True,
            label=label,
        )  # fmt: skip
        res = dev_eval(cfg, adapter, sub / "dev_eval", loaded=loaded, progress=progress)
        loaded = None
        _release_memory()
        accuracies[lr] = float(res["accuracy"])
        details[lr] = res
        console.print(f"{label}: dev accuracy {100 * accuracies[lr]:.2f}% (n={res.get('n')})")
        _write_json(grid_path, {f"{x:g}": a for x, a in accuracies.items()})

    best = pick_best(accuracies, grid)
    best_dir = out / lr_dirname(best)
    final = out / "adapter"
    tmp = out / "adapter.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(best_dir / "adapter", tmp)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    r = details[best]
    _write_json(
        out / "best.json",
        {
            "learning_rate": best,
            "dev_accuracy": accuracies[best],
            "dev_bootstrap_sd": r.get("bootstrap_sd"),
            "dev_n": r.get("n"),
            "dev_dataset": cfg.sft.dev_dataset,
            "dev_limit": cfg.sft.dev_limit,
            "prompt": cfg.sft.prompt,
            "run_dir": str(best_dir),
            "adapter": str(final),
            "grid": {f"{x:g}": a for x, a in accuracies.items()},
            "tie_break": "earlier grid value",
        },
    )
    # the winner's run.json beside the adapter, so that `out` reads like a single run (study.py checks it)
    shutil.copyfile(best_dir / "run.json", out / "run.json")
    console.print(f"best learning rate {best:g}: dev accuracy {100 * accuracies[best]:.2f}% -> {final}")
    return final


# --------------------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------------------


def train_sft(
    cfg: Config,
    *,
    resume: bool = False,
    output_dir: str | Path | None = None,
    lr_grid: str | Sequence[float] | None = None,
    overwrite: bool = False,
    callbacks: Sequence[Any] = (),
    progress: bool = True,
) -> Path:
    """Fine-tune on ``cfg.sft.dataset`` and return the final adapter directory (``<output_dir>/adapter``).

    ``lr_grid`` (or ``cfg.sft.lr_grid``) trains once per learning rate and keeps the best on the dev split.
    ``resume`` continues from the last checkpoint (a finished run or grid point is kept as it is); ``overwrite``
    deletes what an earlier run left in the output directory and starts over. Raises
    :class:`TrainingInterrupted` after saving a checkpoint on SIGTERM / SIGINT. ``callbacks`` are extra
    ``transformers.TrainerCallback`` objects.
    """
    out = Path(output_dir if output_dir is not None else cfg.sft.output_dir)
    grid = parse_lr_grid(lr_grid if lr_grid is not None else cfg.sft.lr_grid)
    if overwrite and resume:
        raise SFTError("--resume and --overwrite exclude each other: continue the run, or start it over")
    if overwrite:
        clear_run_dir(out)
    if grid:
        return _run_grid(cfg, out, grid, resume=resume, callbacks=callbacks, progress=progress)
    adapter, _ = _train_one(cfg, out, resume=resume, callbacks=callbacks, progress=progress)
    return adapter


# --------------------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------------------


def _is_main_process() -> bool:
    """Rank 0 (or a single process): the one that writes the run's files under ``accelerate launch``."""
    return int(os.environ.get("RANK", "0")) == 0


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _git_commit() -> str | None:
    from medrlvr_lite.evaluate import git_commit

    return git_commit()


#: what an SFT run writes in its directory (``overwrite`` deletes these and nothing else)
RUN_FILES = (
    "config.yaml",
    "adapter",
    "adapter.tmp",
    "metrics.jsonl",
    "run.json",
    "grid.json",
    "best.json",
    "dev_eval",
)


def clear_run_dir(output_dir: str | Path) -> list[str]:
    """Delete the files an SFT run (or grid) wrote in ``output_dir``; other files are left alone."""
    d = Path(output_dir)
    if not d.is_dir():
        return []
    removed = []
    for p in sorted(d.iterdir()):
        if p.name in RUN_FILES or re.fullmatch(r"(checkpoint-\d+|lr_.+)", p.name):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
            removed.append(p.name)
    return removed


# --------------------------------------------------------------------------------------------------------------
# Trainer callbacks (generic: candidates to share with rlvr.py)
# --------------------------------------------------------------------------------------------------------------


def _noop(*args: Any, **kwargs: Any) -> None:
    return None


class _Callback:
    """A duck-typed ``transformers.TrainerCallback``: every ``on_*`` event not defined is a no-op.

    (Not a subclass, so that this module does not import transformers before Unsloth.)"""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("on_"):
            return _noop
        raise AttributeError(name)


class JsonlMetricsCallback(_Callback):
    """Append one JSON line per training log to ``path``: ``step`` first, then ``METRIC_KEYS`` in order, then any
    other numeric value the trainer logged. Evaluation logs and the end-of-training summary are left out."""

    def __init__(self, path: str | Path, require: str = "loss"):
        self.path = Path(path)
        self.require = require

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        if not logs or self.require not in logs or not getattr(state, "is_world_process_zero", True):
            return
        row: dict[str, Any] = {"step": int(state.global_step)}
        for key in METRIC_KEYS:
            if key in logs:
                row[key] = logs[key]
        for key, value in logs.items():
            if key not in row and isinstance(value, (int, float)) and not key.startswith(("train_", "eval_")):
                row[key] = value
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()


class GracefulStopCallback(_Callback):
    """On SIGTERM / SIGINT: finish the current optimizer step, log, save a checkpoint, stop training.

    Handlers are installed when training begins (main thread only) and the previous ones restored when it ends.
    A second SIGINT stops at once (KeyboardInterrupt)."""

    def __init__(self, signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT)):
        self.signals = tuple(signals)
        self.stopped = False
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        from rich.console import Console

        Console(stderr=True).print(
            f"[bold yellow]{signal.Signals(signum).name}[/]: saving a checkpoint after this step, then stopping "
            "(Ctrl-C again to stop at once)"
        )

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for s in self.signals:
            self._previous[s] = signal.signal(s, self._handle)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.signum is not None and not self.stopped:
            self.stopped = True
            control.should_log = True
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()


class RichProgressCallback(_Callback):
    """A rich progress bar over optimizer steps with the live loss (replaces the Trainer's tqdm bar)."""

    def __init__(self, description: str = "training"):
        self.description = description
        self._progress: Any = None
        self._task: Any = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not getattr(state, "is_world_process_zero", True):
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("lr {task.fields[lr]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task(
            self.description, total=state.max_steps, completed=state.global_step, loss="-", lr="-"
        )

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=state.global_step)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        if self._progress is not None and logs and "loss" in logs:
            lr = logs.get("learning_rate")
            self._progress.update(
                self._task,
                loss=f"{logs['loss']:.4f}",
                lr=f"{lr:.2e}" if isinstance(lr, (int, float)) else "-",
            )

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=state.global_step)
            self._progress.stop()
            self._progress = None
