"""RLVR: reinforcement learning from verifiable rewards with GRPO (TRL's ``GRPOTrainer``) and the MCQ verifier.

The algorithm: for each training question, sample ``rlvr.num_generations`` completions from the policy (a LoRA
adapter on the base model), score each with the verifier (``medrlvr_lite.verifier.verify``: -1 bad format,
+1 right letter, 0 wrong letter by default, the paper's reward), turn the scores into advantages relative to the
group (GRPO: no critic), and take a clipped policy-gradient step. Everything below the reward is TRL's; this
module wires data, prompts, model backend and verifier into it and records what happened.

    medrlvr-lite train rlvr --config configs/rlvr_qwen2.5-3b_medqa.yaml
    medrlvr-lite train rlvr --config configs/smoke.yaml --output-dir runs/smoke_rlvr    # CPU, a minute or two
    medrlvr-lite train rlvr --config configs/smoke.yaml --output-dir runs/smoke_rlvr --resume

    from medrlvr_lite.config import load_config
    from medrlvr_lite.rlvr import train_rlvr
    run_dir = train_rlvr(load_config("configs/smoke.yaml"), output_dir="runs/smoke_rlvr")

A run directory holds: ``config.yaml`` (resolved), ``checkpoint-N/`` (TRL), ``adapter/`` (final LoRA + tokenizer),
``metrics.jsonl`` (one line per logged optimizer step: reward, accuracy, format-valid rate, completion length,
KL, each verifier flag's rate, merged with what TRL logs), ``completions.jsonl`` (a sample of prompts,
completions and verdicts every ``rlvr.log_completions_every`` steps), ``training_args.json`` (the GRPOConfig
actually used, after Unsloth's overrides) and ``run.json`` (backend, versions, timing, dropped prompts, steps).

Resume (``--resume``) continues from the last ``checkpoint-N`` with the same step count; the JSONL logs are first
cut back to the checkpoint's step, so no line is duplicated or lost. Ctrl-C / SIGTERM stops at the end of the
current step and saves a checkpoint first (exit code 130 / 143). Out of GPU memory: the error names the knobs.

Backends (``medrlvr_lite.models``): ``unsloth`` is imported before ``trl`` so its patches apply, and generation
uses vLLM only when Unsloth's ``fast_inference`` is active (TRL refuses vLLM with a 4-bit PEFT model otherwise).
Stopping at ``</answer>``: with vLLM the sampling stops there (``stop``); transformers' ``generate`` would need the
tokenizer for ``stop_strings``, which TRL does not pass, so on that path the model learns to end with EOS (the
verifier accepts only whitespace after ``</answer>``).

``rlvr.format_warmup_steps`` > 0 first runs a short supervised warm-up on ``<think> ... </think><answer> X </answer>``
targets with a *random* letter X, which teaches a tiny random model the tags (a base 3B needs none) but no answers.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import signal
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medrlvr_lite.config import Config, RewardConfig, save_config
from medrlvr_lite.prompts import render_prompt
from medrlvr_lite.runs import checkpoint_step, find_last_checkpoint, read_jsonl, truncate_jsonl
from medrlvr_lite.runs import run_versions as _versions
from medrlvr_lite.runs import write_json as _write_json
from medrlvr_lite.verifier import verify

if TYPE_CHECKING:  # pragma: no cover
    from medrlvr_lite.data import MCQRecord

#: verifier flags whose rate is logged per step (``flag/<name>`` in metrics.jsonl).
FLAGS = ("text_before_think", "answer_in_think", "empty_think", "multiple_letters")
#: what TRL logs, renamed to our metrics.jsonl fields.
_TRL_FIELDS = {
    "reward": "reward",
    "completions/mean_length": "completion_length",
    "kl": "kl",
    "frac_reward_zero_std": "frac_reward_zero_std",
    "loss": "loss",
    "learning_rate": "learning_rate",
}


class RLVRError(RuntimeError):
    """A problem the user has to fix (output dir in use, no prompts left, out of memory); says what to do."""


class TrainingInterrupted(RuntimeError):
    """Training stopped on Ctrl-C / SIGTERM after saving a checkpoint; ``exit_code`` is 128 + the signal."""

    def __init__(self, checkpoint: Path | None, signum: int, run_dir: Path):
        self.checkpoint, self.signum, self.run_dir = checkpoint, signum, run_dir
        self.exit_code = 128 + signum
        where = f"checkpoint saved at {checkpoint}" if checkpoint else "no checkpoint could be saved"
        super().__init__(f"interrupted: {where}, rerun with --resume (--output-dir {run_dir})")


# --------------------------------------------------------------------------------------------------------------
# Data: records -> prompts for TRL


def build_dataset(records: Sequence[MCQRecord], tokenizer: Any, cfg: Config) -> tuple[Any, list[str]]:
    """A ``datasets.Dataset`` with ``prompt`` (rendered per ``rlvr.prompt`` / ``model.chat_template``), ``gold``,
    ``letters``, ``options`` (JSON) and ``id``; prompts longer than ``rlvr.max_prompt_length`` tokens are dropped.
    Returns (dataset, ids of dropped records). TRL passes the extra columns to the reward function."""
    from datasets import Dataset

    limit = cfg.rlvr.max_prompt_length
    rows, dropped = [], []
    for rec in records:
        prompt = render_prompt(rec, style=cfg.rlvr.prompt, tokenizer=tokenizer, chat=cfg.model.chat_template)
        if limit is not None and len(tokenizer(text=prompt)["input_ids"]) > limit:
            dropped.append(rec.id)
            continue
        rows.append(
            {
                "prompt": prompt,
                "gold": rec.gold,
                "letters": list(rec.options),
                "options": json.dumps(rec.options, ensure_ascii=False),
                "id": rec.id,
            }
        )
    if not rows:
        raise RLVRError(
            f"no training prompts left: all {len(records)} are longer than rlvr.max_prompt_length={limit} tokens "
            "(raise it, or set it to null to keep all)"
        )
    return Dataset.from_list(rows), dropped


# --------------------------------------------------------------------------------------------------------------
# Reward: the verifier, with every verdict kept for the logs


class VerdictLog:
    """Verdicts of the completions scored since the last log (filled by the reward function, read by callbacks)."""

    def __init__(self) -> None:
        self.pending: list[dict] = []

    def add(self, row: dict) -> None:
        self.pending.append(row)

    def drain(self) -> list[dict]:
        rows, self.pending = self.pending, []
        return rows


def _text(completion: Any) -> str:
    """A completion as text (TRL passes strings for text prompts, message lists for conversational ones)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    return "" if completion is None else str(completion)


