"""The GRPO step benchmark's harness, on CPU with the tiny shape: both sides run, the JSON has every field."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_grpo_step_benchmark_tiny_on_cpu(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/grpo_step.py", "--shape", "tiny", "--steps", "2", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ours / plain" in proc.stdout and str(out) in proc.stdout
    result = json.loads(out.read_text())
    assert result["shape"] == "tiny" and result["device"] == "cpu" and result["memory_cap_gib"] is None
    settings = result["settings"]
    assert settings["steps"] == 2 and settings["num_generations"] == 8 and settings["completion_length"] == 16
    batch = settings["prompts_per_step"] * settings["num_generations"]
    for name in ("ours", "plain"):
        side = result["backends"][name]
        assert side["ok"] is True and side["backend"] == "cpu"
        assert len(side["steps"]) == 2  # the warm-up step is not timed
        for step in side["steps"]:
            assert step["step_s"] > 0 and 0 < step["generation_s"] < step["step_s"]
            assert step["update_s"] == pytest.approx(step["step_s"] - step["generation_s"])
            # fixed lengths: every completion is exactly completion_length tokens, every prompt prompt_length
            assert step["completion_tokens"] == batch * settings["completion_length"]
            assert step["prompt_tokens"] == batch * settings["prompt_length"]
        for key in (
            "mean_step_s",
            "mean_generation_s",
            "mean_update_s",
            "generation_tokens_per_s",
            "tokens_per_s",
        ):
            assert side[key] > 0, key
        assert side["peak_memory_gib"] is None  # no GPU
    ratio = result["ratio"]
    assert ratio["step"] == pytest.approx(
        result["backends"]["ours"]["mean_step_s"] / result["backends"]["plain"]["mean_step_s"]
    )
    assert ratio["generation"] > 0 and ratio["update"] > 0 and ratio["peak_memory"] is None
    assert result["versions"]["trl"] and result["model"]["params"] > 0


def test_benchmark_rejects_an_unknown_backend(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "benchmarks/grpo_step.py",
            "--backends",
            "ours,fast",
            "--out",
            str(tmp_path / "x.json"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "unknown fast" in proc.stderr
    assert not (tmp_path / "x.json").exists()
