"""Evaluation: generate answers to multiple-choice prompts, score them with the training verifier, report.

The paper's protocol: greedy decoding of one completion per question, the option letter read from
``<answer>`` by the same verifier that gives the RLVR reward, accuracy with the standard deviation over
1000 bootstrap resamples of the questions. Any model loads: a base model, base + LoRA adapter, a merged one.

    medrlvr-lite eval --model Qwen/Qwen2.5-3B --adapter runs/rlvr/adapter \\
        --dataset medqa:test --dataset mmlu_pro:health --prompt r1 --output-dir runs/eval/rlvr
    medrlvr-lite eval --model tiny --backend cpu --dataset smoke --limit 16

    from medrlvr_lite.evaluate import evaluate
    results = evaluate(cfg.model, cfg.eval, adapter="runs/rlvr/adapter", datasets=["medqa:test"])

Generation takes the backend's fastest path: vLLM through Unsloth's ``fast_inference`` (``model.fast_generate``,
the adapter served as a LoRA request) when the model was loaded that way, otherwise batched
``model.generate`` with left padding, prompts sorted by length, stopping at ``</answer>`` or end of sequence.

Scoring. ``r1`` completions go through ``verifier.verify``, exactly as the RLVR reward does (format, letter,
reward, hacking flags). The ``direct`` and ``cot`` prompts ask for no tags, so their format is not required:
the letter is read with the verifier's letter rules (``verifier.extract_letter``) from the first non-empty
line (direct) or from the first "the answer is X" statement (cot); ``correct`` iff that letter is the gold one,
``format_ok`` means "a letter could be read", the reward is 1.0 / 0.0 and there are no flags.

Outputs, in the eval directory (one sub-directory per dataset, slug = spec with ':' -> '_' and no '@path'):

    <out>/<slug>/predictions.jsonl  one line per (question, sample): id, sample, prompt, completion, gold,
                                    options, letter, correct, format_ok, reward, flags, completion_chars, subject
    <out>/<slug>/run.json           the settings the predictions were made with (checked on resume)
    <out>/<slug>/results.json       accuracy, bootstrap_sd, ci95, format_failure_rate, mean_completion_chars,
                                    per_subject, n, model, adapter, dataset, prompt, decoding, versions, git_commit
    <out>/results.md                one Markdown table over every dataset evaluated in <out>

Predictions are appended (and flushed) as each batch finishes; a rerun with the same settings skips the
(id, sample) pairs already written, so an interrupted evaluation resumes and no prediction is written twice.
With ``num_samples > 1`` the accuracy is the mean over questions of each question's mean over samples, and
the bootstrap resamples questions.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medrlvr_lite.config import DataOptions, EvalStageConfig, ModelConfig, RewardConfig

STOP = ("</answer>",)
#: stop strings per prompt style: r1 stops after its answer tag; a base model answering a cot / direct prompt
#: goes on to write the next "Question:", which is cut.
STOPS = {"r1": STOP, "cot": ("\nQuestion:",), "direct": ("\nQuestion:",)}
_COT_ANSWER = re.compile(r"answer\s+is\b|answer\s*:", re.IGNORECASE)
FLAG_KEYS = ("text_before_think", "answer_in_think", "empty_think", "multiple_letters", "think_chars")


class EvalError(ValueError):
    """An evaluation the user has to fix (mismatched resume, bad predictions file); the message says how."""


# --------------------------------------------------------------------------------------------------------------
# Pure scoring
# --------------------------------------------------------------------------------------------------------------


def bootstrap_means(values: Sequence[float] | np.ndarray, resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """Means of ``resamples`` bootstrap resamples (with replacement, same size) of ``values``."""
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        return np.zeros(0)
    rng = np.random.default_rng(seed)
    out = np.empty(resamples)
    chunk = max(1, 2_000_000 // x.size)  # bound memory: at most ~2M indices at a time
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        idx = rng.integers(0, x.size, size=(stop - start, x.size))
        out[start:stop] = x[idx].mean(axis=1)
    return out


def bootstrap_sd(correct: Sequence[float] | np.ndarray, resamples: int = 1000, seed: int = 0) -> float:
    """Standard deviation of the accuracy over ``resamples`` bootstrap resamples (as the paper reports it).

    ``correct`` holds one value per question: 0/1, or the fraction of correct samples. For 0/1 values with
    mean p over n questions it approaches the analytical sqrt(p (1 - p) / n).
    """
    means = bootstrap_means(correct, resamples, seed)
    return float(means.std(ddof=1)) if means.size > 1 else 0.0


def ci95(correct: Sequence[float] | np.ndarray, resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval (2.5th and 97.5th percentiles of the resampled accuracies)."""
    means = bootstrap_means(correct, resamples, seed)
    if means.size == 0:
        return (0.0, 0.0)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return (float(lo), float(hi))