def make_reward_func(reward: RewardConfig, log: VerdictLog | None = None):
    """The GRPO reward function: ``verify`` each completion against its row's gold letter and options."""

    def verifier(prompts, completions, gold, letters, options, id, **kwargs) -> list[float]:  # noqa: A002
        out = []
        for prompt, completion, g, lets, opts, pid in zip(
            prompts, completions, gold, letters, options, id, strict=True
        ):
            text = _text(completion)
            opts = json.loads(opts) if isinstance(opts, str) else opts
            verdict = verify(text, g, lets, opts, mode=reward.mode, rewards=reward)
            if log is not None:
                log.add(
                    {
                        "prompt_id": pid,
                        "prompt": _text(prompt),
                        "completion": text,
                        "gold": g,
                        **verdict.to_dict(),
                    }
                )
            out.append(float(verdict.reward))
        return out

    return verifier


def verdict_stats(rows: Sequence[dict]) -> dict[str, float | None]:
    """Per-step rates from verdict rows: accuracy, format_ok, completion_chars, think_chars, flag/<name>."""
    if not rows:
        return {}
    n = len(rows)
    stats: dict[str, float | None] = {
        "accuracy": sum(bool(r["correct"]) for r in rows) / n,
        "format_ok": sum(bool(r["format_ok"]) for r in rows) / n,
        "completion_chars": sum(r["completion_chars"] for r in rows) / n,
        "think_chars": sum(r["think_chars"] for r in rows) / n,
        "verifier_reward": sum(r["reward"] for r in rows) / n,
    }
    for flag in FLAGS:
        stats[f"flag/{flag}"] = sum(bool(r[flag]) for r in rows) / n
    return stats


