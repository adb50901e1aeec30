"""SFT baseline (medrlvr_lite/sft.py) on the tiny random model, CPU only.

- the trainer's collated batch masks every prompt token (labels -100) and keeps the completion + EOS;
- SFT on the smoke questions lowers the loss and raises the direct-prompt accuracy measured by evaluate.py;
- the learning-rate grid writes grid.json / best.json and keeps the adapter with the best dev accuracy;
- SIGTERM saves a checkpoint, and --resume continues it without a duplicated or missing metrics line.
"""

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

from medrlvr_lite.config import Config, ModelConfig, load_config

REPO = Path(__file__).resolve().parents[1]


def _cfg(tmp_path: Path, **sft) -> Config:
    cfg = Config(model=ModelConfig(name_or_path="tiny", backend="cpu"))
    settings = {
        "output_dir": str(tmp_path / "sft"),
        "dataset": "smoke:train",
        "dev_dataset": "smoke:train",  # memorisation is the point: the tiny model knows no medicine
        "dev_limit": 16,
        "target": "letter",
        "learning_rate": 3e-3,
        "lr_scheduler_type": "constant",
        "warmup_ratio": 0.0,
        "per_device_train_batch_size": 8,
        "gradient_accumulation_steps": 1,
        "max_steps": 30,
        "logging_steps": 5,
        "save_steps": 1000,
        **sft,
    }
    for key, value in settings.items():
        setattr(cfg.sft, key, value)
    cfg.eval.batch_size = 32
    cfg.eval.bootstrap_resamples = 100
    return cfg


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: the tiny model gains nothing from more, and on a busy shared CPU they fight."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_examples_are_prompt_completion_pairs():
    from medrlvr_lite.data import load_records
    from medrlvr_lite.sft import sft_examples

    rec = load_records("smoke:train")[0]
    ex = sft_examples([rec], prompt="direct", target="answer")[0]
    assert ex["prompt"].endswith("Answer:")
    assert ex["completion"] == f" {rec.gold}. {rec.options[rec.gold]}"
    assert sft_examples([rec], target="letter")[0]["completion"] == f" {rec.gold}"


def test_lr_grid_parsing_and_selection():
    from medrlvr_lite.sft import SFTError, lr_dirname, parse_lr_grid, pick_best

    assert parse_lr_grid("1e-5, 5e-6,1e-6") == [1e-5, 5e-6, 1e-6]
    assert parse_lr_grid([1e-5]) == [1e-5]
    assert parse_lr_grid("") is None and parse_lr_grid(None) is None
    for bad in ("1e-5,abc", "0", "-1e-5", "1e-5,0.00001"):
        with pytest.raises(SFTError):
            parse_lr_grid(bad)
    assert lr_dirname(1e-5) == "lr_1e-05"
    assert pick_best({1e-5: 0.40, 5e-6: 0.55, 1e-6: 0.30}) == 5e-6
    # ties go to the earlier grid value
    assert pick_best({1e-6: 0.5, 1e-5: 0.5}, order=[1e-5, 1e-6]) == 1e-5


def test_recipe_config_loads():
    cfg = load_config(REPO / "configs" / "sft_qwen2.5-3b_medqa.yaml")
    assert cfg.sft.prompt == "direct" and cfg.sft.target == "answer" and cfg.sft.num_train_epochs == 10
    assert cfg.sft.lr_grid == [1e-4, 5e-5, 1e-5]  # the paper's grid x 10 for LoRA
    assert cfg.model.load_in_4bit and cfg.eval.prompt == "direct"


def test_grid_checks_dev_split_before_training(tmp_path, monkeypatch):
    from medrlvr_lite import sft
    from medrlvr_lite.data import DataError

    def no_training(*a, **k):
        raise AssertionError("trained before the dev split was checked")

    monkeypatch.setattr(sft, "_train_one", no_training)
    cfg = _cfg(tmp_path, dev_dataset=f"medqa:dev@{tmp_path / 'missing.jsonl'}")
    with pytest.raises(DataError):
        sft.train_sft(cfg, lr_grid="1e-3,3e-3", progress=False)
    cfg = _cfg(tmp_path, dev_dataset=None)
    with pytest.raises(sft.SFTError, match="dev_dataset"):
        sft.train_sft(cfg, lr_grid="1e-3,3e-3", progress=False)
    with pytest.raises(sft.SFTError, match="exclude"):
        sft.train_sft(cfg, resume=True, overwrite=True, progress=False)


