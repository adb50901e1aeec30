"""Evaluation harness: scoring by hand, bootstrap SD against the analytical value, batched generation,
stop strings, resume after an interruption, the tiny model end to end on real MedQA questions, the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from medrlvr_lite import evaluate as ev
from medrlvr_lite.config import EvalStageConfig, ModelConfig

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MEDQA_DEV = DATA / "medqa" / "dev.jsonl"
needs_data = pytest.mark.skipif(not MEDQA_DEV.is_file(), reason="../shared/data is not beside the repo")
TINY = ModelConfig(name_or_path="tiny", backend="cpu")
OPTIONS = {"A": "Gentamicin", "B": "Ciprofloxacin", "C": "Ceftriaxone", "D": "Trimethoprim"}


@pytest.fixture(scope="module")
def loaded():
    from medrlvr_lite.models import load_model

    return load_model(TINY, for_training=False, verbose=False)


def _medqa_prompts(n: int) -> list[str]:
    from types import SimpleNamespace

    from medrlvr_lite.prompts import render_prompt

    rows = [json.loads(line) for line in MEDQA_DEV.read_text().splitlines()[:n]]
    return [render_prompt(SimpleNamespace(question=r["question"], options=r["options"]), "r1") for r in rows]


# --- pure scoring -----------------------------------------------------------------------------------------------


def test_bootstrap_sd_matches_analytical_value():
    p, n = 0.3, 2000
    correct = np.zeros(n)
    correct[: int(p * n)] = 1
    analytical = math.sqrt(p * (1 - p) / n)
    sd = ev.bootstrap_sd(correct, resamples=1000, seed=0)
    assert abs(sd - analytical) / analytical < 0.10
    assert ev.bootstrap_sd(correct, resamples=1000, seed=0) == sd  # seeded: reproducible
    lo, hi = ev.ci95(correct, resamples=1000, seed=0)
    assert lo < p < hi
    assert abs((hi - lo) - 2 * 1.96 * analytical) / (2 * 1.96 * analytical) < 0.15
    assert ev.bootstrap_sd(np.ones(50)) == 0.0


def _row(i, completion, gold, subject=None, sample=0, **extra):
    return {"id": f"q{i}", "sample": sample, "completion": completion, "gold": gold, "options": OPTIONS,
            "prompt_style": "r1", "subject": subject, **extra}  # fmt: skip


def test_fixed_predictions_file_gives_hand_computed_accuracy(tmp_path):
    rows = [
        _row(0, "<think> cell wall </think><answer> C </answer>", "C", "micro"),  # correct
        _row(1, "<think> hmm </think><answer> Ceftriaxone </answer>", "C", "micro"),  # correct (option text)
        _row(2, "<think> quinolone </think><answer> B </answer>", "C", "micro"),  # wrong letter
        _row(3, "The answer is C", "C", "pharm"),  # bad format -> not correct
        _row(4, "<think> x </think><answer> A or C </answer>", "C", "pharm"),  # hedging -> no letter
        _row(
            5, "Let's see. <think> because </think><answer> D </answer>", "D", "pharm"
        ),  # text before think: ok
        _row(6, "<think> a </think><answer> B </answer> and more", "B", "pharm"),  # text after answer: bad
    ]
    path = tmp_path / "medqa_test" / "predictions.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # by hand: q0, q1, q5 correct; q3, q6 fail the format
    res = ev.score_predictions(path)
    assert res["accuracy"] == 3 / 7
    assert res["n"] == 7 and res["num_predictions"] == 7
    assert res["format_failure_rate"] == 2 / 7
    assert res["per_subject"] == {"micro": {"accuracy": 2 / 3, "n": 3}, "pharm": {"accuracy": 1 / 4, "n": 4}}
    assert res["mean_completion_chars"] == np.mean([len(r["completion"]) for r in rows])
    assert res["bootstrap_sd"] == ev.bootstrap_sd([1, 1, 0, 0, 0, 1, 0])
    # stored verdicts only (no re-scoring): whatever 'correct' says
    stored = [{**r, "correct": i % 2 == 0, "format_ok": True} for i, r in enumerate(rows)]
    path.write_text("".join(json.dumps(r) + "\n" for r in stored))
    assert ev.score_predictions(path, rescore=False)["accuracy"] == 4 / 7
    # the file-level entry point writes results.json beside it and the table one level up
    written = ev.evaluate_predictions_file(path)
    assert written["accuracy"] == 3 / 7
    assert json.loads((path.parent / "results.json").read_text())["accuracy"] == 3 / 7
    assert "medqa_test" in (tmp_path / "results.md").read_text()


def test_samples_average_within_question_then_over_questions():
    rows = [
        {"id": "a", "sample": 0, "correct": True, "format_ok": True, "completion": "x"},
        {"id": "a", "sample": 1, "correct": False, "format_ok": False, "completion": "xyz"},
        {"id": "b", "sample": 0, "correct": True, "format_ok": True, "completion": "x"},
        {"id": "b", "sample": 1, "correct": True, "format_ok": True, "completion": "x"},
    ]
    res = ev.summarize(rows)
    assert res["accuracy"] == 0.75 and res["n"] == 2 and res["num_samples"] == 2
    assert res["format_failure_rate"] == 0.25
    assert res["bootstrap_sd"] == ev.bootstrap_sd([0.5, 1.0])  # resamples questions, not samples


def test_direct_and_cot_scoring_read_the_letter_without_tags():
    direct = ev.score_completion(" B. Ciprofloxacin\n\nQuestion: A 3-year-old ... A", "B", "ABCD", OPTIONS,
                                 prompt="direct")  # fmt: skip
    assert direct["letter"] == "B" and direct["correct"] and direct["format_ok"] and direct["flags"] == {}
    assert not ev.score_completion(" no idea", "B", "ABCD", OPTIONS, prompt="direct")["format_ok"]
    cot = " The drug blocks cell wall synthesis. Therefore, the answer is C.\nQuestion: next one, the answer is A"
    scored = ev.score_completion(cot, "C", "ABCD", OPTIONS, prompt="cot")
    assert scored["letter"] == "C" and scored["correct"]
    r1 = ev.score_completion("<think> y </think><answer> C </answer>", "C", "ABCD", OPTIONS, prompt="r1")
    assert (
        r1["correct"] and r1["reward"] == 1.0 and set(r1["flags"]) >= {"text_before_think", "answer_in_think"}
    )


def test_truncated_last_line_is_dropped_and_repaired(tmp_path):
    path = tmp_path / "predictions.jsonl"
    path.write_text('{"id": "a", "sample": 0}\n{"id": "b", "sam')
    assert [r["id"] for r in ev.read_predictions(path, repair=True)] == ["a"]
    assert path.read_text() == '{"id": "a", "sample": 0}\n'


def test_slug_and_table():
    assert ev.slugify("medqa:test@../shared/data/medqa/test.jsonl") == "medqa_test"
    assert ev.slugify("mmlu_pro:health") == "mmlu_pro_health"
    table = ev.format_table(
        [
            {
                "dataset": "medqa:test",
                "n": 1273,
                "accuracy": 0.4924,
                "bootstrap_sd": 0.0141,
                "ci95": [0.465, 0.52],
                "format_failure_rate": 0.01,
            }
        ]  # fmt: skip
    )
    assert "| medqa:test | 1273 | 49.24 ± 1.41 | [46.50, 52.00] | 1.0% |" in table


# --- generation -------------------------------------------------------------------------------------------------


@needs_data
def test_left_padded_batches_give_the_same_greedy_completions(loaded):
    prompts = _medqa_prompts(6)
    lengths = {len(loaded.tokenizer(p)["input_ids"]) for p in prompts}
    assert len(lengths) > 1  # the batch really needs padding
    batched = ev.generate(loaded, prompts, max_new_tokens=12, batch_size=6, progress=False)
    single = ev.generate(loaded, prompts, max_new_tokens=12, batch_size=1, progress=False)
    assert batched == single
    assert all(len(c) == 1 and c[0] for c in batched)
    assert all(not c[0].startswith(p[-20:]) for p, c in zip(prompts, batched, strict=True))  # prompt excluded


def test_generation_stops_after_answer_tag(loaded, monkeypatch):
    """Force the tiny model to write a script that runs past </answer>: the completion ends at the tag."""
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    tok = loaded.tokenizer
    wanted = " <think> cell wall </think><answer> C </answer>"
    script = tok(wanted + " and then much more text follows here", add_special_tokens=False)["input_ids"]

    class Force(LogitsProcessor):
        def __init__(self, start: int):
            self.start = start

        def __call__(self, input_ids, scores):
            step = input_ids.shape[1] - self.start
            forced = torch.full_like(scores, -float("inf"))
            forced[:, script[min(step, len(script) - 1)]] = 0.0
            return forced

    original = loaded.model.generate
    calls = []

    def forced_generate(**kwargs):
        kwargs["logits_processor"] = LogitsProcessorList([Force(kwargs["input_ids"].shape[1])])
        out = original(**kwargs)
        calls.append(out.shape[1] - kwargs["input_ids"].shape[1])
        return out

    monkeypatch.setattr(loaded.model, "generate", forced_generate)
    [[completion]] = ev.generate(loaded, ["User: which drug?\nAssistant:"], max_new_tokens=len(script) + 5,
                                 progress=False)  # fmt: skip
    assert completion == wanted
    assert calls[0] < len(script)  # generation itself stopped early, not only the text was cut
    assert ev.score_completion(completion, "C", "ABCD", OPTIONS)["correct"]
    assert ev.cut_at_stop("a</answer>b</answer>") == "a</answer>"


# --- evaluate end to end ----------------------------------------------------------------------------------------


def _eval_cfg(**kw) -> EvalStageConfig:
    base = {"prompt": "r1", "max_new_tokens": 16, "batch_size": 4, "bootstrap_resamples": 200}
    return EvalStageConfig(**{**base, **kw})


@needs_data
def test_tiny_model_end_to_end_on_medqa_dev(loaded, tmp_path):
    spec = f"medqa:dev@{MEDQA_DEV}"
    results = ev.evaluate(TINY, _eval_cfg(), datasets=[spec], output_dir=tmp_path, limit=16, loaded=loaded,
                          progress=False)  # fmt: skip
    res = results[spec]
    d = tmp_path / "medqa_dev"
    rows = ev.read_predictions(d / "predictions.jsonl")
    assert res["n"] == 16 and len(rows) == 16 and len({r["id"] for r in rows}) == 16
    assert 0.0 <= res["accuracy"] <= 1.0 and 0.0 <= res["format_failure_rate"] <= 1.0
    assert res["accuracy"] == np.mean([r["correct"] for r in rows])
    on_disk = json.loads((d / "results.json").read_text())
    for key in ("accuracy", "bootstrap_sd", "ci95", "format_failure_rate", "mean_completion_chars", "per_subject",
                "n", "model", "adapter", "dataset", "prompt", "decoding", "versions", "git_commit"):  # fmt: skip
        assert key in on_disk
    assert on_disk["decoding"]["greedy"] and on_disk["versions"]["transformers"]
    assert {
        "id",
        "sample",
        "prompt",
        "completion",
        "letter",
        "correct",
        "format_ok",
        "reward",
        "flags",
    } <= set(rows[0])
    assert rows[0]["prompt"].startswith("A conversation between User and Assistant.")
    assert "medqa:dev" in (tmp_path / "results.md").read_text()
    # a rerun writes nothing new and does not need the model
    again = ev.evaluate(TINY, _eval_cfg(), datasets=[spec], output_dir=tmp_path, limit=16, progress=False)
    assert (
        len(ev.read_predictions(d / "predictions.jsonl")) == 16 and again[spec]["accuracy"] == res["accuracy"]
    )
    # other settings in the same folder are refused rather than mixed in
    with pytest.raises(ev.EvalError, match="other settings"):
        ev.evaluate(TINY, _eval_cfg(prompt="direct"), datasets=[spec], output_dir=tmp_path, limit=16,
                    loaded=loaded, progress=False)  # fmt: skip


@needs_data
def test_resume_after_interruption_doubles_no_prediction(loaded, tmp_path, monkeypatch):
    spec = f"medqa:dev@{MEDQA_DEV}"
    cfg = _eval_cfg(prompt="direct", direct_max_new_tokens=6, batch_size=4)
    kw = {"datasets": [spec], "limit": 12, "loaded": loaded, "progress": False}
    one_shot = ev.evaluate(TINY, cfg, output_dir=tmp_path / "one_shot", **kw)[spec]

    real = ev._hf_generate_batch
    calls = {"n": 0}

    def crash_after_first_batch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 1:
            raise KeyboardInterrupt("simulated interruption")
        return real(*args, **kwargs)

    monkeypatch.setattr(ev, "_hf_generate_batch", crash_after_first_batch)
    with pytest.raises(KeyboardInterrupt):
        ev.evaluate(TINY, cfg, output_dir=tmp_path / "resumed", **kw)
    pred = tmp_path / "resumed" / "medqa_dev" / "predictions.jsonl"
    assert len(ev.read_predictions(pred)) == 4  # the first batch was written before the crash
    assert not (pred.parent / "results.json").exists()

    monkeypatch.setattr(ev, "_hf_generate_batch", real)
    resumed = ev.evaluate(TINY, cfg, output_dir=tmp_path / "resumed", **kw)[spec]
    rows = ev.read_predictions(pred)
    ids = [r["id"] for r in rows]
    assert len(ids) == 12 and len(set(ids)) == 12  # each question exactly once
    assert resumed["accuracy"] == one_shot["accuracy"] and resumed["bootstrap_sd"] == one_shot["bootstrap_sd"]
    first = {
        r["id"]: r["completion"]
        for r in ev.read_predictions(tmp_path / "one_shot" / "medqa_dev" / "predictions.jsonl")
    }
    assert {r["id"]: r["completion"] for r in rows} == first


@needs_data
def test_sampling_writes_each_id_sample_pair_once(loaded, tmp_path):
    spec = f"medqa:dev@{MEDQA_DEV}"
    cfg = _eval_cfg(temperature=1.0, num_samples=3, max_new_tokens=6)
    res = ev.evaluate(
        TINY, cfg, datasets=[spec], output_dir=tmp_path, limit=4, loaded=loaded, progress=False
    )[spec]
    rows = ev.read_predictions(tmp_path / "medqa_dev" / "predictions.jsonl")
    assert sorted((r["id"], r["sample"]) for r in rows) == sorted({(r["id"], r["sample"]) for r in rows})
    assert len(rows) == 12 and res["n"] == 4 and res["num_samples"] == 3


# --- CLI --------------------------------------------------------------------------------------------------------


@needs_data
def test_cli_eval_on_tiny_model(tmp_path):
    from typer.testing import CliRunner

    from medrlvr_lite.cli import app

    out = tmp_path / "eval"
    args = ["eval", "--model", "tiny", "--backend", "cpu", "--dataset", f"medqa:dev@{MEDQA_DEV}", "--prompt", "r1",
            "--limit", "4", "--max-new-tokens", "8", "--batch-size", "4", "--output-dir", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "| medqa:dev" in result.output
    res = json.loads((out / "medqa_dev" / "results.json").read_text())
    assert res["n"] == 4 and res["decoding"]["max_new_tokens"] == 8 and res["model"] == "tiny"
    assert (out / "results.md").is_file()
    bad = CliRunner().invoke(
        app, ["eval", "--model", "tiny", "--backend", "cpu", "--prompt", "nope", "-o", str(out)]
    )
    assert bad.exit_code == 2
