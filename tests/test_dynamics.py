"""The stage classifier on hand-written completions of each stage, hacking rates and window merging."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medrlvr_lite.dynamics import (
    STAGES,
    DynamicsError,
    DynamicsResult,
    StageRules,
    analyze,
    classify,
    hacking_flags,
    options_walked,
    pre_think_text,
    split_completion,
)

PROMPT = (
    "A conversation between User and Assistant. ...\n"
    "User: A 24-year-old woman has itchy, watery eyes every spring. Which is the best treatment?\n"
    "A. Oral prednisone\nB. Ketotifen eye drops\nC. Topical erythromycin\nD. Artificial tears only\n"
    "E. Timolol eye drops\n"
    "Assistant:"
)
OPTIONS = {
    "A": "Oral prednisone",
    "B": "Ketotifen eye drops",
    "C": "Topical erythromycin",
    "D": "Artificial tears only",
    "E": "Timolol eye drops",
}


def row(completion: str, *, gold: str = "B", step: int = 0, **flags) -> dict:
    """A completions.jsonl line with verifier-like fields set by hand (overridable through ``flags``)."""
    before, think = split_completion(completion)
    answer = (
        completion.split("<answer>")[-1].split("</answer>")[0].strip() if "<answer>" in completion else None
    )
    letter = answer[0] if answer else None
    base = {
        "step": step,
        "prompt_id": "q1",
        "prompt": PROMPT,
        "completion": completion,
        "gold": gold,
        "letter": letter,
        "format_ok": all(tag in completion for tag in ("<think>", "</think>", "<answer>", "</answer>")),
        "correct": letter == gold,
        "reward": 1.0 if letter == gold else 0.0,
        "text_before_think": bool(before),
        "answer_in_think": bool(think) and OPTIONS[gold].lower() in think.lower(),
        "empty_think": think == "",
        "think_chars": len(think or ""),
        "multiple_letters": False,
        "completion_chars": len(completion),
    }
    base.update(flags)
    return base


FORMAT_FAILURE = "The answer is B because ketotifen is an antihistamine and mast cell stabiliser."
DIRECT_HACKER = "<think> The best treatment here is ketotifen eye drops. </think><answer> B </answer>"
CONCISE = (
    "<think> Seasonal itchy watery eyes in a young adult point to allergic conjunctivitis. First-line therapy "
    "is a topical antihistamine with mast-cell stabilising action; systemic steroids are not indicated. "
    "</think><answer> B </answer>"
)
STEP_BY_STEP = (
    "Let's go through each option step by step. A. Oral prednisone is too aggressive for a mild seasonal "
    "allergy. B. Ketotifen is an antihistamine and mast cell stabiliser. C. Erythromycin treats bacterial "
    "conjunctivitis. D. Artificial tears only soothe. E. Timolol lowers intraocular pressure. So the most likely "
    "best treatment is ketotifen. <think> B. Ketotifen eye drops </think><answer> B </answer>"
)
VERBOSE = (
    "<think> Let me consider every option carefully before answering.\n"
    + "".join(
        f"{letter}. {text}: "
        + "This option needs a careful look at mechanism, indications and side effects. " * 2
        + "\n"
        for letter, text in OPTIONS.items()
    )
    + "Weighing all of the options, the antihistamine is the most appropriate. </think><answer> B </answer>"
)


@pytest.mark.parametrize(
    ("completion", "stage"),
    [
        (FORMAT_FAILURE, "format_failure"),
        ("<think> allergic conjunctivitis <answer> B", "format_failure"),
        (DIRECT_HACKER, "direct_answer_hacker"),
        ("<think></think><answer> B </answer>", "direct_answer_hacker"),
        (STEP_BY_STEP, "step_by_step_exploit"),
        (VERBOSE, "verbose_formatter"),
        (CONCISE, "concise_structurer"),
    ],
)
def test_classify_paper_examples(completion, stage):
    assert classify(row(completion)) == stage


def test_verbose_by_length_alone_and_by_walk():
    long_think = (
        "<think> "
        + "The history and exam findings suggest an allergic process. " * 30
        + "</think><answer> B </answer>"
    )
    assert len(split_completion(long_think)[1]) >= 1500
    assert classify(row(long_think)) == "verbose_formatter"
    # The walk through all five options is under 1500 characters but over walk_min_chars.
    assert len(split_completion(VERBOSE)[1]) < 1500
    assert options_walked(split_completion(VERBOSE)[1]) == 5
    # Raising the walk threshold turns it into a concise structurer.
    assert classify(row(VERBOSE), walk_min_chars=5000) == "concise_structurer"


def test_answer_in_think_only_counts_when_short():
    # A concise reasoning that ends by naming the answer stays concise when it is long enough.
    text = (
        "<think> Seasonal symptoms with itching point to allergic conjunctivitis rather than bacterial infection "
        "or glaucoma; a topical antihistamine and mast cell stabiliser is first line, so ketotifen eye drops are the best treatment. "
        "</think><answer> B </answer>"
    )
    r = row(text)
    assert r["answer_in_think"] and r["think_chars"] >= 200
    assert classify(r) == "concise_structurer"
    short = row(
        "<think> Seasonal allergy without infection, so ketotifen eye drops are best for this patient. </think>"
        "<answer> B </answer>"
    )
    assert short["answer_in_think"] and 80 <= short["think_chars"] < 200
    assert classify(short) == "direct_answer_hacker"
    assert classify(short, answer_think_chars=50) == "concise_structurer"


def test_short_text_before_think_is_not_an_exploit():
    r = row("Sure. " + CONCISE)
    assert r["text_before_think"]
    assert classify(r) == "concise_structurer"
    # Long text before think but an even longer think: reasoning is inside the tags, not an exploit.
    r = row("Here is my careful analysis of this allergy question. " * 2 + VERBOSE)
    assert classify(r) == "verbose_formatter"


def test_thresholds_are_parameters():
    assert classify(row(STEP_BY_STEP), before_think_chars=10_000) == "direct_answer_hacker"
    assert classify(row(CONCISE), concise_chars=1000) == "direct_answer_hacker"
    assert classify(row(CONCISE), verbose_chars=100) == "verbose_formatter"
    assert StageRules().verbose_chars == 1500


def test_fields_missing_are_computed_from_the_completion():
    r = row(STEP_BY_STEP)
    for key in ("think_chars", "text_before_think", "answer_in_think", "empty_think", "completion_chars"):
        r.pop(key)
    assert pre_think_text(r).startswith("Let's go through each option")
    assert classify(r) == "step_by_step_exploit"
    r = row(DIRECT_HACKER)
    r.pop("answer_in_think")
    assert hacking_flags(r)["answer_in_think"]  # computed from the option text in the prompt


def test_hacking_flags():
    assert hacking_flags(row(FORMAT_FAILURE)) == dict.fromkeys(hacking_flags(row(FORMAT_FAILURE)), False)
    f = hacking_flags(row(STEP_BY_STEP))
    assert f["reasoning_before_think"] and f["text_before_think"] and not f["empty_think"]
    f = hacking_flags(row("<think></think><answer> B </answer>"))
    assert f["empty_think"] and not f["text_before_think"]
    assert hacking_flags(row(DIRECT_HACKER))["answer_in_think"]
    assert not hacking_flags(row("Sure. " + CONCISE))["reasoning_before_think"]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_hacking_rates_on_a_small_completions_file(tmp_path):
    # Step 0: 4 completions with known flags; step 1: 2 completions.
    rows = [
        row(DIRECT_HACKER, step=0),  # answer in think, correct
        row(STEP_BY_STEP, step=0),  # reasoning before think, correct
        row("<think></think><answer> C </answer>", step=0),  # empty think, wrong
        row(FORMAT_FAILURE, step=0),  # format failure
        row(CONCISE, step=1, gold="B"),
        row(CONCISE.replace("<answer> B", "<answer> A"), step=1),
    ]
    write_jsonl(tmp_path / "run" / "completions.jsonl", rows)
    result = analyze(tmp_path / "run", window=1)
    s0, s1 = result.steps
    assert (s0["step"], s0["n"], s1["n"]) == (0, 4, 2)
    # The hacker's think and the exploit's think both name the option text.
    assert s0["hacking"]["answer_in_think"] == pytest.approx(0.5)
    assert s0["hacking"]["reasoning_before_think"] == pytest.approx(0.25)
    assert s0["hacking"]["empty_think"] == pytest.approx(0.25)
    assert s0["format_ok"] == pytest.approx(0.75)
    assert s0["accuracy"] == pytest.approx(0.5)
    assert s1["accuracy"] == pytest.approx(0.5)
    assert s0["shares"]["direct_answer_hacker"] == pytest.approx(0.5)
    assert s0["shares"]["step_by_step_exploit"] == pytest.approx(0.25)
    assert s0["shares"]["format_failure"] == pytest.approx(0.25)
    assert sum(s0["shares"].values()) == pytest.approx(1.0)
    lengths = [len(r["completion"]) for r in rows[:4]]
    assert s0["mean_completion_chars"] == pytest.approx(sum(lengths) / 4)
    assert result.totals["n"] == 6
    assert result.totals["hacking"]["answer_in_think"] == pytest.approx(2 / 6)
    # Step 0 is dominated by hacking, so step 1's concise completions are reintegrated reasoning.
    assert s1["shares"]["reintegrated_reasoning"] == pytest.approx(1.0)
    assert (tmp_path / "run" / "dynamics.json").is_file()


def staged_run(steps_per_stage: int = 4, per_step: int = 5) -> list[dict]:
    """Completions following the paper's order: format failure, verbose, concise, hacker, exploit, concise."""
    order = [FORMAT_FAILURE, VERBOSE, CONCISE, DIRECT_HACKER, STEP_BY_STEP, CONCISE]
    rows = []
    for i, main in enumerate(order):
        for s in range(steps_per_stage):
            step = i * steps_per_stage + s
            for k in range(per_step):
                # One completion in five is a format failure, to make shares non-trivial.
                text = FORMAT_FAILURE if (k == 0 and i > 0) else main
                rows.append(row(text, step=step, prompt_id=f"q{k}"))
    return rows


