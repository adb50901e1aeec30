"""RLVR (GRPO) on the real TRL trainer, on CPU with the tiny model: it learns, a wrong-signed reward does not,
resume after SIGTERM continues with every step logged exactly once, and the run directory holds what it should."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from medrlvr_lite import rlvr
from medrlvr_lite.config import load_config
from medrlvr_lite.data import load_records

ROOT = Path(__file__).resolve().parents[1]

METRIC_FIELDS = {
    "step", "reward", "accuracy", "format_ok", "completion_length", "completion_chars", "kl",
    "frac_reward_zero_std", "loss", "learning_rate", "flag/text_before_think", "flag/answer_in_think",
    "flag/empty_think", "flag/multiple_letters", "think_chars",
}  # fmt: skip
COMPLETION_FIELDS = {
    "step", "prompt_id", "prompt", "completion", "gold", "letter", "format_ok", "correct", "reward",
    "text_before_think", "answer_in_think", "empty_think", "think_chars", "multiple_letters", "completion_chars",
}  # fmt: skip

# A learnable task for a tiny random model: the smoke questions with the gold letter always A. The format warm-up
# teaches the tags with a *random* letter, so at the start of GRPO about 1 in 4-5 answers is right by chance.
TINY = {
    "model": {"name_or_path": "tiny", "backend": "cpu", "lora": {"r": 16, "alpha": 32}},
    "rlvr": {
        "dataset": "smoke",
        "num_generations": 8,
        "per_device_train_batch_size": 32,
        "gradient_accumulation_steps": 1,
        "max_completion_length": 16,
        "max_prompt_length": 512,
        "learning_rate": 1e-3,
        "format_warmup_steps": 100,
        "format_warmup_lr": 3e-3,
        "max_steps": 24,
        "save_steps": 1000,
        "log_completions_every": 2,
        "log_completions_n": 4,
        "seed": 0,
    },
}


def tiny_config(tmp_path: Path, **rlvr_overrides):
    tree = json.loads(json.dumps(TINY))
    tree["rlvr"].update(rlvr_overrides)
    tree["rlvr"]["output_dir"] = str(tmp_path / "run")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tree))
    return load_config(path), path


def always_a() -> list:
    records = load_records("smoke")
    for rec in records:
        rec.gold = "A"
    return records


def quarters(run_dir: Path, key: str) -> tuple[float, float]:
    s = rlvr.summarize_metrics(run_dir / "metrics.jsonl")
    return s[f"first_quarter_{key}"], s[f"last_quarter_{key}"]


@pytest.fixture(scope="module")
def learned_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("rlvr_learns")
    cfg, _ = tiny_config(tmp)
    return rlvr.train_rlvr(cfg, records=always_a(), progress=False)


# --------------------------------------------------------------------------------------------------------------
# Training learns, and a reward with the wrong sign does not


@pytest.mark.slow
def test_grpo_learns_the_rewarded_answer(learned_run):
    first, last = quarters(learned_run, "accuracy")
    assert last - first >= 0.3, f"accuracy {first:.2f} -> {last:.2f}: GRPO did not learn an always-A task"
    r_first, r_last = quarters(learned_run, "reward")
    assert r_last - r_first >= 0.3


@pytest.mark.slow
def test_negated_reward_does_not_learn(tmp_path, monkeypatch):
    """The same run with the verifier's reward negated before the trainer sees it: the logs still record the
    verifier's own accuracy, which must not rise (it falls). A sign error anywhere in the loop fails one of the
    two tests."""
    real_verify = rlvr.verify

    def negated(*args, **kwargs):
        verdict = real_verify(*args, **kwargs)
        verdict.reward = -verdict.reward
        return verdict

    monkeypatch.setattr(rlvr, "verify", negated)
    cfg, _ = tiny_config(tmp_path)
    run_dir = rlvr.train_rlvr(cfg, records=always_a(), progress=False)
    first, last = quarters(run_dir, "accuracy")
    assert last <= first + 0.05, f"accuracy rose {first:.2f} -> {last:.2f} under a negated reward"
    r_first, r_last = quarters(run_dir, "reward")  # what the trainer was given: that it does optimise
    assert r_last - r_first >= 0.3


@pytest.mark.slow
def test_constant_reward_teaches_nothing(tmp_path, monkeypatch):
    """A reward that ignores the answer gives every group zero spread: no advantage, no update, no rise."""
    real_verify = rlvr.verify

    def constant(*args, **kwargs):
        verdict = real_verify(*args, **kwargs)
        verdict.reward = 0.5
        return verdict

    monkeypatch.setattr(rlvr, "verify", constant)
    cfg, _ = tiny_config(tmp_path, max_steps=8)
    run_dir = rlvr.train_rlvr(cfg, records=always_a(), progress=False)
    rows = rlvr.read_jsonl(run_dir / "metrics.jsonl")
    assert all(r["frac_reward_zero_std"] == 1.0 for r in rows)
    first, last = quarters(run_dir, "accuracy")
    assert abs(last - first) <= 0.2


# --------------------------------------------------------------------------------------------------------------
# What a run leaves


@pytest.mark.slow
def test_run_directory_and_log_fields(learned_run):
    for name in ("config.yaml", "metrics.jsonl", "completions.jsonl", "training_args.json", "run.json"):
        assert (learned_run / name).is_file(), name
    assert (learned_run / "adapter" / "adapter_config.json").is_file()
    assert (learned_run / "adapter" / "tokenizer_config.json").is_file()
    saved = load_config(learned_run / "config.yaml")
    assert saved.rlvr.output_dir == str(learned_run) and saved.rlvr.max_steps == 24

    metrics = rlvr.read_jsonl(learned_run / "metrics.jsonl")
    assert [m["step"] for m in metrics] == list(range(1, 25))
    for m in metrics:
        assert set(m) >= METRIC_FIELDS, METRIC_FIELDS - set(m)
        assert 0.0 <= m["accuracy"] <= m["format_ok"] <= 1.0
        assert -1.0 <= m["reward"] <= 1.0 and m["completion_length"] > 0
        assert m["kl"] is None  # beta 0: TRL computes no KL
    # the reward TRL logged is the mean of the verifier's rewards over the same completions
    m = metrics[-1]
    assert m["reward"] == pytest.approx(m["accuracy"] * 1.0 + (1 - m["format_ok"]) * -1.0, abs=1e-6)

    completions = rlvr.read_jsonl(learned_run / "completions.jsonl")
    steps = sorted({c["step"] for c in completions})
    assert steps == [1, *range(2, 25, 2)]  # log_completions_every 2, plus the first step (and the last, 24)
    for c in completions:
        assert set(c) >= COMPLETION_FIELDS, COMPLETION_FIELDS - set(c)
        assert c["gold"] == "A" and c["prompt"].startswith("A conversation between User and Assistant")
        assert c["correct"] == (c["format_ok"] and c["letter"] == "A")
    assert all(sum(c["step"] == s for c in completions) == 4 for s in steps)

    run = json.loads((learned_run / "run.json").read_text())
    assert run["status"] == "completed" and run["final_step"] == 24 and run["backend"] == "cpu"
    assert run["format_warmup"]["steps"] == 100 and run["versions"]["trl"]
    args = json.loads((learned_run / "training_args.json").read_text())
    assert args["bf16"] is False and args["num_generations"] == 8 and args["beta"] == 0.0


# --------------------------------------------------------------------------------------------------------------
# Resume after a signal


def _metric_steps(path: Path) -> list[int]:
    return [r["step"] for r in rlvr.read_jsonl(path)]


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_resume_finishes(tmp_path):
    cfg, path = tiny_config(
        tmp_path, max_steps=14, save_steps=4, format_warmup_steps=20, log_completions_every=1
    )
    run_dir = Path(cfg.rlvr.output_dir)
    cmd = [sys.executable, "-m", "medrlvr_lite.cli", "train", "rlvr", "--config", str(path)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if len(_metric_steps(run_dir / "metrics.jsonl")) >= 5:
            break
        time.sleep(0.05)
    assert proc.poll() is None, (
        f"the run ended before it could be interrupted:\n{proc.communicate()[1][-3000:]}"
    )
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "interrupted: checkpoint saved at" in err and "--resume" in err
    ckpt = rlvr.find_last_checkpoint(run_dir)
    assert ckpt is not None
    stopped_at = rlvr.checkpoint_step(ckpt)
    assert 5 <= stopped_at < 14, "the signal must stop the run mid-way, at the end of a step"
    assert _metric_steps(run_dir / "metrics.jsonl") == list(range(1, stopped_at + 1))
    assert not (run_dir / "adapter").exists()
    assert json.loads((run_dir / "run.json").read_text())["status"] == "interrupted"

    # a crash would leave lines past the checkpoint: resume must cut them back, not duplicate them
    with (run_dir / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"step": stopped_at + 1, "reward": 0.0}) + "\n")

    done = subprocess.run(cmd + ["--resume"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _metric_steps(run_dir / "metrics.jsonl") == list(range(1, 15))
    completion_steps = [r["step"] for r in rlvr.read_jsonl(run_dir / "completions.jsonl")]
    assert sorted(set(completion_steps)) == list(range(1, 15))
    assert all(completion_steps.count(s) == 4 for s in range(1, 15))
    assert (run_dir / "adapter" / "adapter_config.json").is_file()
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "completed" and run["final_step"] == 14 and run["resumed_from"] == str(ckpt)
    assert "format_warmup" not in run, "a resumed run starts from the checkpoint, not from a new warm-up"
    assert str(run_dir) in done.stderr  # says where the outputs are


# --------------------------------------------------------------------------------------------------------------
# Pieces (fast)


def test_reward_function_is_the_verifier_and_records_verdicts():
    log = rlvr.VerdictLog()
    cfg = load_config(None, ["rlvr.reward.wrong=-0.5"])
    reward = rlvr.make_reward_func(cfg.rlvr.reward, log)
    options = json.dumps({"A": "x", "B": "y", "C": "z"})
    out = reward(
        prompts=["p1", "p1", "p2"],
        completions=[
            " <think> because </think><answer> B </answer>",
            " <think> hmm </think><answer> A </answer>",
            " the answer is B",
        ],
        gold=["B", "B", "C"],
        letters=[["A", "B", "C"]] * 3,
        options=[options] * 3,
        id=["q1", "q1", "q2"],
        trainer_state=None,
    )
    assert out == [1.0, -0.5, -1.0]
    rows = log.drain()
    assert [r["letter"] for r in rows] == ["B", "A", None]
    assert [r["prompt_id"] for r in rows] == ["q1", "q1", "q2"]
    assert log.drain() == []
    stats = rlvr.verdict_stats(rows)
    assert stats["accuracy"] == pytest.approx(1 / 3) and stats["format_ok"] == pytest.approx(2 / 3)


def test_truncate_jsonl_and_last_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s}) + "\n" for s in (1, 2, 3, 4)) + '{"step": 5, "torn')
    assert rlvr.truncate_jsonl(path, 2) == 3
    assert [r["step"] for r in rlvr.read_jsonl(path)] == [1, 2]
    assert rlvr.truncate_jsonl(tmp_path / "missing.jsonl", 2) == 0
    for n in (2, 10, 4):
        (tmp_path / f"checkpoint-{n}").mkdir()
        (tmp_path / f"checkpoint-{n}" / "trainer_state.json").write_text(json.dumps({"global_step": n}))
    (tmp_path / "checkpoint-12").mkdir()  # incomplete save: no trainer_state.json
    assert rlvr.find_last_checkpoint(tmp_path).name == "checkpoint-10"
    assert rlvr.checkpoint_step(tmp_path / "checkpoint-10") == 10
    assert rlvr.find_last_checkpoint(tmp_path / "nothing") is None


def test_dataset_drops_long_prompts_and_keeps_reward_columns():
    from medrlvr_lite.models import build_tiny_tokenizer

    cfg = load_config(None, ["model.name_or_path=tiny", "rlvr.max_prompt_length=150"])
    tok = build_tiny_tokenizer(cfg.model)
    records = load_records("smoke")
    lengths = [len(tok(text=rlvr.render_prompt(r))["input_ids"]) for r in records]
    ds, dropped = rlvr.build_dataset(records, tok, cfg)
    assert len(dropped) == sum(n > 150 for n in lengths) > 0 and len(ds) + len(dropped) == len(records)
    assert set(ds.column_names) == {"prompt", "gold", "letters", "options", "id"}
    row = ds[0]
    assert json.loads(row["options"])[row["gold"]] and row["letters"][0] == "A"
    cfg.rlvr.max_prompt_length = 10
    with pytest.raises(rlvr.RLVRError, match="max_prompt_length"):
        rlvr.build_dataset(records, tok, cfg)


def test_output_dir_in_use_needs_resume_or_overwrite(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n')
    cfg = load_config(None, [f"rlvr.output_dir={tmp_path}"])
    with pytest.raises(rlvr.RLVRError, match="--resume.*--overwrite"):
        rlvr.train_rlvr(cfg)


def test_grpo_args_on_cpu():
    cfg = load_config(None, ["model.name_or_path=tiny", "rlvr.per_device_train_batch_size=16"])
    args = rlvr.grpo_args(cfg, Path("unused"), "cpu", {"dtype": "float32"})
    assert args.bf16 is False and args.fp16 is False and args.use_cpu is True
    assert args.use_vllm is False and args.gradient_checkpointing is False
    assert args.loss_type == "dapo" and args.beta == 0.0 and args.epsilon_high == 0.28
    assert args.remove_unused_columns is False and args.disable_tqdm is True
    gpu = rlvr.grpo_args(cfg, Path("unused"), "hf", {"dtype": "float16", "gradient_checkpointing": True})
    assert gpu.fp16 is True and gpu.bf16 is False  # T4-class: no bf16