def test_clear_run_dir_deletes_only_run_files(tmp_path):
    from medrlvr_lite.sft import clear_run_dir, last_checkpoint, truncate_metrics

    for d in ("checkpoint-5", "checkpoint-10", "checkpoint-7", "adapter", "lr_1e-05", "notes"):
        (tmp_path / d).mkdir()
    for d in ("checkpoint-5", "checkpoint-7"):
        (tmp_path / d / "trainer_state.json").write_text("{}")
    assert (
        last_checkpoint(tmp_path).name == "checkpoint-7"
    )  # checkpoint-10 holds no trainer state: incomplete
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps({"step": i}) + "\n" for i in (1, 2, 3, 4)) + '{"step": 5')
    assert truncate_metrics(metrics, 2) == 3
    assert [r["step"] for r in _metrics(metrics)] == [1, 2]
    (tmp_path / "mine.txt").write_text("keep")
    removed = clear_run_dir(tmp_path)
    assert sorted(removed) == [
        "adapter",
        "checkpoint-10",
        "checkpoint-5",
        "checkpoint-7",
        "lr_1e-05",
        "metrics.jsonl",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt", "notes"]


def test_collator_masks_prompt_tokens(tmp_path):
    from medrlvr_lite.data import load_records
    from medrlvr_lite.models import load_model
    from medrlvr_lite.sft import build_trainer, sft_examples

    cfg = _cfg(tmp_path, target="answer")
    loaded = load_model(cfg.model, verbose=False)
    records = load_records("smoke:train")[:4]
    trainer = build_trainer(cfg, loaded, records, tmp_path / "run")
    assert trainer.completion_only_loss
    assert not trainer.args.bf16 and not trainer.args.fp16  # CPU: full precision
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(records))])
    tok = loaded.tokenizer
    for i, ex in enumerate(sft_examples(records, target="answer")):
        prompt_len = len(tok(ex["prompt"], add_special_tokens=False)["input_ids"])
        ids, labels, mask = batch["input_ids"][i], batch["labels"][i], batch["attention_mask"][i]
        n = int(mask.sum())
        assert (labels[:prompt_len] == -100).all(), "a prompt token carries a label"
        assert (labels[prompt_len:n] == ids[prompt_len:n]).all(), "a completion token is masked"
        assert (labels[n:] == -100).all(), "padding carries a label"
        assert int(labels[n - 1]) == tok.eos_token_id, "EOS is not appended to the completion"
        assert tok.decode(ids[prompt_len : n - 1]) == ex["completion"]


