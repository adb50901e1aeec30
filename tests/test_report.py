"""The study report from saved files alone: tables equal results.json, PNGs exist and read, the CLI works."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from medrlvr_lite.report import (
    PAPER_RESULTS,
    PHASES,
    ReportError,
    StudyResults,
    accuracy_rows,
    fmt_pct,
    paper_key,
    plot_accuracy_bars,
    rlvr_minus_sft,
    write_report,
)

PROMPT = "User: Which is the best treatment?\nA. Prednisone\nB. Ketotifen eye drops\nC. Erythromycin\nD. Timolol\nAssistant:"
TEXTS = {
    "format_failure": "The answer is B, ketotifen.",
    "verbose_formatter": "<think> "
    + "".join(
        f"\n{x}. " + "This option is weighed on mechanism, indications and harms in this patient. " * 3
        for x in "ABCD"
    )
    + "</think><answer> B </answer>",
    "concise_structurer": "<think> Seasonal itchy eyes suggest allergic conjunctivitis; a topical antihistamine "
    "and mast cell stabiliser is first line, steroids are not needed. </think><answer> B </answer>",
    "direct_answer_hacker": "<think> Ketotifen eye drops. </think><answer> B </answer>",
    "step_by_step_exploit": "Let's go through each option step by step. A. Prednisone is too strong. B. Ketotifen "
    "stabilises mast cells. C. Erythromycin is for bacteria. D. Timolol is for glaucoma. The most likely answer "
    "is ketotifen. <think> B. Ketotifen eye drops </think><answer> B </answer>",
}
ORDER = [
    "format_failure",
    "verbose_formatter",
    "concise_structurer",
    "direct_answer_hacker",
    "step_by_step_exploit",
    "concise_structurer",
]


def _completion_row(stage: str, step: int, k: int) -> dict:
    text = TEXTS[stage]
    ok = stage != "format_failure"
    before, _, rest = text.partition("<think>")
    think = rest.split("</think>")[0].strip() if ok else ""
    correct = ok and k % 2 == 0
    return {
        "step": step,
        "prompt_id": f"q{k}",
        "prompt": PROMPT,
        "completion": text if correct or not ok else text.replace("<answer> B", "<answer> A"),
        "gold": "B",
        "letter": ("B" if correct else "A") if ok else None,
        "format_ok": ok,
        "correct": correct,
        "reward": 1.0 if correct else (0.0 if ok else -1.0),
        "text_before_think": ok and bool(before.strip()),
        "answer_in_think": stage in ("direct_answer_hacker", "step_by_step_exploit"),
        "empty_think": False,
        "think_chars": len(think),
        "multiple_letters": False,
        "completion_chars": len(text),
    }


def make_study(tmp_path: Path, with_rlvr: bool = True) -> Path:
    study = tmp_path / "study"
    run = study / "rlvr"
    run.mkdir(parents=True)
    completions, metrics = [], []
    for i, stage in enumerate(ORDER):
        for s in range(3):
            step = i * 3 + s
            rows = [_completion_row(stage, step, k) for k in range(4)]
            completions += rows
            metrics.append(
                {
                    "step": step,
                    "reward": 0.1 * i,
                    "accuracy": min(0.9, 0.05 + 0.04 * step),
                    "format_ok": 0.0 if i == 0 else 1.0,
                    "completion_length": 50.0,
                    "completion_chars": sum(r["completion_chars"] for r in rows) / len(rows),
                    "kl": 0.0,
                    "frac_reward_zero_std": 0.5,
                    "loss": 0.0,
                    "learning_rate": 1e-5,
                }
            )
    if with_rlvr:
        (run / "completions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in completions))
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics))

    def ev(acc: float, sd: float, n: int, prompt: str) -> dict:
        return {
            "accuracy": acc,
            "bootstrap_sd": sd,
            "ci95": [acc - 2 * sd, acc + 2 * sd],
            "n": n,
            "format_failure_rate": 0.02,
            "mean_completion_chars": 640.0,
            "prompt": prompt,
        }

    results = {
        "study_dir": str(study),
        "config": {"model": {"name_or_path": "tiny"}, "study": {"in_distribution": "medqa:test"}},
        "versions": {"medrlvr_lite": "0.1.0", "torch": "2.13"},
        "git_commit": "deadbeef",
        "sets": {
            "medqa:test": {"role": "in_distribution", "n_options_mean": 4.0},
            "mmlu_pro:health": {"role": "out_of_distribution", "n_options_mean": 9.6},
            "pubmedqa:test": {"role": "out_of_distribution", "n_options_mean": 3.0},
        },
        "evaluations": {
            "base_direct": {
                "medqa:test": ev(0.2812, 0.0126, 1273, "direct"),
                "mmlu_pro:health": ev(0.2213, 0.0145, 818, "direct"),
                "pubmedqa:test": ev(0.41, 0.022, 500, "direct"),
            },
            "base_cot": {
                "medqa:test": ev(0.3307, 0.0131, 1273, "cot"),
                "mmlu_pro:health": ev(0.2567, 0.0152, 818, "cot"),
                "pubmedqa:test": ev(0.45, 0.022, 500, "cot"),
            },
            "sft": {
                "medqa:test": ev(0.4851, 0.0140, 1273, "direct"),
                "mmlu_pro:health": ev(0.3021, 0.0160, 818, "direct"),
                "pubmedqa:test": ev(0.52, 0.022, 500, "direct"),
            },
            "rlvr": {
                "medqa:test": ev(0.4713, 0.0139, 1273, "r1"),
                "mmlu_pro:health": ev(0.3856, 0.0170, 818, "r1"),
                "pubmedqa:test": ev(0.58, 0.022, 500, "r1"),
            },
        },
        "random": {"medqa:test": 0.25, "mmlu_pro:health": 0.1042, "pubmedqa:test": 1 / 3},
        "rlvr_run": "rlvr",
        "dynamics": None,
    }
    (study / "results.json").write_text(json.dumps(results))
    return study


def _png_ok(path: Path) -> None:
    from matplotlib.image import imread

    assert path.is_file() and path.stat().st_size > 10_000, path
    img = imread(path)
    assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 500
    assert img[..., :3].std() > 0.05  # not a blank canvas


def test_paper_results_match_design():
    acc = PAPER_RESULTS["accuracy"]
    assert acc["random"]["medqa_test"]["pct"] == 14.25 and acc["random"]["mmlu_pro_health"]["pct"] == 9.03
    assert acc["rlvr"]["mmlu_pro_health"] == {"pct": 40.09, "sd": 1.75}
    assert acc["sft"]["medqa_test"] == {"pct": 50.03, "sd": 1.35}
    assert set(acc) == set(PHASES)
    assert paper_key("medqa:test@../x/test.jsonl") == "medqa_test"
    assert paper_key("mmlu_pro:health") == "mmlu_pro_health"
    assert paper_key("medmcqa:dev") is None and paper_key("medqa:dev") is None


def test_write_report_numbers_equal_results(tmp_path):
    study = make_study(tmp_path)
    out = write_report(study, window=3)
    assert out == study / "report.md"
    md = out.read_text()
    results = json.loads((study / "results.json").read_text())
    for phase, per_set in results["evaluations"].items():
        for spec, res in per_set.items():
            cell = f"{100 * res['accuracy']:.2f} ± {100 * res['bootstrap_sd']:.2f} (n={res['n']})"
            assert cell in md, (phase, spec, cell)
    for acc in results["random"].values():
        assert f"| {100 * acc:.2f} |" in md or f"| {100 * acc:.2f}" in md
    # The paper's numbers beside ours, only for the sets it evaluates.
    assert "| 49.24 ± 1.41 |" in md and "40.09 ± 1.75" in md and "14.25" in md and "9.03" in md
    header = next(line for line in md.splitlines() if line.startswith("| model"))
    assert header.count(": paper") == 2 and "PubMedQA" not in header.replace("pubmedqa:test", "")
    # RLVR - SFT with the SD of the difference.
    r, s = results["evaluations"]["rlvr"]["mmlu_pro:health"], results["evaluations"]["sft"]["mmlu_pro:health"]
    diff = 100 * (r["accuracy"] - s["accuracy"])
    sd = 100 * math.sqrt(r["bootstrap_sd"] ** 2 + s["bootstrap_sd"] ** 2)
    assert f"{diff:+.2f} ± {sd:.2f}" in md
    assert "+8.41 ± 2.39" in md  # the paper's MMLU-Pro difference: 40.09 - 31.68, sqrt(1.75² + 1.63²)
    assert "sqrt(SD_RLVR² + SD_SFT²)" in md
    # Stages over training, hacking rates, examples, config, versions.
    stages = re.findall(r"(?m)^- steps (\d+)-(\d+): ([a-z -]+) \((\d+)% of (\d+) completions\)$", md)
    assert stages == [
        ("0", "2", "format failure", "100", "12"),
        ("3", "5", "verbose formatter", "100", "12"),
        ("6", "8", "concise structurer", "100", "12"),
        ("9", "11", "direct-answer hacker", "100", "12"),
        ("12", "14", "step-by-step exploit", "100", "12"),
        ("15", "17", "reintegrated reasoning", "100", "12"),
    ]
    assert "### Hacking rates" in md and "reasoning before `<think>`" in md
    assert "#### direct-answer hacker" in md and "<think> Ketotifen eye drops. </think>" in md
    assert "name_or_path: tiny" in md and "| torch | 2.13 |" in md and "deadbeef" in md
    for name in ("accuracy_bars.png", "training_curves.png", "stage_shares.png"):
        _png_ok(study / "figures" / name)
        assert f"](figures/{name})" in md
    assert (study / "rlvr" / "dynamics.json").is_file()


def test_report_without_rlvr_run_and_missing_phases(tmp_path):
    study = make_study(tmp_path, with_rlvr=False)
    data = json.loads((study / "results.json").read_text())
    del data["evaluations"]["base_cot"]
    (study / "results.json").write_text(json.dumps(data))
    md = write_report(study).read_text()
    assert "No training dynamics" in md
    cot_row = next(line for line in md.splitlines() if line.startswith("| base, chain of thought"))
    assert cot_row.count("—") == 3 and "32.27" in cot_row  # ours missing, paper shown
    assert not (study / "figures" / "training_curves.png").exists()


def test_rows_and_diffs(tmp_path):
    results = StudyResults.load(make_study(tmp_path))
    assert results.set_specs()[0] == "medqa:test"
    rows = accuracy_rows(results)
    rand = next(r for r in rows if r["phase"] == "random" and r["set"] == "medqa:test")
    assert (
        rand["ours_pct"] == pytest.approx(25.0) and rand["paper_pct"] == 14.25 and rand["ours_sd_pct"] is None
    )
    pub = [r for r in rows if r["set"] == "pubmedqa:test"]
    assert len(pub) == 5 and all(r["paper_pct"] is None for r in pub)
    diffs = {d["set"]: d for d in rlvr_minus_sft(results)}
    assert diffs["medqa:test"]["diff_pct"] == pytest.approx(-1.38)
    assert diffs["medqa:test"]["paper_diff_pct"] == pytest.approx(-0.79)
    assert "paper_diff_pct" not in diffs["pubmedqa:test"]
    assert fmt_pct(None) == "—" and fmt_pct(12.345, 1.0) == "12.35 ± 1.00"
    with pytest.raises(ReportError, match="no accuracies"):
        plot_accuracy_bars([], tmp_path / "bars.png")


def test_errors(tmp_path):
    with pytest.raises(ReportError, match="results.json: not found"):
        write_report(tmp_path)
    (tmp_path / "results.json").write_text("{broken")
    with pytest.raises(ReportError, match="not valid JSON"):
        write_report(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({"evaluations": {"sft": {"medqa:test": {"n": 3}}}}))
    with pytest.raises(ReportError, match=r"evaluations.sft.medqa:test has no 'accuracy'"):
        write_report(tmp_path)


def test_report_cli(tmp_path):
    from typer.testing import CliRunner

    from medrlvr_lite.cli import app

    study = make_study(tmp_path, with_rlvr=False)  # the figures are checked above; keep this one fast
    res = CliRunner().invoke(app, ["report", str(study)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "report.md" in res.output
    assert (study / "report.md").is_file()
    res = CliRunner().invoke(app, ["report", str(tmp_path / "none")], env={"COLUMNS": "200"})
    assert res.exit_code == 2 and "results.json" in res.output
