"""Prompts (the paper's templates) and the `score` command that re-scores saved completions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from medrlvr_lite.cli import app
from medrlvr_lite.prompts import R1_TEMPLATE, format_question, render_prompt, sft_target

ROOT = Path(__file__).resolve().parents[1]
REC = SimpleNamespace(
    question="Which drug blocks cell wall synthesis?",
    options={"A": "Gentamicin", "B": "Ciprofloxacin", "C": "Ceftriaxone", "D": "Trimethoprim"},
    gold="C",
)


def test_r1_prompt_is_the_papers_template():
    text = render_prompt(REC, "r1")
    assert text.startswith("A conversation between User and Assistant. The user asks a question")
    assert "<think> reasoning process here </think><answer> answer here </answer>." in text
    assert "\nUser: Which drug blocks cell wall synthesis?\nA. Gentamicin\nB. Ciprofloxacin\n" in text
    assert text.endswith(
        "D. Trimethoprim\nAssistant:"
    )  # the assistant turn is not forced to start with <think>
    assert R1_TEMPLATE.count("{question}") == 1


def test_direct_and_cot_prompts():
    direct, cot = render_prompt(REC, "direct"), render_prompt(REC, "cot")
    assert direct.endswith("Answer:") and "letter of the correct option" in direct
    assert cot.endswith("Let's think step by step.") and "the answer is X" in cot
    assert format_question(REC) in direct and format_question(REC) in cot
    with pytest.raises(ValueError, match="unknown prompt style"):
        render_prompt(REC, "nope")


def test_chat_rendering_uses_the_tokenizers_template():
    tok_dir = ROOT.parent / "shared" / "data" / "qwen2.5_tokenizer"
    if not tok_dir.is_dir():
        pytest.skip("../shared/data not present")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    text = render_prompt(REC, "r1", tokenizer=tok, chat=True)
    assert text.startswith("<|im_start|>system\nA conversation between User and Assistant")
    assert text.endswith("<|im_start|>assistant\n")
    with pytest.raises(ValueError, match="chat template"):
        render_prompt(REC, "r1", tokenizer=None, chat=True)


def test_sft_target():
    assert sft_target(REC) == " C. Ceftriaxone"
    assert sft_target(REC, "letter") == " C"


def test_score_command_writes_one_line_per_input(tmp_path):
    rows = [
        {"completion": "<think>x</think><answer>B</answer>", "answer": "B"},
        {
            "completion": "<think>x</think><answer>Ceftriaxone</answer>",
            "answer": "C",
            "options": list(REC.options.values()),
        },
        {"completion": "no tags", "answer": "A"},
        {"completion": "<think>" * 10_000 + "\u2603", "answer": "A"},
    ]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["score", str(src), "--output", str(out)])
    assert result.exit_code == 0, result.output
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    assert [s["reward"] for s in scored] == [1.0, 1.0, -1.0, -1.0]
    assert scored[1]["letter"] == "C"
    assert set(scored[0]) >= {
        "format_ok",
        "letter",
        "correct",
        "reward",
        "text_before_think",
        "answer_in_think",
    }


def test_score_command_names_the_bad_line(tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text('{"completion": "x", "answer": "A"}\nnot json\n')
    result = CliRunner().invoke(app, ["score", str(src)])
    assert result.exit_code == 2
    assert "bad.jsonl:2" in result.output


def test_cli_py_is_the_same_app():
    a = subprocess.run([sys.executable, str(ROOT / "cli.py"), "--help"], capture_output=True, text=True)
    assert a.returncode == 0 and "score" in a.stdout and "data" in a.stdout