@pytest.mark.slow
def test_sft_lowers_loss_and_raises_accuracy(tmp_path):
    from medrlvr_lite.evaluate import evaluate
    from medrlvr_lite.sft import SFTError, train_sft

    cfg = _cfg(tmp_path)
    direct = cfg.eval.model_copy(update={"prompt": "direct"})
    before = evaluate(
        cfg.model, direct, datasets=["smoke:train"], output_dir=tmp_path / "ev0", progress=False
    )
    adapter = train_sft(cfg, progress=False)
    after = evaluate(
        cfg.model,
        direct,
        adapter=str(adapter),
        datasets=["smoke:train"],
        output_dir=tmp_path / "ev1",
        progress=False,
    )
    acc0, acc1 = before["smoke:train"]["accuracy"], after["smoke:train"]["accuracy"]
    assert acc1 >= 0.8 and acc1 >= acc0 + 0.4, (acc0, acc1)

    run = Path(cfg.sft.output_dir)
    rows = _metrics(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [5, 10, 15, 20, 25, 30]
    assert {"loss", "learning_rate", "epoch", "grad_norm", "mean_token_accuracy"} <= set(rows[0])
    assert rows[-1]["loss"] < 0.5 * rows[0]["loss"], [r["loss"] for r in rows]
    assert (adapter / "adapter_config.json").is_file() and adapter == run / "adapter"
    assert (run / "checkpoint-30" / "trainer_state.json").is_file()
    assert load_config(run / "config.yaml").sft.learning_rate == 3e-3
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "complete" and info["backend"] == "cpu" and info["global_step"] == 30
    assert info["settings_used"]["bf16"] is False and info["versions"]["trl"]

    with pytest.raises(SFTError, match="--resume"):
        train_sft(cfg, progress=False)
    assert train_sft(cfg, resume=True, progress=False) == adapter  # finished: kept as it is
    assert len(_metrics(run / "metrics.jsonl")) == 6


@pytest.mark.slow
def test_lr_grid_keeps_best_dev_accuracy(tmp_path, monkeypatch):
    from medrlvr_lite import evaluate as evaluate_mod
    from medrlvr_lite import sft

    known = {"lr_0.001": 0.25, "lr_0.003": 0.75}
    calls = []

    def fake_evaluate(model_cfg, eval_cfg, *, adapter=None, datasets=None, limit=None, **kw):
        calls.append((Path(adapter).parent.name, eval_cfg.prompt, list(datasets), limit))
        return {datasets[0]: {"accuracy": known[Path(adapter).parent.name], "n": 16, "bootstrap_sd": 0.1}}

    monkeypatch.setattr(evaluate_mod, "evaluate", fake_evaluate)
    cfg = _cfg(tmp_path, max_steps=2, logging_steps=1)
    out = Path(cfg.sft.output_dir)
    adapter = sft.train_sft(cfg, lr_grid="1e-3,3e-3", progress=False)

    assert adapter == out / "adapter"
    assert json.loads((out / "grid.json").read_text()) == {"0.001": 0.25, "0.003": 0.75}
    best = json.loads((out / "best.json").read_text())
    assert best["learning_rate"] == 3e-3 and best["dev_accuracy"] == 0.75
    assert calls == [("lr_0.001", "direct", ["smoke:train"], 16), ("lr_0.003", "direct", ["smoke:train"], 16)]
    weights = "adapter_model.safetensors"
    assert (adapter / weights).read_bytes() == (out / "lr_0.003" / "adapter" / weights).read_bytes()
    assert (adapter / weights).read_bytes() != (out / "lr_0.001" / "adapter" / weights).read_bytes()
    for lr in ("0.001", "0.003"):
        sub = out / f"lr_{lr}"
        assert load_config(sub / "config.yaml").sft.learning_rate == float(lr)
        assert json.loads((sub / "run.json").read_text())["status"] == "complete"

    # resumable: finished grid points are not trained again
    def no_training(*a, **k):
        raise AssertionError("a finished grid point was trained again")

    monkeypatch.setattr(sft, "build_trainer", no_training)
    with pytest.raises(sft.SFTError, match="--resume"):
        sft.train_sft(cfg, lr_grid="1e-3,3e-3", progress=False)
    assert sft.train_sft(cfg, lr_grid="1e-3,3e-3", resume=True, progress=False) == adapter


@pytest.mark.slow
def test_lr_grid_real_dev_evaluation(tmp_path):
    from medrlvr_lite.sft import train_sft

    cfg = _cfg(tmp_path, max_steps=20, logging_steps=10)
    train_sft(cfg, lr_grid=[1e-6, 3e-3], progress=False)
    out = Path(cfg.sft.output_dir)
    grid = json.loads((out / "grid.json").read_text())
    assert set(grid) == {"1e-06", "0.003"}
    assert grid["0.003"] > grid["1e-06"], grid
    assert json.loads((out / "best.json").read_text())["learning_rate"] == 3e-3
    res = json.loads((out / "lr_0.003" / "dev_eval" / "smoke_train" / "results.json").read_text())
    assert res["n"] == 16 and res["prompt"] == "direct" and res["accuracy"] == grid["0.003"]


@pytest.mark.slow
def test_sigterm_saves_checkpoint_and_resume_duplicates_no_metrics_line(tmp_path):
    from medrlvr_lite.sft import checkpoint_step, last_checkpoint, train_sft

    run = tmp_path / "run"
    total = 16
    config = {
        "model": {"name_or_path": "tiny", "backend": "cpu"},
        "sft": {
            "output_dir": str(run), "dataset": "smoke:train", "target": "letter", "learning_rate": 3e-3,
            "per_device_train_batch_size": 8, "gradient_accumulation_steps": 1, "max_steps": total,
            "logging_steps": 1, "save_steps": 1000, "lr_scheduler_type": "constant", "warmup_ratio": 0.0,
        },
    }  # fmt: skip
    cfg_path = tmp_path / "sft.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    # the CLI in a child process, each step paced to 0.1 s so that the signal surely lands mid-training
    child = tmp_path / "child.py"
    child.write_text(
        "import sys, time\n"
        "from medrlvr_lite import sft\n"
        "class Pace(sft._Callback):\n"
        "    def on_step_end(self, *a, **k):\n"
        "        time.sleep(0.1)\n"
        "build = sft.build_trainer\n"
        "sft.build_trainer = lambda *a, callbacks=(), **k: build(*a, callbacks=[*callbacks, Pace()], **k)\n"
        "from medrlvr_lite.cli import main\n"
        f"sys.argv = ['medrlvr-lite', 'train', 'sft', '--config', {str(cfg_path)!r}]\n"
        "main()\n"
    )
    metrics = run / "metrics.jsonl"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    with open(tmp_path / "stderr.txt", "w") as err:
        proc = subprocess.Popen(
            [sys.executable, str(child)], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err
        )
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None:
            if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
                break
            time.sleep(0.02)
        assert proc.poll() is None, (
            "training finished (or failed) before the signal: "
            + (tmp_path / "stderr.txt").read_text()[-2000:]
        )
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=120)
    stderr = (tmp_path / "stderr.txt").read_text()
    assert code == 143, stderr[-2000:]
    assert "--resume" in stderr

    ckpt = last_checkpoint(run)
    assert ckpt is not None
    stopped = checkpoint_step(ckpt)
    assert 3 <= stopped < total
    assert [r["step"] for r in _metrics(metrics)] == list(range(1, stopped + 1))
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"
    assert not (run / "adapter").exists()
    # a line written after the checkpoint by a run killed before it could save again: must go on resume
    with open(metrics, "a") as f:
        f.write(json.dumps({"step": stopped + 1, "loss": 1.0}) + "\n" + '{"step": ')

    train_sft(load_config(cfg_path), resume=True, progress=False)
    steps = [r["step"] for r in _metrics(metrics)]
    assert steps == list(range(1, total + 1)), steps
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "complete" and info["resumed_from"] == str(ckpt)
    assert [s["from_step"] for s in info["sessions"]] == [0, stopped]
    assert (run / "adapter" / "adapter_config.json").is_file()


def test_cli_help_lists_train_sft():
    from typer.testing import CliRunner

    from medrlvr_lite.cli import app

    result = CliRunner().invoke(app, ["train", "sft", "--help"])
    assert result.exit_code == 0
    assert "--lr-grid" in result.output and "--resume" in result.output
