"""Study orchestration logic that needs no training: phase selection, skipping, bookkeeping."""

from __future__ import annotations

import json

import pytest

from medrlvr_lite.config import load_config
from medrlvr_lite.study import PHASES, Study, StudyError, eval_sets, select_phases


def test_select_phases_only_skip_from():
    assert select_phases() == list(PHASES)
    assert select_phases(start="rlvr") == ["rlvr", "eval_sft", "eval_rlvr", "analyze", "report"]
    assert select_phases(only=["sft", "base_cot"]) == ["base_cot", "sft"]  # always in study order
    assert select_phases(skip=["base_direct", "base_cot"])[0] == "sft"
    assert select_phases(start="sft", only=["base_direct", "rlvr"]) == ["rlvr"]
    with pytest.raises(StudyError, match="unknown phase 'rl'"):
        select_phases(only=["rl"])


def test_eval_sets_in_distribution_first_without_duplicates():
    cfg = load_config(
        None, ["study.in_distribution=medqa:test", "study.out_of_distribution=[mmlu_pro:health, medqa:test]"]
    )
    assert eval_sets(cfg) == ["medqa:test", "mmlu_pro:health"]


def test_study_points_every_phase_into_its_directory(tmp_path):
    study = Study(load_config(None), tmp_path / "s")
    assert study.cfg.rlvr.output_dir == str(tmp_path / "s" / "rlvr")
    assert study.cfg.sft.output_dir == str(tmp_path / "s" / "sft")
    assert study.eval_dir("eval_rlvr") == tmp_path / "s" / "eval" / "rlvr"
    assert study.eval_dir("base_cot") == tmp_path / "s" / "eval" / "base_cot"


def test_complete_phases_are_skipped_and_recorded(tmp_path, monkeypatch):
    cfg = load_config(None, ["study.in_distribution=smoke", "study.out_of_distribution=[]"])
    study = Study(cfg, tmp_path / "s")
    ran: list[str] = []
    monkeypatch.setattr(Study, "run_phase", lambda self, phase: ran.append(phase))
    # base_direct is complete on disk: its results.json exists for every set
    done = study.eval_dir("base_direct") / "smoke"
    done.mkdir(parents=True)
    (done / "results.json").write_text("{}")
    study.run(["base_direct", "base_cot"])
    assert ran == ["base_cot"]
    state = json.loads((tmp_path / "s" / "study.json").read_text())
    assert state["phases"]["base_direct"]["status"] == "skipped"
    assert state["phases"]["base_cot"]["status"] == "done"
    assert state["phases"]["base_cot"]["config_hash"] == study.config_hash()
    assert (tmp_path / "s" / "config.yaml").is_file()


def test_a_failing_phase_is_recorded_and_raised(tmp_path, monkeypatch):
    study = Study(
        load_config(None, ["study.in_distribution=smoke", "study.out_of_distribution=[]"]), tmp_path
    )

    def boom(self, phase):
        raise RuntimeError("disk full")

    monkeypatch.setattr(Study, "run_phase", boom)
    with pytest.raises(RuntimeError):
        study.run(["sft"])
    state = json.loads((tmp_path / "study.json").read_text())
    assert state["phases"]["sft"]["status"] == "failed" and "disk full" in state["phases"]["sft"]["note"]
