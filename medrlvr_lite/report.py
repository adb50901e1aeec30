"""The study report: the paper's Figure 3 (accuracy bars) and Figure 2 (training curves), from saved files.

    medrlvr-lite report runs/study          # rebuilds runs/study/report.md and runs/study/figures/*.png

    from medrlvr_lite.report import write_report
    write_report("runs/study")

Everything is read from the study directory; nothing is recomputed except the training dynamics when the
RLVR run has a ``completions.jsonl`` but no ``dynamics.json`` yet. Plots use matplotlib's Agg canvas
(no display needed).

``results.json`` in the study directory (written by the study orchestrator) has this shape; accuracies are
fractions 0..1, the report shows percent:

    {
      "study_dir": "runs/study",
      "config": {... the resolved config ...},
      "versions": {"medrlvr_lite": "0.1.0", "torch": "...", ...},
      "git_commit": "abc123" | null,
      "sets": {"medqa:test": {"role": "in_distribution", "n_options_mean": 4.0},
               "mmlu_pro:health": {"role": "out_of_distribution", "n_options_mean": 9.7}},
      "evaluations": {                      # phases: base_direct, base_cot, sft, rlvr (any may be missing)
        "rlvr": {"medqa:test": {"accuracy": 0.49, "bootstrap_sd": 0.014, "ci95": [lo, hi], "n": 1273,
                                "format_failure_rate": 0.01, "mean_completion_chars": 812.0,
                                "prompt": "r1", ...}, ...}, ...},
      "random": {"medqa:test": 0.25, ...},  # mean of 1 / n_options over the set
      "rlvr_run": "rlvr",                   # the RLVR run directory, relative to the study directory
      "dynamics": {... DynamicsResult.summary() ...}
    }

Report contents: the Figure 3 table (ours vs the paper, percent ± bootstrap SD, n) and bar chart with error
bars; RLVR minus SFT per set with the SD of the difference; Figure 2 style curves (accuracy and mean response
length in characters over training steps, stage windows shaded); a stacked-area plot of stage shares; the
stages over training ("steps a-b: stage"); hacking rates; example completions per stage; config and versions.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medrlvr_lite.dynamics import (
    HACKING_RATES,
    STAGE_LABELS,
    STAGES,
    DynamicsError,
    DynamicsResult,
    analyze,
)

PHASES: tuple[str, ...] = ("random", "base_direct", "base_cot", "sft", "rlvr")
EVAL_PHASES: tuple[str, ...] = ("base_direct", "base_cot", "sft", "rlvr")
PHASE_LABELS: dict[str, str] = {
    "random": "random",
    "base_direct": "base, direct answer",
    "base_cot": "base, chain of thought",
    "sft": "SFT",
    "rlvr": "RLVR",
}
PHASE_COLORS: dict[str, str] = {
    "random": "#8c8c8c",
    "base_direct": "#a6cee3",
    "base_cot": "#1f78b4",
    "sft": "#33a02c",
    "rlvr": "#e31a1c",
}
STAGE_COLORS: dict[str, str] = {
    "format_failure": "#9e9e9e",
    "verbose_formatter": "#4e79a7",
    "concise_structurer": "#59a14f",
    "direct_answer_hacker": "#e15759",
    "step_by_step_exploit": "#f28e2b",
    "reintegrated_reasoning": "#b07aa1",
}
HACKING_LABELS: dict[str, str] = {
    "answer_in_think": "answer given away inside think",
    "reasoning_before_think": "reasoning before `<think>`",
    "text_before_think": "any text before `<think>`",
    "empty_think": "empty think",
    "multiple_letters": "several letters in `<answer>`",
}

# Zhang et al. 2025 (Med-RLVR, arXiv 2502.19655). Figure 3: accuracy %, SD over 1000 bootstrap resamples
# (None where the paper gives none). Figure 2: MedQA test accuracy and mean response length (characters)
# over global steps, read off the plot (approximate).
PAPER_RESULTS: dict[str, Any] = {
    "source": "Zhang, Liu, Qin, Naumann, Poon. Med-RLVR (arXiv 2502.19655, 2025)",
    "sets": {
        "medqa_test": {"label": "MedQA test", "role": "in_distribution", "n": 1273},
        "mmlu_pro_health": {"label": "MMLU-Pro health", "role": "out_of_distribution", "n": 818},
    },
    "accuracy": {
        "random": {"medqa_test": {"pct": 14.25, "sd": None}, "mmlu_pro_health": {"pct": 9.03, "sd": None}},
        "base_direct": {
            "medqa_test": {"pct": 23.46, "sd": None},
            "mmlu_pro_health": {"pct": 25.09, "sd": None},
        },
        "base_cot": {"medqa_test": {"pct": 32.27, "sd": None}, "mmlu_pro_health": {"pct": 27.01, "sd": None}},
        "sft": {"medqa_test": {"pct": 50.03, "sd": 1.35}, "mmlu_pro_health": {"pct": 31.68, "sd": 1.63}},
        "rlvr": {"medqa_test": {"pct": 49.24, "sd": 1.41}, "mmlu_pro_health": {"pct": 40.09, "sd": 1.75}},
    },
    "figure2": {
        "accuracy_pct": [[0, 1], [4, 29], [20, 44], [40, 49], [108, 49]],
        "response_chars": [[0, 300], [4, 3000], [12, 370], [24, 300], [64, 1500], [72, 1500], [108, 860]],
        "stages": [
            [0, 4, "format_failure"],
            [4, 8, "verbose_formatter"],
            [8, 24, "concise_structurer / direct_answer_hacker"],
            [64, 72, "step_by_step_exploit"],
            [72, 108, "reintegrated_reasoning"],
        ],
    },
}

RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"
FIGURES_DIR = "figures"


class ReportError(ValueError):
    """A study directory the report cannot be built from; the message names the file and what is missing."""


def paper_key(spec: str) -> str | None:
    """The PAPER_RESULTS set key for a dataset spec (``medqa:test`` -> ``medqa_test``), None if the paper has
    no numbers for it."""
    name, _, subset = spec.split("@", 1)[0].partition(":")
    name = name.strip().lower().replace("-", "_")
    subset = subset.strip().lower()
    if name.startswith("medqa") and subset == "test":
        return "medqa_test"
    if name in ("mmlu_pro", "mmlupro") and subset == "health":
        return "mmlu_pro_health"
    return None


def paper_accuracy(phase: str, spec: str) -> dict | None:
    """{"pct", "sd"} from the paper's Figure 3 for a phase and dataset spec, or None."""
    key = paper_key(spec)
    return PAPER_RESULTS["accuracy"].get(phase, {}).get(key) if key else None