def test_windows_merge_and_relabel(tmp_path):
    write_jsonl(tmp_path / "completions.jsonl", staged_run())
    result = analyze(tmp_path / "completions.jsonl", window=2)
    stages = [(w["start"], w["end"], w["stage"]) for w in result.windows]
    assert stages == [
        (0, 3, "format_failure"),
        (4, 7, "verbose_formatter"),
        (8, 11, "concise_structurer"),
        (12, 15, "direct_answer_hacker"),
        (16, 19, "step_by_step_exploit"),
        (20, 23, "reintegrated_reasoning"),
    ]
    assert result.windows[1]["share"] == pytest.approx(0.8)
    assert result.reintegration_after_step == 13
    # Concise before the hacking phase stays concise; after it, it is reintegrated.
    by_step = {s["step"]: s for s in result.steps}
    assert by_step[9]["shares"]["concise_structurer"] == pytest.approx(0.8)
    assert by_step[22]["shares"]["reintegrated_reasoning"] == pytest.approx(0.8)
    assert by_step[22]["shares"]["concise_structurer"] == 0
    text = result.describe_windows()
    assert "steps 16-19: step-by-step exploit (80% of 20 completions)" in text
    assert text.splitlines()[0].startswith("steps 0-3: format failure")
    # Examples: every stage present, the first one seen and truncated text.
    assert set(result.examples) == set(STAGES)
    assert result.examples["direct_answer_hacker"][0]["completion"] == DIRECT_HACKER
    assert result.examples["step_by_step_exploit"][0]["step"] == 16
    # dynamics.json round-trips.
    loaded = DynamicsResult.load(tmp_path)
    assert loaded.windows == json.loads(json.dumps(result.windows))
    assert loaded.describe_windows() == text