def _group_by_question(rows: Iterable[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(str(row["id"]), []).append(row)
    return groups


def summarize(rows: Iterable[dict], *, resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Accuracy and friends from prediction rows (``id``, ``correct``, ``format_ok``, ``completion``, ``subject``).

    Rows sharing an id are samples of one question: its score is the mean of their ``correct``; accuracy is
    the mean over questions and the bootstrap resamples questions (in the order they first appear).
    """
    rows = list(rows)
    groups = _group_by_question(rows)
    per_q = np.array([np.mean([bool(r["correct"]) for r in g]) for g in groups.values()], dtype=np.float64)
    n = len(groups)
    subjects: dict[str, list[float]] = {}
    for score, g in zip(per_q, groups.values(), strict=True):
        subject = g[0].get("subject")
        if subject is not None:
            subjects.setdefault(str(subject), []).append(float(score))
    chars = [
        r["completion_chars"] if "completion_chars" in r else len(r.get("completion") or "") for r in rows
    ]
    lo, hi = ci95(per_q, resamples, seed)
    return {
        "accuracy": float(per_q.mean()) if n else 0.0,
        "bootstrap_sd": bootstrap_sd(per_q, resamples, seed),
        "ci95": [lo, hi],
        "format_failure_rate": float(np.mean([not r.get("format_ok", True) for r in rows])) if rows else 0.0,
        "mean_completion_chars": float(np.mean(chars)) if rows else 0.0,
        "per_subject": {
            s: {"accuracy": float(np.mean(v)), "n": len(v)}
            for s, v in sorted(subjects.items(), key=lambda kv: kv[0])
        },
        "n": n,
        "num_predictions": len(rows),
        "num_samples": max((len(g) for g in groups.values()), default=0),
        "bootstrap_resamples": resamples,
    }


def _first_line(text: str) -> str:
    return next((line for line in text.splitlines() if line.strip()), "")


def cot_answer_text(completion: str) -> str:
    """The part of a chain-of-thought completion that states the answer: from the first "answer is" to the end
    of that line (a base model that keeps writing after its answer states no other); else the content of an
    ``<answer>`` tag; else ""."""
    m = _COT_ANSWER.search(completion)
    if m:
        rest = completion[m.start() :]
        return rest.split("\n", 1)[0][:300]
    a, b = completion.find("<answer>"), completion.find("</answer>")
    if 0 <= a < b:
        return completion[a + len("<answer>") : b]
    return ""


def score_completion(
    completion: str,
    gold: str,
    letters: Sequence[str],
    options: dict[str, str] | None,
    *,
    prompt: str = "r1",
    reward: RewardConfig | None = None,
) -> dict[str, Any]:
    """Score one completion: {letter, correct, format_ok, reward, flags, completion_chars}.

    - ``r1``: the verifier (format + letter + reward + hacking flags), exactly as in training.
    - ``direct``: no format required; the letter is read by the verifier's letter rules
      (``verifier.extract_letter``) from the first non-empty line; ``format_ok`` = a letter was read.
    - ``cot`` (its prompt asks for "Therefore, the answer is X.", no tags): the letter is read by the same rules
      from the first "answer is ..." statement (:func:`cot_answer_text`); ``format_ok`` = a letter was read.

    ``correct`` iff the letter is the gold one; for direct / cot the reward is ``reward.correct`` / ``reward.wrong``
    and there are no flags.
    """
    from medrlvr_lite import verifier

    reward = reward or RewardConfig()
    letters = list(letters)
    if prompt in ("direct", "cot"):
        text = _first_line(completion) if prompt == "direct" else cot_answer_text(completion)
        letter = verifier.extract_letter(text, letters, options) if text else None
        correct = letter is not None and letter == gold
        return {
            "letter": letter,
            "correct": bool(correct),
            "format_ok": letter is not None,
            "reward": float(reward.correct if correct else reward.wrong),
            "flags": {},
            "completion_chars": len(completion),
        }
    verdict = verifier.verify(
        completion, gold, letters=letters, options=options, mode=reward.mode, rewards=reward
    )
    d = verdict.to_dict()
    return {
        "letter": d.get("letter"),
        "correct": bool(d.get("correct")),
        "format_ok": bool(d.get("format_ok")),
        "reward": float(d.get("reward", 0.0)),
        "flags": {k: d[k] for k in FLAG_KEYS if k in d},
        "completion_chars": int(d.get("completion_chars", len(completion))),
    }


def read_predictions(path: str | Path, *, repair: bool = False) -> list[dict]:
    """Rows of a predictions.jsonl. A last line cut short by an interruption is dropped (and, with
    ``repair``, removed from the file so that appending continues on a clean line)."""
    p = Path(path)
    if not p.exists():
        return []
    raw = p.read_bytes()
    if raw and not raw.endswith(b"\n"):
        cut = raw.rfind(b"\n") + 1
        raw = raw[:cut]
        if repair:
            with open(p, "r+b") as f:
                f.truncate(cut)
    rows = []
    for lineno, line in enumerate(raw.decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise EvalError(f"{p}:{lineno}: not valid JSON ({exc.msg}); fix or delete that line") from None
    return rows


def score_predictions(
    path: str | Path,
    *,
    rescore: bool = True,
    prompt: str | None = None,
    reward: RewardConfig | None = None,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Results of a fixed predictions.jsonl (no model). With ``rescore`` each completion is scored again by
    the verifier (needs ``completion`` and ``gold``; letters from ``options`` or A-D...; prompt style from the
    row's ``prompt_style`` unless ``prompt`` is given); without it the stored ``correct`` is used."""
    p = Path(path)
    rows = read_predictions(p)
    if not rows:
        raise EvalError(f"{p}: no predictions in this file")
    for lineno, row in enumerate(rows, 1):
        if "id" not in row:
            raise EvalError(f"{p}: row {lineno} has no 'id'")
        if rescore:
            if "completion" not in row or "gold" not in row:
                raise EvalError(f"{p}: row {lineno} needs 'completion' and 'gold' to be re-scored")
            options = row.get("options") or None
            letters = list(options) if options else [chr(ord("A") + i) for i in range(10)]
            style = prompt or row.get("prompt_style") or "r1"
            row.update(
                score_completion(
                    row["completion"], row["gold"], letters, options, prompt=style, reward=reward
                )
            )
            row["prompt_style"] = style
        elif "correct" not in row:
            raise EvalError(f"{p}: row {lineno} has no 'correct' (score it with rescore=True)")
    return summarize(rows, resamples=resamples, seed=seed)


def evaluate_predictions_file(
    path: str | Path,
    output_dir: str | Path | None = None,
    *,
    rescore: bool = True,
    prompt: str | None = None,
    reward: RewardConfig | None = None,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Re-score a predictions.jsonl and write ``results.json`` (beside it, or in ``output_dir``) and the
    ``results.md`` table one level up. Keeps the model/dataset metadata of an existing results.json."""
    p = Path(path)
    results = score_predictions(
        p, rescore=rescore, prompt=prompt, reward=reward, resamples=resamples, seed=seed
    )
    out = Path(output_dir) if output_dir is not None else p.parent
    out.mkdir(parents=True, exist_ok=True)
    previous = out / "results.json"
    meta: dict[str, Any] = {}
    if previous.exists():
        old = json.loads(previous.read_text())
        meta = {k: old[k] for k in _META_KEYS if k in old}
    results = {**results, **meta, "dataset": meta.get("dataset", out.name), "predictions": str(p)}
    results.setdefault("versions", package_versions())
    results.setdefault("git_commit", git_commit())
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    write_results_table(out.parent)
    return results


_META_KEYS = (
    "model",
    "adapter",
    "dataset",
    "slug",
    "prompt",
    "decoding",
    "versions",
    "git_commit",
    "backend",
)


# --------------------------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------------------------


def slugify(spec: str) -> str:
    """Directory name of a dataset spec: ':' -> '_', no '@path' (``medqa:test@x.jsonl`` -> ``medqa_test``)."""
    name = spec.split("@", 1)[0].strip().replace(":", "_")
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "dataset"


def format_table(results: Sequence[dict]) -> str:
    """Markdown table: dataset, n, accuracy % ± bootstrap SD, 95% CI, format failures (a model column when
    the results come from more than one model / adapter / prompt)."""
    keys = {(r.get("model"), r.get("adapter"), r.get("prompt")) for r in results}
    with_model = len(keys) > 1
    head = ["dataset", "n", "accuracy % (± SD)", "95% CI", "format failures"]
    if with_model:
        head = ["model", "adapter", "prompt", *head]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        lo, hi = r.get("ci95") or (0.0, 0.0)
        cells = [
            str(r.get("dataset")),
            str(r.get("n")),
            f"{100 * r['accuracy']:.2f} ± {100 * r['bootstrap_sd']:.2f}",
            f"[{100 * lo:.2f}, {100 * hi:.2f}]",
            f"{100 * r['format_failure_rate']:.1f}%",
        ]
        if with_model:
            cells = [str(r.get("model")), str(r.get("adapter") or "-"), str(r.get("prompt")), *cells]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_results_table(eval_dir: str | Path) -> Path:
    """(Re)write ``<eval_dir>/results.md`` from every ``<eval_dir>/*/results.json``."""
    d = Path(eval_dir)
    results = [json.loads(p.read_text()) for p in sorted(d.glob("*/results.json"))]
    body = (
        "# Evaluation\n\nAccuracy over questions, ± SD over bootstrap resamples, 95% percentile interval.\n\n"
    )
    body += format_table(results) if results else "(no results yet)\n"
    out = d / "results.md"
    out.write_text(body)
    return out


def package_versions() -> dict[str, str | None]:
    """Versions of the packages that shape the numbers (None: not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str | None] = {}
    for name in ("torch", "transformers", "trl", "peft", "medrlvr-lite", "vllm", "unsloth"):
        try:
            found[name.replace("-", "_")] = version(name)
        except PackageNotFoundError:
            found[name.replace("-", "_")] = None
    return found


def git_commit() -> str | None:
    """``git rev-parse HEAD`` of the repository holding this package, or None (installed wheel, no commits)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and len(commit) == 40 else None


# --------------------------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------------------------


def cut_at_stop(text: str, stop: Sequence[str] = STOP) -> str:
    """Cut ``text`` right after the first stop string it contains (the stop string is kept)."""
    ends = [text.index(s) + len(s) for s in stop if s and s in text]
    return text[: min(ends)] if ends else text


def uses_vllm(model: Any) -> bool:
    """True when the model was loaded by Unsloth with ``fast_inference`` (a vLLM engine behind fast_generate)."""
    return getattr(model, "vllm_engine", None) is not None and hasattr(model, "fast_generate")


def _progress(total: int, description: str, enabled: bool = True):
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
    )
    return progress


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    ids: list[int] = []
    for source in (
        getattr(getattr(model, "generation_config", None), "eos_token_id", None),
        tokenizer.eos_token_id,
    ):
        if source is None:
            continue
        for i in source if isinstance(source, (list, tuple)) else [source]:
            if i is not None and int(i) not in ids:
                ids.append(int(i))
    return ids


def _stop_criteria(tokenizer: Any, stop: Sequence[str]) -> Any:
    """transformers' ``StopStringCriteria`` for ``stop`` (building it scans the vocabulary: ~1 s for Qwen's,
    so :func:`generate` builds it once, not per batch)."""
    from transformers import StoppingCriteriaList, StopStringCriteria

    stop = [s for s in stop if s]
    return StoppingCriteriaList([StopStringCriteria(tokenizer, stop)]) if stop else None


def _hf_generate_batch(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    *,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    num_samples: int,
    stop: Sequence[str],
    stopping_criteria: Any = None,
) -> list[list[str]]:
    """One batch through ``model.generate``: left padding, greedy when temperature == 0, stop strings
    (``stopping_criteria`` built once by the caller; else from ``stop``)."""
    import torch
    from transformers import GenerationConfig

    device = next(model.parameters()).device
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        enc = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    finally:
        tokenizer.padding_side = old_side
    eos = _eos_ids(model, tokenizer)
    sampling = temperature > 0
    gen_cfg = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=sampling,
        temperature=temperature if sampling else 1.0,
        top_p=top_p if sampling else 1.0,
        top_k=0 if sampling else None,
        repetition_penalty=1.0,
        num_return_sequences=num_samples,
        pad_token_id=tokenizer.pad_token_id
        if tokenizer.pad_token_id is not None
        else (eos[0] if eos else None),
        eos_token_id=eos or None,
    )
    if stopping_criteria is None:
        stopping_criteria = _stop_criteria(tokenizer, stop)
    with torch.inference_mode():
        out = model.generate(**enc, generation_config=gen_cfg, stopping_criteria=stopping_criteria)
    new = out[:, enc["input_ids"].shape[1] :].tolist()
    eos_set = set(eos)
    texts = []
    for ids in new:
        cut = next((i for i, t in enumerate(ids) if t in eos_set), len(ids))
        texts.append(cut_at_stop(tokenizer.decode(ids[:cut], skip_special_tokens=True), stop))
    return [texts[i * num_samples : (i + 1) * num_samples] for i in range(len(prompts))]


def _vllm_generate_batch(
    model: Any,
    prompts: list[str],
    *,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    num_samples: int,
    seed: int,
    stop: Sequence[str],
    lora_request: Any,
) -> list[list[str]]:
    """One chunk through Unsloth's vLLM engine (``model.fast_generate``); the stop string is kept."""
    from vllm import SamplingParams

    params = SamplingParams(
        n=num_samples,
        temperature=temperature,
        top_p=top_p if temperature > 0 else 1.0,
        max_tokens=max_new_tokens,
        stop=[s for s in stop if s] or None,
        include_stop_str_in_output=True,
        seed=seed if temperature > 0 else None,
    )
    outs = model.fast_generate(prompts, sampling_params=params, lora_request=lora_request, use_tqdm=False)
    return [[cut_at_stop(o.text, stop) for o in out.outputs] for out in outs]


def _vllm_lora_request(model: Any, adapter: str | None, tmp: str) -> Any:
    """The LoRA request for vLLM: the adapter directory, or the in-memory adapter of a PEFT model saved first."""
    if adapter:
        return model.load_lora(str(adapter))
    if getattr(model, "peft_config", None) and hasattr(model, "save_lora"):
        model.save_lora(tmp)
        return model.load_lora(tmp)
    return None


def generate(
    loaded: Any,
    prompts: list[str],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    num_samples: int = 1,
    seed: int = 0,
    batch_size: int = 32,
    stop: Sequence[str] = STOP,
    adapter: str | None = None,
    on_batch: Callable[[list[int], list[list[str]]], None] | None = None,
    progress: bool = True,
) -> list[list[str]]:
    """Completions for ``prompts``: ``num_samples`` per prompt, each without the prompt and cut after the first
    stop string. ``loaded`` has ``.model`` and ``.tokenizer`` (``models.Loaded``).

    vLLM (Unsloth ``fast_inference``) when the model has an engine, else batched HF ``generate`` with left
    padding. Prompts are sorted by token length (longest first) for batching, the result is in input order;
    ``on_batch(indices, completions)`` is called as each batch finishes (indices into ``prompts``).
    """
    if num_samples < 1:
        raise EvalError(f"num_samples must be >= 1, got {num_samples}")
    if temperature == 0 and num_samples > 1:
        raise EvalError("num_samples > 1 needs sampling: set a temperature > 0")
    model, tokenizer = loaded.model, loaded.tokenizer
    results: list[list[str] | None] = [None] * len(prompts)
    if not prompts:
        return []
    lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
    vllm = uses_vllm(model)
    chunk = max(batch_size * 8, 256) if vllm else max(1, batch_size)
    batches = [order[i : i + chunk] for i in range(0, len(order), chunk)]

    import torch

    restore_training = None
    cuda = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with (
        torch.random.fork_rng(devices=cuda),  # seed sampling without touching the caller's RNG state
        tempfile.TemporaryDirectory(prefix="medrlvr_lora_") as tmp,
        _progress(len(prompts), "generating", progress) as bar,
    ):
        torch.manual_seed(seed)
        task = bar.add_task("generating", total=len(prompts))
        if vllm:
            lora_request = _vllm_lora_request(model, adapter, tmp)
        else:
            lora_request = None
            criteria = _stop_criteria(tokenizer, stop)
            restore_training = model.training
            if getattr(loaded, "backend", None) == "unsloth":
                from unsloth import FastLanguageModel  # noqa: I001

                FastLanguageModel.for_inference(model)
            else:
                model.eval()
        try:
            for batch in batches:
                batch_prompts = [prompts[i] for i in batch]
                if vllm:
                    outs = _vllm_generate_batch(
                        model, batch_prompts, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                        num_samples=num_samples, seed=seed, stop=stop, lora_request=lora_request,
                    )  # fmt: skip
                else:
                    outs = _hf_generate_batch(
                        model, tokenizer, batch_prompts, max_new_tokens=max_new_tokens, temperature=temperature,
                        top_p=top_p, num_samples=num_samples, stop=stop, stopping_criteria=criteria,
                    )  # fmt: skip
                for i, o in zip(batch, outs, strict=True):
                    results[i] = o
                if on_batch is not None:
                    on_batch(list(batch), outs)
                bar.advance(task, len(batch))
        finally:
            if restore_training:
                if getattr(loaded, "backend", None) == "unsloth":
                    from unsloth import FastLanguageModel

                    FastLanguageModel.for_training(model)
                else:
                    model.train()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return [r if r is not None else [] for r in results]


# --------------------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------------------


def _run_settings(
    model_cfg: ModelConfig, eval_cfg: EvalStageConfig, adapter: str | None, spec: str, opts: DataOptions
) -> dict:
    """What the predictions depend on; a resume must match it."""
    direct = eval_cfg.prompt == "direct"
    return {
        "model": model_cfg.name_or_path,
        "adapter": str(adapter) if adapter else None,
        "chat_template": model_cfg.chat_template,
        "dataset": spec,
        "prompt": eval_cfg.prompt,
        "max_new_tokens": eval_cfg.direct_max_new_tokens if direct else eval_cfg.max_new_tokens,
        "temperature": eval_cfg.temperature,
        "top_p": eval_cfg.top_p if eval_cfg.temperature > 0 else 1.0,
        "seed": eval_cfg.seed if eval_cfg.temperature > 0 else None,
        "data_options": opts.model_dump(exclude={"limit"}),
    }


def _check_resume(run_file: Path, settings: dict) -> None:
    if not run_file.exists():
        return
    old = json.loads(run_file.read_text())
    diff = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v}
    if diff:
        what = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
        raise EvalError(
            f"{run_file.parent} holds predictions made with other settings ({what}); "
            "choose another --output-dir or delete that folder to start over"
        )


def evaluate(
    model_cfg: ModelConfig,
    eval_cfg: EvalStageConfig,
    *,
    adapter: str | None = None,
    datasets: Sequence[str] | None = None,
    output_dir: str | Path | None = None,
    data_options: DataOptions | None = None,
    limit: int | None = None,
    loaded: Any = None,
    progress: bool = True,
) -> dict[str, dict]:
    """Evaluate one model on each dataset spec; returns {spec: results} and writes the files described above.

    The model is loaded once (``models.load_model(model_cfg, adapter=adapter, for_training=False)``) and only
    if some prediction is missing; pass ``loaded`` to reuse a model already in memory.
    """
    from medrlvr_lite import data as data_mod
    from medrlvr_lite import prompts as prompts_mod

    if eval_cfg.num_samples < 1 or (eval_cfg.num_samples > 1 and eval_cfg.temperature == 0):
        raise EvalError(
            f"eval.num_samples={eval_cfg.num_samples} needs sampling: set a temperature > 0 (or num_samples 1)"
        )
    specs = list(datasets if datasets is not None else eval_cfg.datasets)
    if not specs:
        raise EvalError("no dataset to evaluate: give --dataset SPEC (see `medrlvr-lite data list`)")
    slugs = [slugify(s) for s in specs]
    if len(set(slugs)) != len(slugs):
        raise EvalError(
            f"two datasets map to the same folder name: {specs} -> {slugs}; evaluate them separately"
        )
    out_dir = Path(output_dir if output_dir is not None else eval_cfg.output_dir)
    opts = data_options.model_copy() if data_options is not None else DataOptions()
    if limit is not None:
        opts.limit = limit
    direct = eval_cfg.prompt == "direct"
    max_new = eval_cfg.direct_max_new_tokens if direct else eval_cfg.max_new_tokens
    stop = STOPS[eval_cfg.prompt]
    num_samples = eval_cfg.num_samples
    decoding = {
        "max_new_tokens": max_new,
        "temperature": eval_cfg.temperature,
        "top_p": eval_cfg.top_p,
        "num_samples": num_samples,
        "seed": eval_cfg.seed,
        "batch_size": eval_cfg.batch_size,
        "stop": list(stop),
        "greedy": eval_cfg.temperature == 0,
    }
    all_results: dict[str, dict] = {}

    for spec, slug in zip(specs, slugs, strict=True):
        records = data_mod.load_records(spec, opts)
        ids = [str(r.id) for r in records]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise EvalError(f"{spec}: question id {dup!r} appears more than once; ids must be unique")
        ds_dir = out_dir / slug
        ds_dir.mkdir(parents=True, exist_ok=True)
        pred_path = ds_dir / "predictions.jsonl"
        run_file = ds_dir / "run.json"
        settings = _run_settings(model_cfg, eval_cfg, adapter, spec, opts)
        _check_resume(run_file, settings)
        run_file.write_text(json.dumps(settings, indent=2) + "\n")

        done = {(str(r["id"]), int(r.get("sample", 0))) for r in read_predictions(pred_path, repair=True)}
        todo = [r for r in records if any((str(r.id), s) not in done for s in range(num_samples))]
        gen_seconds = 0.0
        if todo:
            if loaded is None:
                from medrlvr_lite.models import load_model

                loaded = load_model(model_cfg, adapter=adapter, for_training=False)
            texts = [
                prompts_mod.render_prompt(
                    r, style=eval_cfg.prompt, tokenizer=loaded.tokenizer, chat=model_cfg.chat_template
                )
                for r in todo
            ]
            with open(pred_path, "a", encoding="utf-8") as f:

                def write(
                    indices: list[int], outs: list[list[str]], f=f, todo=todo, texts=texts, done=done
                ) -> None:
                    for i, samples in zip(indices, outs, strict=True):
                        rec = todo[i]
                        for s, completion in enumerate(samples):
                            if (str(rec.id), s) in done:
                                continue
                            scored = score_completion(
                                completion, rec.gold, rec.letters, rec.options, prompt=eval_cfg.prompt,
                                reward=eval_cfg.reward,
                            )  # fmt: skip
                            row = {
                                "id": str(rec.id),
                                "sample": s,
                                "prompt_style": eval_cfg.prompt,
                                "prompt": texts[i],
                                "completion": completion,
                                "gold": rec.gold,
                                "options": rec.options,
                                **scored,
                                "subject": rec.subject,
                            }
                            f.write(json.dumps(row, ensure_ascii=False) + "\n")
                            done.add((str(rec.id), s))
                    f.flush()
                    os.fsync(f.fileno())

                start = time.perf_counter()
                generate(
                    loaded, texts, max_new_tokens=max_new, temperature=eval_cfg.temperature, top_p=eval_cfg.top_p,
                    num_samples=num_samples, seed=eval_cfg.seed, batch_size=eval_cfg.batch_size, stop=stop,
                    adapter=adapter, on_batch=write, progress=progress,
                )  # fmt: skip
                gen_seconds = time.perf_counter() - start

        # score in dataset order (the bootstrap is then independent of batch order and resumes)
        wanted = {r.id: k for k, r in enumerate(records)}
        rows = [
            r
            for r in read_predictions(pred_path)
            if str(r["id"]) in wanted and int(r.get("sample", 0)) < num_samples
        ]
        rows.sort(key=lambda r: (wanted[str(r["id"])], int(r.get("sample", 0))))
        results = summarize(rows, resamples=eval_cfg.bootstrap_resamples, seed=0)
        results.update(
            {
                "model": model_cfg.name_or_path,
                "adapter": str(adapter) if adapter else None,
                "dataset": spec,
                "slug": slug,
                "prompt": eval_cfg.prompt,
                "chat_template": model_cfg.chat_template,
                "backend": getattr(loaded, "backend", None) if loaded is not None else None,
                "decoding": decoding,
                "reward": eval_cfg.reward.model_dump(),
                "generation": {
                    "generated_questions": len(todo),
                    "seconds": round(gen_seconds, 3),
                    "questions_per_second": round(len(todo) / gen_seconds, 3) if gen_seconds > 0 else None,
                },
                "versions": package_versions(),
                "git_commit": git_commit(),
                "predictions": str(pred_path),
            }
        )
        (ds_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        all_results[spec] = results

    write_results_table(out_dir)
    return all_results