def set_label(spec: str) -> str:
    """A readable name: the paper's for its sets (``MedQA test``), else the spec without its path."""
    key = paper_key(spec)
    return PAPER_RESULTS["sets"][key]["label"] if key else spec.split("@", 1)[0]


def _set_title(spec: str) -> str:
    label = set_label(spec)
    return f"`{spec}`" if label == spec else f"{label} (`{spec}`)"


# ------------------------------------------------------------------------------------------ results.json


@dataclass
class StudyResults:
    """A study's ``results.json`` (schema in the module docstring), with helpers the report needs."""

    study_dir: Path
    config: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    git_commit: str | None = None
    sets: dict[str, dict] = field(default_factory=dict)
    evaluations: dict[str, dict[str, dict]] = field(default_factory=dict)
    random: dict[str, float] = field(default_factory=dict)
    rlvr_run: str | None = None
    dynamics: dict | None = None

    @classmethod
    def load(cls, study_dir: str | Path) -> StudyResults:
        study = Path(study_dir)
        path = study / RESULTS_FILE
        if not path.is_file():
            raise ReportError(f"{path}: not found; run `medrlvr-lite study` first (it writes results.json)")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ReportError(f"{path}: not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ReportError(f"{path}: expected a JSON object")
        evaluations = data.get("evaluations") or {}
        for phase, per_set in evaluations.items():
            if not isinstance(per_set, dict):
                raise ReportError(f"{path}: evaluations.{phase} must map dataset specs to results")
            for spec, res in per_set.items():
                if not isinstance(res, dict) or "accuracy" not in res:
                    raise ReportError(f"{path}: evaluations.{phase}.{spec} has no 'accuracy'")
        return cls(
            study_dir=study,
            config=data.get("config") or {},
            versions=data.get("versions") or {},
            git_commit=data.get("git_commit"),
            sets=data.get("sets") or {},
            evaluations=evaluations,
            random=data.get("random") or {},
            rlvr_run=data.get("rlvr_run"),
            dynamics=data.get("dynamics"),
        )

    def set_specs(self) -> list[str]:
        """Evaluation sets, in-distribution first, then the rest in their recorded order."""
        specs = list(self.sets)
        for per_set in self.evaluations.values():
            specs += [s for s in per_set if s not in specs]
        specs += [s for s in self.random if s not in specs]
        return sorted(specs, key=lambda s: self.role(s) != "in_distribution")

    def role(self, spec: str) -> str:
        role = (self.sets.get(spec) or {}).get("role")
        if role:
            return role
        in_dist = (self.config.get("study") or {}).get("in_distribution")
        return "in_distribution" if in_dist and spec == in_dist else "out_of_distribution"

    def result(self, phase: str, spec: str) -> dict | None:
        """{"accuracy", "bootstrap_sd", "n", ...} for a phase and set; random: {"accuracy"} only."""
        if phase == "random":
            acc = self.random.get(spec)
            return None if acc is None else {"accuracy": float(acc), "bootstrap_sd": None, "n": None}
        return (self.evaluations.get(phase) or {}).get(spec)

    def rlvr_dir(self) -> Path | None:
        if not self.rlvr_run:
            return None
        p = Path(self.rlvr_run)
        return p if p.is_absolute() else self.study_dir / p


def accuracy_rows(results: StudyResults) -> list[dict]:
    """One row per (phase, set) in percent: ours (with bootstrap SD and n) and the paper's where it has one."""
    rows = []
    for spec in results.set_specs():
        for phase in PHASES:
            res = results.result(phase, spec)
            paper = paper_accuracy(phase, spec)
            if res is None and paper is None:
                continue
            sd = res.get("bootstrap_sd") if res else None
            rows.append(
                {
                    "phase": phase,
                    "set": spec,
                    "role": results.role(spec),
                    "ours_pct": 100 * float(res["accuracy"]) if res else None,
                    "ours_sd_pct": 100 * float(sd) if sd is not None else None,
                    "n": res.get("n") if res else None,
                    "paper_pct": paper["pct"] if paper else None,
                    "paper_sd_pct": paper["sd"] if paper else None,
                }
            )
    return rows


def fmt_pct(pct: float | None, sd: float | None = None) -> str:
    """``49.24 ± 1.41`` (percent, two decimals); ``—`` when missing."""
    if pct is None:
        return "—"
    return f"{pct:.2f}" if sd is None else f"{pct:.2f} ± {sd:.2f}"


def rlvr_minus_sft(results: StudyResults) -> list[dict]:
    """Per set: RLVR - SFT in percent, SD of the difference = sqrt(sd_rlvr^2 + sd_sft^2), and the paper's."""
    out = []
    for spec in results.set_specs():
        r, s = results.result("rlvr", spec), results.result("sft", spec)
        pr, ps = paper_accuracy("rlvr", spec), paper_accuracy("sft", spec)
        row: dict[str, Any] = {"set": spec, "role": results.role(spec), "diff_pct": None, "sd_pct": None}
        if r and s:
            row["diff_pct"] = 100 * (float(r["accuracy"]) - float(s["accuracy"]))
            if r.get("bootstrap_sd") is not None and s.get("bootstrap_sd") is not None:
                row["sd_pct"] = 100 * math.hypot(float(r["bootstrap_sd"]), float(s["bootstrap_sd"]))
        if pr and ps:
            row["paper_diff_pct"] = pr["pct"] - ps["pct"]
            row["paper_sd_pct"] = math.hypot(pr["sd"], ps["sd"])
        if row["diff_pct"] is not None or "paper_diff_pct" in row:
            out.append(row)
    return out


# ------------------------------------------------------------------------------------------------ plots


def _figure(width: float, height: float, nrows: int = 1, sharex: bool = False):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=120, layout="constrained")
    axes = fig.subplots(nrows, 1, sharex=sharex)
    return fig, axes