def test_default_window_and_single_window(tmp_path):
    write_jsonl(tmp_path / "completions.jsonl", staged_run())
    result = analyze(tmp_path, write=False)
    assert result.window == 2  # ceil(24 / 16)
    assert not (tmp_path / "dynamics.json").exists()
    big = analyze(tmp_path, window=100, write=False)
    assert len(big.windows) == 1 and big.windows[0]["start"] == 0 and big.windows[0]["end"] == 23


def test_examples_are_truncated(tmp_path):
    long = "<think> " + "x" * 3000 + " </think><answer> B </answer>"
    write_jsonl(tmp_path / "completions.jsonl", [row(long, step=0)])
    ex = analyze(tmp_path, write=False, max_example_chars=200).examples["verbose_formatter"][0]
    assert len(ex["completion"]) < 300 and "characters cut" in ex["completion"]
    assert ex["completion_chars"] == len(long)


def test_errors_name_the_file(tmp_path):
    with pytest.raises(DynamicsError, match="no completions.jsonl"):
        analyze(tmp_path)
    with pytest.raises(DynamicsError, match="no such run directory"):
        analyze(tmp_path / "missing")
    (tmp_path / "completions.jsonl").write_text("")
    with pytest.raises(DynamicsError, match="empty"):
        analyze(tmp_path)
    (tmp_path / "completions.jsonl").write_text(json.dumps(row(CONCISE)) + "\n{not json\n")
    with pytest.raises(DynamicsError, match=r"completions.jsonl:2: not valid JSON"):
        analyze(tmp_path)
    r = row(CONCISE)
    r.pop("step")
    (tmp_path / "completions.jsonl").write_text(json.dumps(r) + "\n")
    with pytest.raises(DynamicsError, match=r"completions.jsonl:1: row has no 'step'"):
        analyze(tmp_path)
    with pytest.raises(DynamicsError, match="window"):
        write_jsonl(tmp_path / "completions.jsonl", [row(CONCISE)])
        analyze(tmp_path, window=0)
    with pytest.raises(DynamicsError, match="analyze RUN_DIR"):
        DynamicsResult.load(tmp_path / "nothing")


