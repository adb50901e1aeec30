"""The study in one command: base, SFT and RLVR, in- and out-of-distribution, with the training dynamics.

    medrlvr-lite study --config configs/study_qwen2.5-3b_medqa.yaml
    medrlvr-lite study --config configs/smoke.yaml            # offline, CPU, tiny model, a few minutes
    medrlvr-lite study --config ... --only rlvr,eval_rlvr      # partial runs: --only / --skip / --from PHASE

Phases, in order (each writes where its stand-alone command writes, so each can also be run alone):

| phase        | what                                                         | output (inside the study dir)  |
|--------------|--------------------------------------------------------------|--------------------------------|
| base_direct  | base model, direct-answer prompt, every evaluation set       | ``eval/base_direct/``          |
| base_cot     | base model, chain-of-thought prompt, every evaluation set    | ``eval/base_cot/``             |
| sft          | SFT on the training set (paper: answers only)                | ``sft/``                       |
| rlvr         | RLVR with GRPO and the verifier's reward                     | ``rlvr/``                      |
| eval_sft     | base + SFT adapter, direct prompt, every evaluation set      | ``eval/sft/``                  |
| eval_rlvr    | base + RLVR adapter, r1 prompt, every evaluation set         | ``eval/rlvr/``                 |
| analyze      | the six stages of the training dynamics from RLVR's logs     | ``rlvr/dynamics.json``         |
| report       | results.json, report.md and the PNG plots                    | ``results.json``, ``report.md`` |

A phase whose outputs are complete is skipped, so a rerun after a crash or a disconnect continues where it
stopped (training phases resume from their last checkpoint; evaluations from the predictions already written).
``study.json`` in the study dir records what ran, when, with which config (a hash of it), and how it ended.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from medrlvr_lite.config import Config, save_config

PHASES: tuple[str, ...] = (
    "base_direct",
    "base_cot",
    "sft",
    "rlvr",
    "eval_sft",
    "eval_rlvr",
    "analyze",
    "report",
)
console = Console(stderr=True)


class StudyError(ValueError):
    """A bad phase selection or a missing input the user has to fix."""


def eval_sets(cfg: Config) -> list[str]:
    """The in-distribution set first, then each out-of-distribution set (no duplicates)."""
    sets = [cfg.study.in_distribution] + [s for s in cfg.study.out_of_distribution if s]
    return list(dict.fromkeys(sets))


def select_phases(
    only: list[str] | None = None, skip: list[str] | None = None, start: str | None = None
) -> list[str]:
    """The phases to run, in order, from ``--only``, ``--skip`` and ``--from``."""
    for name in [*(only or []), *(skip or []), *([start] if start else [])]:
        if name not in PHASES:
            raise StudyError(f"unknown phase {name!r}; phases are: {', '.join(PHASES)}")
    chosen = list(PHASES)
    if start:
        chosen = chosen[chosen.index(start) :]
    if only:
        chosen = [p for p in chosen if p in only]
    return [p for p in chosen if p not in (skip or [])]


class Study:
    """Runs the phases of one study directory; every phase is idempotent."""

    def __init__(self, cfg: Config, output_dir: str | Path | None = None):
        self.cfg = cfg.model_copy(deep=True)
        self.dir = Path(output_dir or cfg.study.output_dir)
        self.cfg.study.output_dir = str(self.dir)
        self.cfg.sft.output_dir = str(self.dir / "sft")
        self.cfg.rlvr.output_dir = str(self.dir / "rlvr")
        self.cfg.eval.output_dir = str(self.dir / "eval")
        self.sets = eval_sets(self.cfg)
        self.state_path = self.dir / "study.json"

    # --- bookkeeping -------------------------------------------------------------------------------------------
    def config_hash(self) -> str:
        blob = json.dumps(self.cfg.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def _state(self) -> dict[str, Any]:
        if self.state_path.is_file():
            return json.loads(self.state_path.read_text())
        return {"phases": {}, "history": []}

    def _record(self, phase: str, status: str, seconds: float, note: str = "") -> None:
        state = self._state()
        entry = {
            "phase": phase,
            "status": status,
            "seconds": round(seconds, 2),
            "config_hash": self.config_hash(),
            "at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "note": note,
        }
        state["phases"][phase] = entry
        state["history"].append(entry)
        state["sets"] = self.sets
        self.state_path.write_text(json.dumps(state, indent=2))

    # --- completeness ------------------------------------------------------------------------------------------
    def eval_dir(self, phase: str) -> Path:
        return self.dir / "eval" / phase.removeprefix("eval_")

    def _eval_complete(self, phase: str) -> bool:
        from medrlvr_lite.evaluate import slugify as slug

        base = self.eval_dir(phase)
        return all((base / slug(spec) / "results.json").is_file() for spec in self.sets)

    def _train_complete(self, name: str) -> bool:
        run = self.dir / name
        return (run / "adapter" / "adapter_config.json").is_file() and (run / "run.json").is_file()

    def is_complete(self, phase: str) -> bool:
        if phase in ("base_direct", "base_cot", "eval_sft", "eval_rlvr"):
            return self._eval_complete(phase)
        if phase in ("sft", "rlvr"):
            return self._train_complete(phase)
        if phase == "analyze":
            return (self.dir / "rlvr" / "dynamics.json").is_file()
        if phase == "report":
            return (self.dir / "report.md").is_file() and (self.dir / "results.json").is_file()
        raise StudyError(f"unknown phase {phase!r}")

    # --- phases ------------------------------------------------------------------------------------------------
    def _evaluate(self, phase: str, prompt: str, adapter: Path | None) -> None:
        from medrlvr_lite.evaluate import evaluate

        if adapter is not None and not (adapter / "adapter_config.json").is_file():
            raise StudyError(f"phase {phase}: no adapter at {adapter}; run the training phase first")
        eval_cfg = self.cfg.eval.model_copy(update={"prompt": prompt})
        evaluate(
            self.cfg.model,
            eval_cfg,
            adapter=str(adapter) if adapter else None,
            datasets=self.sets,
            output_dir=str(self.eval_dir(phase)),
            data_options=self.cfg.data,
            limit=self.cfg.study.eval_limit,
        )

    def run_phase(self, phase: str) -> None:
        if phase == "base_direct":
            self._evaluate(phase, "direct", None)
        elif phase == "base_cot":
            self._evaluate(phase, "cot", None)
        elif phase == "sft":
            from medrlvr_lite.sft import train_sft

            train_sft(self.cfg, resume=True, output_dir=self.cfg.sft.output_dir, lr_grid=self.cfg.sft.lr_grid)
        elif phase == "rlvr":
            from medrlvr_lite.rlvr import train_rlvr

            train_rlvr(self.cfg, resume=True, output_dir=self.cfg.rlvr.output_dir)
        elif phase == "eval_sft":
            self._evaluate(phase, self.cfg.sft.prompt, self.dir / "sft" / "adapter")
        elif phase == "eval_rlvr":
            self._evaluate(phase, self.cfg.rlvr.prompt, self.dir / "rlvr" / "adapter")
        elif phase == "analyze":
            from medrlvr_lite.dynamics import analyze

            analyze(self.dir / "rlvr")
        elif phase == "report":
            self.write_results()
            from medrlvr_lite.report import write_report

            write_report(self.dir)
        else:
            raise StudyError(f"unknown phase {phase!r}")

    def run(
        self, phases: list[str] | None = None, force: bool = False, on_phase: Callable | None = None
    ) -> Path:
        """Run ``phases`` (default: all) in order, skipping complete ones unless ``force``."""
        self.dir.mkdir(parents=True, exist_ok=True)
        save_config(self.cfg, self.dir / "config.yaml")
        for phase in phases or list(PHASES):
            if not force and phase != "report" and self.is_complete(phase):
                console.print(f"[dim]skip[/] {phase}: outputs complete")
                self._record(phase, "skipped", 0.0, "outputs complete")
                continue
            console.rule(f"[bold]{phase}")
            if on_phase:
                on_phase(phase)
            start = time.perf_counter()
            try:
                self.run_phase(phase)
            except BaseException as exc:
                stopped = (
                    isinstance(exc, (KeyboardInterrupt, SystemExit))
                    or type(exc).__name__ == "TrainingInterrupted"
                )
                status = "interrupted" if stopped else "failed"
                self._record(phase, status, time.perf_counter() - start, f"{type(exc).__name__}: {exc}")
                raise
            self._record(phase, "done", time.perf_counter() - start)
        return self.dir

    # --- results -----------------------------------------------------------------------------------------------
    def write_results(self) -> dict[str, Any]:
        """Collect every phase's numbers into ``results.json`` (the report reads only saved files)."""
        from medrlvr_lite.data import load_records
        from medrlvr_lite.evaluate import git_commit, package_versions
        from medrlvr_lite.evaluate import slugify as slug

        evaluations: dict[str, dict[str, Any]] = {}
        for phase in ("base_direct", "base_cot", "eval_sft", "eval_rlvr"):
            name = phase.removeprefix("eval_")
            for spec in self.sets:
                path = self.eval_dir(phase) / slug(spec) / "results.json"
                if path.is_file():
                    evaluations.setdefault(name, {})[spec] = json.loads(path.read_text())
        sets: dict[str, Any] = {}
        random: dict[str, float] = {}
        for i, spec in enumerate(self.sets):
            records = load_records(spec, self.cfg.data)
            if self.cfg.study.eval_limit:
                records = records[: self.cfg.study.eval_limit]
            n_opts = [len(r.options) for r in records]
            random[spec] = sum(1.0 / n for n in n_opts) / len(n_opts) if n_opts else 0.0
            sets[spec] = {
                "role": "in_distribution" if i == 0 else "out_of_distribution",
                "n": len(records),
                "n_options_mean": sum(n_opts) / len(n_opts) if n_opts else 0.0,
            }
        dynamics = None
        if (self.dir / "rlvr" / "dynamics.json").is_file():
            from medrlvr_lite.dynamics import DynamicsResult

            dynamics = DynamicsResult.load(self.dir / "rlvr").summary()
        results = {
            "study_dir": str(self.dir),
            "config": self.cfg.model_dump(mode="json"),
            "config_hash": self.config_hash(),
            "versions": package_versions(),
            "git_commit": git_commit(),
            "sets": sets,
            "random": random,
            "evaluations": evaluations,
            "rlvr_run": "rlvr",
            "sft_run": "sft",
            "dynamics": dynamics,
        }
        (self.dir / "results.json").write_text(json.dumps(results, indent=2))
        return results


def run_study(
    cfg: Config,
    *,
    output_dir: str | None = None,
    only: list[str] | None = None,
    skip: list[str] | None = None,
    start: str | None = None,
    force: bool = False,
) -> Path:
    """Run the study; returns the study directory (report.md and results.json inside)."""
    phases = select_phases(only, skip, start)
    return Study(cfg, output_dir).run(phases, force=force)