def _save(fig, out_png: str | Path) -> Path:
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    return out


def _window_edges(windows: list[dict]) -> list[tuple[float, float, str]]:
    """Shaded spans that tile the x axis: boundaries halfway between adjacent windows."""
    spans = []
    for i, w in enumerate(windows):
        left = (windows[i - 1]["end"] + w["start"]) / 2 if i else w["start"] - 0.5
        right = (w["end"] + windows[i + 1]["start"]) / 2 if i + 1 < len(windows) else w["end"] + 0.5
        spans.append((left, right, w["stage"]))
    return spans


def _as_dynamics(dynamics: DynamicsResult | dict) -> DynamicsResult:
    return dynamics if isinstance(dynamics, DynamicsResult) else DynamicsResult.from_dict(dynamics)


def _stage_legend_handles(stages: list[str]):
    from matplotlib.patches import Patch

    return [Patch(facecolor=STAGE_COLORS[s], alpha=0.35, label=STAGE_LABELS[s]) for s in stages]


def plot_training_curves(
    dynamics: DynamicsResult | dict, metrics_rows: list[dict] | None, out_png: str | Path
) -> Path:
    """Figure 2 style: accuracy (%) and mean response length (characters) over training steps, two panels,
    the dynamics' stage windows shaded. Uses metrics.jsonl rows (all rollouts) where they have ``accuracy``
    / ``completion_chars``, else the logged completions' per-step values."""
    dyn = _as_dynamics(dynamics)
    metrics_rows = [r for r in (metrics_rows or []) if "step" in r]
    acc_pts = [(r["step"], 100 * r["accuracy"]) for r in metrics_rows if r.get("accuracy") is not None]
    len_pts = [
        (r["step"], r["completion_chars"]) for r in metrics_rows if r.get("completion_chars") is not None
    ]
    source = "all training rollouts, metrics.jsonl"
    if not acc_pts:
        acc_pts = [(s["step"], 100 * s["accuracy"]) for s in dyn.steps]
        source = "logged completions, completions.jsonl"
    if not len_pts:
        len_pts = [(s["step"], s["mean_completion_chars"]) for s in dyn.steps]
    fig, (ax_acc, ax_len) = _figure(8.0, 6.0, nrows=2, sharex=True)
    spans = _window_edges(dyn.windows)
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_acc, ax_len):
        for left, right, stage in spans:
            ax.axvspan(left, right, color=STAGE_COLORS[stage], alpha=0.18, linewidth=0)
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    marker = "o" if len(acc_pts) <= 40 else None
    ax_acc.plot(
        [p[0] for p in acc_pts],
        [p[1] for p in acc_pts],
        color="black",
        marker=marker,
        markersize=3,
        linewidth=1.5,
    )
    ax_acc.set_ylabel("accuracy (% correct)")
    ax_acc.set_ylim(0, max(5.0, min(100.0, max(p[1] for p in acc_pts) * 1.15)))
    ax_acc.set_title(f"Accuracy and mean response length over training ({source})", fontsize=10)
    ax_len.plot(
        [p[0] for p in len_pts],
        [p[1] for p in len_pts],
        color="#1f4e79",
        marker=marker,
        markersize=3,
        linewidth=1.5,
    )
    ax_len.set_ylabel("mean response length (characters)")
    ax_len.set_ylim(0, max(p[1] for p in len_pts) * 1.15 or 1.0)
    ax_len.set_xlabel("training step")
    if spans:
        ax_len.set_xlim(spans[0][0], spans[-1][1])
    stages = list(dict.fromkeys(w["stage"] for w in dyn.windows))
    if stages:
        fig.legend(
            handles=_stage_legend_handles(stages),
            loc="outside lower center",
            ncol=min(3, len(stages)),
            title="dominant stage (shaded)",
            fontsize=8,
            title_fontsize=8,
            frameon=False,
        )
    return _save(fig, out_png)


