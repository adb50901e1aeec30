"""The smoke study end to end (the README's main command), killed during RLVR, resumed, then rerun.

Run it alone with ``python -m pytest -m smoke_study``. It runs every phase offline on CPU with the tiny model
and the bundled questions: about 1.5-2 minutes on 2 cores.
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

ROOT = Path(__file__).resolve().parents[1]
PHASE_DIRS = {"base_direct": "base_direct", "base_cot": "base_cot", "eval_sft": "sft", "eval_rlvr": "rlvr"}
SETS = {"smoke:test": "smoke_test", "smoke:ood": "smoke_ood"}


def _study(out: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "cli.py"), "study", "--config", str(ROOT / "configs" / "smoke.yaml"),
            "--output-dir", str(out), *extra]  # fmt: skip


def _env() -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _metric_steps(run: Path) -> list[int]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.smoke_study
@pytest.mark.slow
def test_smoke_study_killed_during_rlvr_resumes_finishes_and_reruns_nothing(tmp_path):
    out = tmp_path / "study"
    log = (tmp_path / "first.log").open("w")
    proc = subprocess.Popen(_study(out), cwd=tmp_path, env=_env(), stdout=log, stderr=subprocess.STDOUT)
    # wait until RLVR has logged steps past its first checkpoint (save_steps 20), then kill it
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if len(_metric_steps(out / "rlvr")) >= 24:
            break
        time.sleep(0.5)
    assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=300)
    log.close()
    first = (tmp_path / "first.log").read_text()
    assert code == 128 + signal.SIGTERM, first[-3000:]
    assert "interrupted" in first and "checkpoint saved" in first
    state = json.loads((out / "study.json").read_text())
    assert state["phases"]["rlvr"]["status"] == "interrupted"
    assert state["phases"]["sft"]["status"] == "done"
    assert not (out / "rlvr" / "adapter").exists()

    # the same command again: finished phases are skipped, RLVR resumes from its checkpoint and finishes
    second = subprocess.run(
        _study(out), cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=900
    )
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    for phase in ("base_direct", "base_cot", "sft"):
        assert f"skip {phase}" in second.stderr
    assert f"report: {out / 'report.md'}" in second.stderr.replace("\n", "")

    # every phase's outputs exist
    for phase, sub in PHASE_DIRS.items():
        for slug in SETS.values():
            assert (out / "eval" / sub / slug / "predictions.jsonl").is_file(), (phase, slug)
            assert (out / "eval" / sub / slug / "results.json").is_file(), (phase, slug)
    for run in ("sft", "rlvr"):
        assert (out / run / "adapter" / "adapter_config.json").is_file()
        assert (out / run / "config.yaml").is_file()
    for name in ("results.json", "report.md", "study.json", "config.yaml"):
        assert (out / name).is_file()
    for png in ("accuracy_bars.png", "training_curves.png", "stage_shares.png"):
        assert (out / "figures" / png).stat().st_size > 10_000
    assert (out / "rlvr" / "dynamics.json").is_file()

    # RLVR ran every step exactly once across the kill and the resume
    cfg_steps = 60
    assert _metric_steps(out / "rlvr") == list(range(1, cfg_steps + 1))
    assert json.loads((out / "rlvr" / "run.json").read_text()).get("status") in (
        "completed",
        "complete",
        "done",
    )
    # ... and learned: the mean reward of its last quarter of steps beats the first quarter by 0.2 or more
    rewards = [
        json.loads(line)["reward"] for line in (out / "rlvr" / "metrics.jsonl").read_text().splitlines()
    ]
    quarter = len(rewards) // 4
    assert sum(rewards[-quarter:]) / quarter - sum(rewards[:quarter]) / quarter >= 0.2, rewards

    # the report's numbers are the per-phase results
    results = json.loads((out / "results.json").read_text())
    report = (out / "report.md").read_text()
    for phase, sub in PHASE_DIRS.items():
        name = phase.removeprefix("eval_")
        for spec, slug in SETS.items():
            per_phase = json.loads((out / "eval" / sub / slug / "results.json").read_text())
            assert results["evaluations"][name][spec]["accuracy"] == per_phase["accuracy"]
            assert results["evaluations"][name][spec]["bootstrap_sd"] == per_phase["bootstrap_sd"]
            cell = f"{100 * per_phase['accuracy']:.2f} ± {100 * per_phase['bootstrap_sd']:.2f} (n={per_phase['n']})"
            assert cell in report, cell
    assert results["sets"]["smoke:test"]["role"] == "in_distribution"
    assert results["sets"]["smoke:ood"]["role"] == "out_of_distribution"
    assert results["random"]["smoke:ood"] == pytest.approx(1 / 3)

    # a third run skips every phase but the report, which it rebuilds from the saved files alone
    before = {p: p.stat().st_mtime_ns for p in (out / "eval").rglob("predictions.jsonl")}
    third = subprocess.run(_study(out), cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert third.returncode == 0, third.stderr[-3000:]
    for phase in ("base_direct", "base_cot", "sft", "rlvr", "eval_sft", "eval_rlvr", "analyze"):
        assert f"skip {phase}" in third.stderr, phase
    assert before == {p: p.stat().st_mtime_ns for p in (out / "eval").rglob("predictions.jsonl")}