def test_rows_without_verdict_use_the_verifier(tmp_path):
    pytest.importorskip("medrlvr_lite.verifier")
    rows = [
        {"step": 0, "prompt_id": "q1", "prompt": PROMPT, "completion": DIRECT_HACKER, "gold": "B"},
        {"step": 0, "prompt_id": "q1", "prompt": PROMPT, "completion": FORMAT_FAILURE, "gold": "B"},
    ]
    write_jsonl(tmp_path / "completions.jsonl", rows)
    result = analyze(tmp_path, window=1, write=False)
    assert result.steps[0]["counts"]["direct_answer_hacker"] == 1
    assert result.steps[0]["counts"]["format_failure"] == 1
    assert result.steps[0]["accuracy"] == pytest.approx(0.5)


def test_analyze_cli(tmp_path):
    from typer.testing import CliRunner

    from medrlvr_lite.cli import app

    write_jsonl(tmp_path / "run" / "completions.jsonl", staged_run())
    res = CliRunner().invoke(app, ["analyze", str(tmp_path / "run"), "--window", "2"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "step-by-step exploit" in res.output
    assert "dynamics.json" in res.output
    for name in ("dynamics.json", "training_curves.png", "stage_shares.png"):
        assert (tmp_path / "run" / name).is_file()
    res = CliRunner().invoke(app, ["analyze", str(tmp_path / "nowhere")], env={"COLUMNS": "200"})
    assert res.exit_code == 2 and "no such run directory" in res.output