# --------------------------------------------------------------------------------------------------------------
# JSONL logs, checkpoints, resume


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def summarize_metrics(path: str | Path) -> dict[str, Any]:
    """Steps, and the mean reward / accuracy over the first and last quarter of the steps in metrics.jsonl."""
    rows = [r for r in read_jsonl(path) if r.get("reward") is not None]
    rows.sort(key=lambda r: r["step"])
    out: dict[str, Any] = {"steps": len(rows), "last_step": rows[-1]["step"] if rows else 0}
    if len(rows) < 4:
        return out
    q = max(1, len(rows) // 4)
    for key in ("reward", "accuracy", "format_ok"):
        first = [r[key] for r in rows[:q] if r.get(key) is not None]
        last = [r[key] for r in rows[-q:] if r.get(key) is not None]
        if first and last:
            out[f"first_quarter_{key}"] = sum(first) / len(first)
            out[f"last_quarter_{key}"] = sum(last) / len(last)
    return out


# --------------------------------------------------------------------------------------------------------------
# Callbacks: logs, progress, graceful stop


def _callbacks():
    """The TrainerCallback subclasses (defined lazily: transformers is a heavy import)."""
    from transformers import TrainerCallback

    class RunLogger(TrainerCallback):
        """Writes metrics.jsonl (TRL's logs + the verifier's rates) and completions.jsonl at each log."""

        def __init__(self, run_dir: Path, verdicts: VerdictLog, every: int, n: int, start: float):
            self.metrics_path = run_dir / "metrics.jsonl"
            self.completions_path = run_dir / "completions.jsonl"
            self.verdicts, self.every, self.n, self.start = verdicts, max(1, every), n, start
            self.last: dict[str, Any] = {}

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = dict(logs or {})
            if "reward" not in logs:
                return  # the end-of-training summary (train_runtime, ...)
            rows = self.verdicts.drain()
            if not state.is_world_process_zero:
                return  # each process scores its own share; the main one's is logged
            step = int(state.global_step)
            line: dict[str, Any] = {"step": step}
            for src, dst in _TRL_FIELDS.items():
                line[dst] = _finite(logs.pop(src, None))
            line.update(verdict_stats(rows))
            line.pop("verifier_reward", None)
            line["elapsed_s"] = round(time.perf_counter() - self.start, 3)
            for key, value in logs.items():
                if key not in line and isinstance(value, (int, float)):
                    line[key] = _finite(value)
            with self.metrics_path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(line) + "\n")
            self.last = line
            due = step % self.every == 0 or step == 1 or step >= int(state.max_steps or 0) > 0
            if rows and self.n > 0 and due:  # also the first and last steps: the dynamics see both ends
                k = min(self.n, len(rows))
                picks = [rows[(i * len(rows)) // k] for i in range(k)]  # spread over the prompts
                with self.completions_path.open("a", encoding="utf-8") as f:
                    for row in picks:
                        f.write(json.dumps({"step": step, **row}, ensure_ascii=False) + "\n")

    class RichProgress(TrainerCallback):
        """A rich progress bar with the live reward, accuracy and format-valid rate."""

        def __init__(self, logger: RunLogger, enabled: bool = True):
            self.logger, self.enabled, self.progress, self.task = logger, enabled, None, None

        def on_train_begin(self, args, state, control, **kwargs):
            if not self.enabled or not state.is_world_process_zero:
                return
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("[bold]GRPO"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[live]}"),
                console=Console(stderr=True),
                transient=False,
            )
            self.progress.start()
            self.task = self.progress.add_task(
                "grpo", total=state.max_steps, completed=state.global_step, live=""
            )

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.progress is None or "reward" not in (logs or {}):
                return
            m = self.logger.last
            live = (
                f"reward {m.get('reward', float('nan')):+.3f}  acc {m.get('accuracy', float('nan')):.3f}  "
                f"format {m.get('format_ok', float('nan')):.2f}  len {m.get('completion_length') or 0:.0f} tok"
            )
            self.progress.update(self.task, completed=state.global_step, live=live)

        def on_step_end(self, args, state, control, **kwargs):
            if self.progress is not None:
                self.progress.update(self.task, completed=state.global_step)

        def on_train_end(self, args, state, control, **kwargs):
            if self.progress is not None:
                self.progress.stop()
                self.progress = None

    class GracefulStop(TrainerCallback):
        """On SIGINT / SIGTERM: finish the current step, save a checkpoint, stop. A second signal aborts."""

        def __init__(self):
            self.signum: int | None = None
            self._previous: dict[int, Any] = {}

        def _handler(self, signum, frame):
            if self.signum is not None:  # second signal: give up at once
                self.uninstall()
                raise KeyboardInterrupt
            self.signum = signum
            print(
                f"\n{signal.Signals(signum).name}: stopping after this step and saving a checkpoint "
                "(send it again to abort without saving)",
                file=sys.stderr,
                flush=True,
            )

        def install(self) -> None:
            for sig in (signal.SIGINT, signal.SIGTERM):
                # not the main thread (some notebook runners): no graceful stop, the default handlers stay
                with contextlib.suppress(ValueError):
                    self._previous[sig] = signal.signal(sig, self._handler)

        def uninstall(self) -> None:
            for sig, old in self._previous.items():
                signal.signal(sig, old)
            self._previous = {}

        def on_step_end(self, args, state, control, **kwargs):
            if self.signum is not None:
                control.should_save = True
                control.should_training_stop = True
            return control

    return RunLogger, RichProgress, GracefulStop


# --------------------------------------------------------------------------------------------------------------
# Format warm-up (tiny models only)


def format_warmup(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    letters: Sequence[Sequence[str]],
    *,
    steps: int,
    lr: float,
    seed: int = 0,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Supervised steps on ``prompt -> " <think> ... </think><answer> X </answer>" + EOS`` with X a random letter
    of the question (drawn afresh every time): teaches the tags and a uniform letter choice, never the answers.
    Trains the parameters that require grad (the LoRA); returns {"steps", "loss_first", "loss_last", "seconds"}."""
    import torch

    start = time.perf_counter()
    rng = random.Random(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    device = next(model.parameters()).device
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    prompt_ids = [tokenizer(text=p)["input_ids"] for p in prompts]
    was_training = model.training
    model.train()
    losses = []
    for _ in range(steps):
        idx = [rng.randrange(len(prompts)) for _ in range(batch_size)]
        seqs, labels = [], []
        for i in idx:
            target = f" <think> ... </think><answer> {rng.choice(list(letters[i]))} </answer>"
            t_ids = tokenizer(text=target, add_special_tokens=False)["input_ids"] + [eos]
            seqs.append(prompt_ids[i] + t_ids)
            labels.append([-100] * len(prompt_ids[i]) + t_ids)
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        lab = torch.full((len(seqs), width), -100, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, (s, lb) in enumerate(zip(seqs, labels, strict=True)):
            ids[row, : len(s)] = torch.tensor(s)
            lab[row, : len(lb)] = torch.tensor(lb)
            mask[row, : len(s)] = 1
        out = model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=lab.to(device))
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(out.loss.detach()))
    model.train(was_training)
    return {
        "steps": steps,
        "lr": lr,
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "seconds": round(time.perf_counter() - start, 2),
    }


# --------------------------------------------------------------------------------------------------------------
# Training


def _precision(loaded_info: dict, backend: str) -> dict[str, bool]:
    """TRL's GRPOConfig defaults to bf16, which fails on CPU and on T4-class GPUs: say it explicitly."""
    if backend == "cpu":
        return {"bf16": False, "fp16": False}
    dtype = str(loaded_info.get("dtype", ""))
    return {"bf16": dtype == "bfloat16", "fp16": dtype == "float16"}


def _warmup(args_cls: Any, ratio: float) -> dict[str, float]:
    """transformers 5 folded ``warmup_ratio`` into a float ``warmup_steps``; older releases (the ones Unsloth
    pins on Colab) still have ``warmup_ratio`` and an integer ``warmup_steps``."""
    import dataclasses

    fields = {f.name for f in dataclasses.fields(args_cls)}
    return {"warmup_ratio": ratio} if "warmup_ratio" in fields else {"warmup_steps": ratio}


def grpo_args(cfg: Config, run_dir: Path, backend: str, info: dict) -> Any:
    """The ``trl.GRPOConfig`` of ``cfg`` for this backend (precision, vLLM, checkpointing resolved)."""
    from trl import GRPOConfig

    r = cfg.rlvr
    use_vllm = bool(backend == "unsloth" and info.get("fast_inference"))
    generation_kwargs = {"stop": ["</answer>"], "include_stop_str_in_output": True} if use_vllm else None
    return GRPOConfig(
        output_dir=str(run_dir),
        num_generations=r.num_generations,
        per_device_train_batch_size=r.per_device_train_batch_size,
        gradient_accumulation_steps=r.gradient_accumulation_steps,
        max_completion_length=r.max_completion_length,
        temperature=r.temperature,
        top_p=r.top_p,
        beta=r.beta,
        epsilon=r.epsilon,
        epsilon_high=r.epsilon_high,
        loss_type=r.loss_type,
        scale_rewards=r.scale_rewards,
        learning_rate=r.learning_rate,
        lr_scheduler_type=r.lr_scheduler_type,
        **_warmup(GRPOConfig, r.warmup_ratio),
        weight_decay=r.weight_decay,
        max_grad_norm=r.max_grad_norm,
        optim=r.optim,
        num_train_epochs=r.num_train_epochs,
        max_steps=r.max_steps,
        seed=r.seed,
        data_seed=r.seed,
        logging_steps=r.logging_steps,
        save_strategy="steps",
        save_steps=r.save_steps,
        save_total_limit=r.save_total_limit,
        report_to=[] if r.report_to == "none" else [r.report_to],
        disable_tqdm=True,
        log_completions=False,
        remove_unused_columns=False,
        gradient_checkpointing=bool(info.get("gradient_checkpointing")) and backend == "hf",
        gradient_checkpointing_kwargs={"use_reentrant": False},
        use_cpu=backend == "cpu",
        use_vllm=use_vllm,
        vllm_gpu_memory_utilization=cfg.model.gpu_memory_utilization,
        generation_kwargs=generation_kwargs,
        **_precision(info, backend),
    )


def _prepare_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> Path | None:
    """Check the output dir; with ``resume`` return the last checkpoint (and cut the logs back to it)."""
    if resume:
        last = find_last_checkpoint(run_dir)
        step = checkpoint_step(last) if last else 0
        for name in ("metrics.jsonl", "completions.jsonl"):
            truncate_jsonl(run_dir / name, step)
        return last
    used = [
        p.name
        for p in (run_dir.iterdir() if run_dir.is_dir() else [])
        if p.name not in ("config.yaml", "preset.json")
    ]
    if used and not overwrite:
        raise RLVRError(
            f"output dir {run_dir} already holds a run ({', '.join(sorted(used)[:4])}...): pass --resume to "
            "continue it, --overwrite to start over, or choose another --output-dir"
        )
    if used:
        import shutil

        for name in used:
            target = run_dir / name
            shutil.rmtree(target) if target.is_dir() else target.unlink()
    return None


def train_rlvr(
    cfg: Config,
    *,
    resume: bool = False,
    output_dir: str | None = None,
    overwrite: bool = False,
    records: Sequence[MCQRecord] | None = None,
    progress: bool = True,
) -> Path:
    """Train a LoRA policy with GRPO and the verifier reward; return the run directory.

    ``records`` replaces ``cfg.rlvr.dataset`` (notebooks, tests); ``progress=False`` hides the progress bar.
    Raises :class:`TrainingInterrupted` after a graceful stop, :class:`RLVRError` for
    problems the user can fix."""
    from medrlvr_lite.models import import_unsloth, pick_backend_with_reason

    t0 = time.perf_counter()
    # transformers 5 renamed gradient_checkpointing; TRL and PEFT still use the old names: noise for the user
    warnings.filterwarnings(
        "ignore", message=r".*gradient_checkpointing.* is deprecated", category=FutureWarning
    )
    cfg = cfg.model_copy(deep=True)
    if output_dir is not None:
        cfg.rlvr.output_dir = str(output_dir)
    run_dir = Path(cfg.rlvr.output_dir).expanduser()
    backend, _ = pick_backend_with_reason(
        cfg.model.backend
    )  # a backend that cannot run fails before any write
    last_ckpt = _prepare_run_dir(run_dir, resume, overwrite)
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (resume and (run_dir / "config.yaml").is_file()):
        save_config(cfg, run_dir / "config.yaml")

    if backend == "unsloth":
        import_unsloth()  # before trl: Unsloth patches GRPOTrainer on import
    from medrlvr_lite.models import is_tiny, load_model

    if backend == "cpu" and is_tiny(cfg.model.name_or_path):
        import torch

        torch.set_num_threads(1)  # a model this small runs faster on one thread than on contended cores

    source = cfg.rlvr.dataset if records is None else f"{len(records)} given records"
    if records is None:
        from medrlvr_lite.data import load_records

        records = load_records(cfg.rlvr.dataset, cfg.data)
    warmup_records = list(records)  # the format warm-up sees every training question, GRPO maybe fewer
    if cfg.rlvr.max_train_prompts is not None:
        records = list(records)[: cfg.rlvr.max_train_prompts]
    from transformers import set_seed

    set_seed(cfg.rlvr.seed)  # the LoRA init and the warm-up draw from the global generators
    loaded = load_model(cfg.model, for_training=True)
    model, tokenizer = loaded.model, loaded.tokenizer
    dataset, dropped = build_dataset(records, tokenizer, cfg)
    _say(
        f"data {source}: {len(dataset)} prompts"
        + (f", {len(dropped)} dropped (longer than {cfg.rlvr.max_prompt_length} tokens)" if dropped else "")
    )

    run_info: dict[str, Any] = {
        "status": "running",
        "backend": loaded.backend,
        "model": loaded.info,
        "dataset": source,
        "n_prompts": len(dataset),
        "dropped_prompts": len(dropped),
        "dropped_ids": dropped[:50],
        "resumed_from": str(last_ckpt) if last_ckpt else None,
        "versions": _versions(),
    }
    if resume and last_ckpt is None:
        _say(f"--resume: no checkpoint in {run_dir} yet, starting from step 0")
    if cfg.rlvr.format_warmup_steps > 0 and last_ckpt is None:
        warm_ds = (
            dataset
            if len(warmup_records) == len(records)
            else build_dataset(warmup_records, tokenizer, cfg)[0]
        )
        warm = format_warmup(
            model,
            tokenizer,
            warm_ds["prompt"],
            warm_ds["letters"],
            steps=cfg.rlvr.format_warmup_steps,
            lr=cfg.rlvr.format_warmup_lr,
            seed=cfg.rlvr.seed,
        )
        run_info["format_warmup"] = warm
        _say(
            f"format warm-up: {warm['steps']} SFT steps on random-letter tag targets, loss "
            f"{warm['loss_first']:.2f} -> {warm['loss_last']:.2f} ({warm['seconds']} s)"
        )

    from trl import GRPOTrainer

    args = grpo_args(cfg, run_dir, loaded.backend, loaded.info)
    verdicts = VerdictLog()
    reward = make_reward_func(cfg.rlvr.reward, verdicts)
    trainer = GRPOTrainer(
        model=model, reward_funcs=[reward], args=args, train_dataset=dataset, processing_class=tokenizer
    )
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    RunLogger, RichProgress, GracefulStop = _callbacks()
    logger = RunLogger(run_dir, verdicts, cfg.rlvr.log_completions_every, cfg.rlvr.log_completions_n, t0)
    stopper = GracefulStop()
    for cb in (logger, RichProgress(logger, enabled=progress), stopper):
        trainer.add_callback(cb)
    _write_json(run_dir / "training_args.json", trainer.args.to_dict())
    run_info["use_vllm"] = bool(getattr(trainer.args, "use_vllm", False))
    run_info["stop_at_answer"] = bool(run_info["use_vllm"])
    _write_json(run_dir / "run.json", run_info)

    import torch

    t_train = time.perf_counter()
    stopper.install()
    try:
        trainer.train(resume_from_checkpoint=str(last_ckpt) if last_ckpt else None)
    except torch.cuda.OutOfMemoryError as exc:
        ckpt = find_last_checkpoint(run_dir)
        run_info.update(status="out_of_memory", error=str(exc)[:500])
        _write_json(run_dir / "run.json", run_info)
        raise RLVRError(
            "CUDA out of memory. Lower rlvr.per_device_train_batch_size (raise rlvr.gradient_accumulation_steps to "
            "keep the batch), rlvr.max_completion_length or rlvr.num_generations; with vLLM lower "
            "model.gpu_memory_utilization; keep model.gradient_checkpointing: true and model.load_in_4bit: true. "
            + (f"The last checkpoint is kept: {ckpt}; rerun with --resume." if ckpt else "No checkpoint yet.")
        ) from exc
    finally:
        stopper.uninstall()
    train_seconds = time.perf_counter() - t_train
    step = int(trainer.state.global_step)
    run_info.update(
        final_step=step,
        max_steps=int(trainer.state.max_steps),
        train_seconds=round(train_seconds, 2),
        total_seconds=round(time.perf_counter() - t0, 2),
        summary=summarize_metrics(run_dir / "metrics.jsonl"),
    )
    if stopper.signum is not None and step < trainer.state.max_steps:
        ckpt = find_last_checkpoint(run_dir)
        run_info.update(status="interrupted", checkpoint=str(ckpt) if ckpt else None)
        _write_json(run_dir / "run.json", run_info)
        raise TrainingInterrupted(ckpt, stopper.signum, run_dir)

    adapter_dir = run_dir / "adapter"
    trainer.model.save_pretrained(str(adapter_dir))
    tokenizer.save_pretrained(str(adapter_dir))
    run_info["status"] = "completed"
    run_info["adapter"] = str(adapter_dir)
    _write_json(run_dir / "run.json", run_info)
    s = run_info["summary"]
    if "first_quarter_reward" in s:
        _say(
            f"reward {s['first_quarter_reward']:+.3f} (first quarter of steps) -> {s['last_quarter_reward']:+.3f} "
            f"(last quarter); accuracy {s['first_quarter_accuracy']:.3f} -> {s['last_quarter_accuracy']:.3f}"
        )
    _say(f"{step} steps in {train_seconds:.1f} s; outputs in {run_dir}")
    return run_dir


def _say(message: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(message, highlight=False, markup=False, emoji=False, soft_wrap=True)