def _steps_xy(
    steps: list[int], lo: list[float], hi: list[float]
) -> tuple[list[float], list[float], list[float]]:
    """Piecewise-constant outline: step i covers [midpoint to previous, midpoint to next]."""
    xs, ls, hs = [], [], []
    for i, step in enumerate(steps):
        left = (steps[i - 1] + step) / 2 if i else step - 0.5
        right = (step + steps[i + 1]) / 2 if i + 1 < len(steps) else step + 0.5
        xs += [left, right]
        ls += [lo[i], lo[i]]
        hs += [hi[i], hi[i]]
    return xs, ls, hs


def plot_stage_shares(dynamics: DynamicsResult | dict, out_png: str | Path) -> Path:
    """Stacked area of the six stages' shares (%) of logged completions over training steps."""
    dyn = _as_dynamics(dynamics)
    if not dyn.steps:
        raise ReportError("the dynamics have no steps to plot")
    steps = [s["step"] for s in dyn.steps]
    present = [st for st in STAGES if any(s["shares"].get(st, 0) for s in dyn.steps)]
    ys = [[100 * s["shares"].get(st, 0.0) for s in dyn.steps] for st in present]
    from matplotlib.ticker import MaxNLocator

    fig, ax = _figure(8.0, 4.2)
    # Logged steps are discrete: each step's shares fill the x range up to halfway to its neighbours.
    bottom = [0.0] * len(steps)
    for st, y in zip(present, ys, strict=True):
        top = [b + v for b, v in zip(bottom, y, strict=True)]
        xs, lo, hi = _steps_xy(steps, bottom, top)
        ax.fill_between(xs, lo, hi, color=STAGE_COLORS[st], label=STAGE_LABELS[st], alpha=0.9, linewidth=0)
        bottom = top
    ax.set_xlim(steps[0] - 0.5, steps[-1] + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(0, 100)
    ax.set_xlabel("training step")
    ax.set_ylabel("share of logged completions (%)")
    ax.set_title("Behaviour stages over training", fontsize=10)
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(
        handles[::-1],
        labels[::-1],
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=8,
        frameon=False,
        title="stage (top to bottom)",
        title_fontsize=8,
    )
    return _save(fig, out_png)


def plot_accuracy_bars(rows: list[dict], out_png: str | Path) -> Path:
    """Figure 3: grouped bars (random, base direct, base CoT, SFT, RLVR) per evaluation set, error bars =
    bootstrap SD; the paper's numbers as hatched, lighter bars beside ours where the paper has them.
    ``rows``: ``accuracy_rows`` output (percent)."""
    if not rows:
        raise ReportError("no accuracies to plot")
    from matplotlib.patches import Patch

    specs = list(dict.fromkeys(r["set"] for r in rows))
    by_key = {(r["phase"], r["set"]): r for r in rows}
    has_paper = {s: any(by_key.get((p, s), {}).get("paper_pct") is not None for p in PHASES) for s in specs}
    slot = 0.8 / len(PHASES)
    fig, ax = _figure(max(6.5, 3.2 * len(specs) + 1.5), 4.8)
    top = 0.0
    for gi, spec in enumerate(specs):
        for pi, phase in enumerate(PHASES):
            r = by_key.get((phase, spec))
            if r is None:
                continue
            center = gi - 0.4 + slot * (pi + 0.5)
            paired = has_paper[spec]
            width = slot * 0.46 if paired else slot * 0.8
            x_ours = center - width / 2 if paired else center
            color = PHASE_COLORS[phase]
            if r["ours_pct"] is not None:
                ax.bar(
                    x_ours,
                    r["ours_pct"],
                    width,
                    color=color,
                    edgecolor="black",
                    linewidth=0.5,
                    yerr=r["ours_sd_pct"],
                    capsize=2,
                    error_kw={"elinewidth": 0.8},
                )
                ax.text(
                    x_ours,
                    r["ours_pct"] + (r["ours_sd_pct"] or 0) + 0.8,
                    f"{r['ours_pct']:.1f}",
                    ha="center",
                    va="bottom",
                    fontsize=6,
                    rotation=90,
                )
                top = max(top, r["ours_pct"] + (r["ours_sd_pct"] or 0))
            if paired and r["paper_pct"] is not None:
                x_paper = center + width / 2
                ax.bar(
                    x_paper,
                    r["paper_pct"],
                    width,
                    color=color,
                    alpha=0.45,
                    hatch="///",
                    edgecolor="#444444",
                    linewidth=0.5,
                    yerr=r["paper_sd_pct"],
                    capsize=2,
                    error_kw={"elinewidth": 0.8},
                )
                ax.text(
                    x_paper,
                    r["paper_pct"] + (r["paper_sd_pct"] or 0) + 0.8,
                    f"{r['paper_pct']:.1f}",
                    ha="center",
                    va="bottom",
                    fontsize=6,
                    rotation=90,
                    color="#444444",
                )
                top = max(top, r["paper_pct"] + (r["paper_sd_pct"] or 0))
    labels = []
    for spec in specs:
        role = by_key.get(next((p, spec) for p in PHASES if (p, spec) in by_key))["role"]
        n = next((by_key[(p, spec)]["n"] for p in EVAL_PHASES if by_key.get((p, spec), {}).get("n")), None)
        role_text = "in-distribution" if role == "in_distribution" else "out-of-distribution"
        labels.append(f"{set_label(spec)}\n({role_text}{f', n={n}' if n else ''})")
    ax.set_xticks(range(len(specs)), labels, fontsize=9)
    ax.set_xlim(-0.5, len(specs) - 0.5)
    ax.set_ylim(0, max(10.0, top * 1.2 + 4))
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Accuracy by model and evaluation set (error bars: bootstrap SD)", fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    handles = [
        Patch(facecolor=PHASE_COLORS[p], edgecolor="black", linewidth=0.5, label=PHASE_LABELS[p])
        for p in PHASES
        if any(r["phase"] == p for r in rows)
    ]
    if any(has_paper.values()):
        handles += [
            Patch(facecolor="white", edgecolor="black", linewidth=0.5, label="ours (solid)"),
            Patch(
                facecolor="#dddddd",
                edgecolor="#444444",
                hatch="///",
                linewidth=0.5,
                label="paper, Zhang et al. 2025 (hatched)",
            ),
        ]
    fig.legend(
        handles=handles, loc="outside lower center", ncol=min(4, len(handles)), fontsize=8, frameon=False
    )
    return _save(fig, out_png)


def read_jsonl(path: str | Path) -> list[dict]:
    """Rows of a JSONL file ([] when missing); names the file and line on bad JSON."""
    p = Path(path)
    if not p.is_file():
        return []
    rows = []
    for lineno, line in enumerate(p.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ReportError(f"{p}:{lineno}: not valid JSON: {exc.msg}") from None
    return rows


def plot_run(
    run_dir: str | Path,
    dynamics: DynamicsResult | None = None,
    out_dir: str | Path | None = None,
) -> dict[str, Path]:
    """Training curves and stage shares of one RLVR run (PNG files in ``out_dir``, default the run dir)."""
    run = Path(run_dir)
    dyn = dynamics or load_or_analyze(run)
    out = Path(out_dir) if out_dir is not None else run
    return {
        "training_curves": plot_training_curves(
            dyn, read_jsonl(run / "metrics.jsonl"), out / "training_curves.png"
        ),
        "stage_shares": plot_stage_shares(dyn, out / "stage_shares.png"),
    }


def load_or_analyze(run_dir: Path, window: int | None = None) -> DynamicsResult:
    """The run's dynamics.json, or analyse its completions.jsonl (writing dynamics.json) when there is none,
    it is older than the completions, or another ``window`` is asked for."""
    saved, logged = run_dir / "dynamics.json", run_dir / "completions.jsonl"
    fresh = saved.is_file() and (not logged.is_file() or saved.stat().st_mtime >= logged.stat().st_mtime)
    if fresh:
        dyn = DynamicsResult.load(saved)
        if window is None or dyn.window == window:
            return dyn
    return analyze(run_dir, window=window)


# ----------------------------------------------------------------------------------------------- report


def _fence(text: str) -> str:
    ticks = "```"
    while ticks in text:
        ticks += "`"
    return f"{ticks}text\n{text}\n{ticks}"


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _signed(pct: float | None, sd: float | None) -> str:
    if pct is None:
        return "—"
    return f"{pct:+.2f}" if sd is None else f"{pct:+.2f} ± {sd:.2f}"


def write_report(study_dir: str | Path, *, window: int | None = None) -> Path:
    """Build ``report.md`` and ``figures/*.png`` in the study directory from its saved files; returns the path."""
    results = StudyResults.load(study_dir)
    study = results.study_dir
    figs = study / FIGURES_DIR
    rows = accuracy_rows(results)
    specs = results.set_specs()
    md: list[str] = ["# Med-RLVR study report", ""]
    md += [
        f"Study directory: `{study}`. Model: `{(results.config.get('model') or {}).get('name_or_path', '?')}`. "
        f"Git commit: `{results.git_commit or 'unknown'}`.",
        "",
        "Accuracies are percent; ± is the bootstrap SD over resamples of the evaluation set; n is the number of "
        f"questions. The paper's numbers are from {PAPER_RESULTS['source']}, Figure 3 (PPO on Qwen2.5-3B, MedQA "
        "with more than four options); they are shown only for the sets the paper evaluates.",
        "",
    ]

    # Figure 3 table + bars.
    md += ["## Accuracy (the paper's Figure 3)", ""]
    if rows:
        header = ["model"]
        for spec in specs:
            role = "in-distribution" if results.role(spec) == "in_distribution" else "out-of-distribution"
            header.append(f"{_set_title(spec)}, {role}: ours")
            if paper_key(spec):
                header.append(f"{set_label(spec)}: paper")
        body = []
        for phase in PHASES:
            line = [PHASE_LABELS[phase]]
            for spec in specs:
                res = results.result(phase, spec)
                if res is None:
                    cell = "—"
                else:
                    sd = res.get("bootstrap_sd")
                    cell = fmt_pct(100 * float(res["accuracy"]), None if sd is None else 100 * float(sd))
                    if res.get("n"):
                        cell += f" (n={res['n']})"
                line.append(cell)
                if paper_key(spec):
                    p = paper_accuracy(phase, spec)
                    line.append(fmt_pct(p["pct"], p["sd"]) if p else "—")
            body.append(line)
        md += _md_table(header, body)
        bars = plot_accuracy_bars(rows, figs / "accuracy_bars.png")
        md += ["", f"![Accuracy by model and set]({bars.relative_to(study).as_posix()})", ""]
        md += ["Random: the mean over questions of 1 / number of options.", ""]
        extra = []
        for phase in EVAL_PHASES:
            for spec in specs:
                res = results.result(phase, spec)
                if res is None:
                    continue
                ffr = res.get("format_failure_rate")
                mcc = res.get("mean_completion_chars")
                extra.append(
                    [
                        PHASE_LABELS[phase],
                        f"`{spec}`",
                        str(res.get("prompt", "—")),
                        "—" if ffr is None else f"{100 * ffr:.1f}",
                        "—" if mcc is None else f"{mcc:.0f}",
                    ]
                )
        if extra:
            md += ["Format failures and response lengths of the evaluations:", ""]
            md += _md_table(
                ["model", "set", "prompt", "format failures (%)", "mean completion (chars)"], extra
            )
            md += [""]
    else:
        md += ["No evaluation results in results.json yet.", ""]

    # RLVR - SFT.
    diffs = rlvr_minus_sft(results)
    md += ["## RLVR minus SFT", ""]
    if diffs:
        body = []
        for d in diffs:
            z = f"{d['diff_pct'] / d['sd_pct']:+.1f}" if d["diff_pct"] is not None and d["sd_pct"] else "—"
            paper = _signed(d.get("paper_diff_pct"), d.get("paper_sd_pct")) if "paper_diff_pct" in d else "—"
            role = "in-distribution" if d["role"] == "in_distribution" else "out-of-distribution"
            body.append([_set_title(d["set"]), role, _signed(d["diff_pct"], d["sd_pct"]), z, paper])
        md += _md_table(["set", "role", "RLVR − SFT (points ± SD)", "difference / SD", "paper"], body)
        md += [
            "",
            "The SD of a difference is sqrt(SD_RLVR² + SD_SFT²), treating the two bootstrap estimates as "
            "independent (both models answer the same questions, so a paired bootstrap could give a smaller SD).",
            "",
        ]
    else:
        md += ["Needs both SFT and RLVR evaluations.", ""]

    # Training dynamics.
    md += ["## Training dynamics (the paper's Figure 2)", ""]
    run = results.rlvr_dir()
    dyn: DynamicsResult | None = None
    if run is None:
        md += ["No RLVR run recorded in results.json (`rlvr_run`).", ""]
    elif not run.is_dir():
        md += [f"The RLVR run directory `{run}` does not exist.", ""]
    else:
        try:
            dyn = load_or_analyze(run, window)
        except DynamicsError as exc:
            md += [f"No training dynamics: {exc}", ""]
    if dyn is not None:
        metrics = read_jsonl(run / "metrics.jsonl")
        curves = plot_training_curves(dyn, metrics, figs / "training_curves.png")
        shares = plot_stage_shares(dyn, figs / "stage_shares.png")
        md += [
            f"From `{Path(dyn.source).name}` of the RLVR run `{results.rlvr_run}`: {dyn.n} logged completions "
            f"over {len(dyn.steps)} logged steps, windows of {dyn.window} steps.",
            "",
            f"![Accuracy and response length over training]({curves.relative_to(study).as_posix()})",
            "",
            f"![Stage shares over training]({shares.relative_to(study).as_posix()})",
            "",
            "The paper (Figure 2, about 108 steps): accuracy ~1% at step 0, ~29% at step 4, ~44% at step 20, "
            "~49% plateau; length ~300 characters at step 0, ~3,000 at step 4 (verbose), ~300-370 over steps "
            "12-24 (concise / hacking), ~1,500 over steps 64-72 (step-by-step exploit), ~860 by step 108 "
            "(reintegrated reasoning).",
            "",
            "### Stages over training",
            "",
        ]
        md += [f"- {line}" for line in dyn.describe_windows().splitlines()]
        if dyn.reintegration_after_step is not None:
            md += [
                "",
                f"Concise completions after step {dyn.reintegration_after_step} (the end of the first window "
                "dominated by hacking) count as reintegrated reasoning.",
            ]
        md += [
            "",
            "### Hacking rates",
            "",
            "Shares of logged completions (%), over the whole run and per window:",
            "",
        ]
        header = (
            ["steps"]
            + [HACKING_LABELS[k] for k in HACKING_RATES]
            + ["accuracy", "format valid", "mean chars"]
        )
        body = [
            ["all"]
            + [f"{100 * dyn.totals['hacking'][k]:.1f}" for k in HACKING_RATES]
            + [
                f"{100 * dyn.totals['accuracy']:.1f}",
                f"{100 * dyn.totals['format_ok']:.1f}",
                f"{dyn.totals['mean_completion_chars']:.0f}",
            ]
        ]
        for w in dyn.windows:
            body.append(
                [f"{w['start']}-{w['end']} ({STAGE_LABELS[w['stage']]})"]
                + [f"{100 * w['hacking'][k]:.1f}" for k in HACKING_RATES]
                + [
                    f"{100 * w['accuracy']:.1f}",
                    f"{100 * w['format_ok']:.1f}",
                    f"{w['mean_completion_chars']:.0f}",
                ]
            )
        md += _md_table(header, body)
        md += ["", "### Example completions per stage", ""]
        rules = ", ".join(f"{k}={v}" for k, v in dyn.rules.items())
        md += [f"Classifier thresholds (characters): {rules}. Rules: `medrlvr_lite/dynamics.py`.", ""]
        for stage in STAGES:
            examples = dyn.examples.get(stage)
            if not examples:
                continue
            share = 100 * dyn.totals["shares"].get(stage, 0.0)
            md += [f"#### {STAGE_LABELS[stage]} ({share:.1f}% of logged completions)", ""]
            for ex in examples:
                verdict = "correct" if ex["correct"] else "wrong"
                md += [
                    f"{ex['why']}, step {ex['step']}, prompt `{ex['prompt_id']}`, gold {ex['gold']}, answered "
                    f"{ex['letter'] or '—'} ({verdict}), {ex['completion_chars']} characters:",
                    "",
                    _fence(ex["completion"]),
                    "",
                ]

    # Config and versions.
    md += ["## Config and versions", ""]
    if results.versions:
        md += _md_table(["package", "version"], [[str(k), str(v)] for k, v in results.versions.items()]) + [
            ""
        ]
    md += [
        "Resolved config:",
        "",
        "```yaml",
        yaml.safe_dump(results.config, sort_keys=False).rstrip(),
        "```",
        "",
    ]
    out = study / REPORT_FILE
    out.write_text("\n".join(md))
    return out
