"""Training dynamics: classify logged RLVR completions into the paper's six stages, step by step.

Med-RLVR (Zhang et al., 2025) describes six behaviours that follow one another during RLVR on a base model.
This module reads the ``completions.jsonl`` that ``train rlvr`` writes (each line carries the completion and
the verifier's flags, see COMMON.md), classifies every completion, and summarises the run per logged step and
over windows of steps, so the report can say "steps 40-80: step-by-step exploit".

    medrlvr-lite analyze runs/rlvr [--window 8]          # writes runs/rlvr/dynamics.json (+ PNGs)

    from medrlvr_lite.dynamics import analyze, classify
    result = analyze("runs/rlvr")
    print(result.describe_windows())

Classification of one completion (``classify``), rules applied in this order, first match wins.
Lengths are in characters (the paper's Figure 2 measures characters); thresholds are keyword arguments
(and fields of :class:`StageRules`) with the defaults shown:

1. ``format_failure``: the verifier's ``format_ok`` is false (tags missing or malformed; reward -1).
2. ``step_by_step_exploit``: the text before ``<think>`` holds reasoning: at least ``before_think_chars``
   (100) characters, and at least as many as the think part (the reasoning is outside the tags, which
   hold little more than the final option).
3. ``direct_answer_hacker``: the think part is (nearly) empty: fewer than ``concise_chars`` (80) characters
   (the verifier's ``empty_think`` counts as 0), or it states the answer (``answer_in_think``) in fewer than
   ``answer_think_chars`` (200) characters, e.g. ``<think> The best treatment here is ketotifen eye drops.
   </think><answer> B </answer>``.
4. ``verbose_formatter``: the think part is long: at least ``verbose_chars`` (1500) characters, or it walks
   through most options: at least ``walk_min_chars`` (600) characters that discuss at least
   ``max(3, ceil(walk_share * n_options))`` (walk_share 0.75) distinct options (lines starting ``A.``/``A)``
   /``(A)``, or ``option A``/``choice A`` anywhere; ``n_options`` is read from the prompt's option lines).
5. ``concise_structurer``: everything else, a short but real reasoning inside think, then the letter.

``reintegrated_reasoning`` has the same shape as a concise structurer; what differs is *when* it happens.
Per completion, ``classify`` never returns it. The run-level analysis (``analyze``) relabels concise
completions as ``reintegrated_reasoning`` in every window after the first window whose dominant stage
was a hacking stage (direct-answer hacker or step-by-step exploit).

Run-level analysis (``analyze``): logged steps are grouped into windows of ``window`` training steps
counted from the first logged step (default: a sixteenth of the logged span, at least 1; 7 for the paper's
108 steps); a window's dominant stage is the most frequent stage among its completions (ties: the earlier
stage in ``STAGES``); adjacent windows with the same dominant stage are merged. Per step it reports the share of each stage, the hacking
rates (``answer_in_think``, ``reasoning_before_think`` = text before think of at least
``before_think_chars`` characters, ``text_before_think`` = any, ``empty_think``, ``multiple_letters``;
all as fractions of the step's logged completions), accuracy (share correct), format-valid share, mean
completion and think characters, and n. Example completions per stage: the first one seen and the most
typical one (length closest to the stage's median), truncated.

If a row lacks the verifier's fields (``format_ok`` ...), the verifier (``medrlvr_lite.verifier``) is called
on its ``completion`` and ``gold``; lengths and the text before ``<think>`` are computed from the completion
when missing.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STAGES: tuple[str, ...] = (
    "format_failure",
    "verbose_formatter",
    "concise_structurer",
    "direct_answer_hacker",
    "step_by_step_exploit",
    "reintegrated_reasoning",
)
STAGE_LABELS: dict[str, str] = {
    "format_failure": "format failure",
    "verbose_formatter": "verbose formatter",
    "concise_structurer": "concise structurer",
    "direct_answer_hacker": "direct-answer hacker",
    "step_by_step_exploit": "step-by-step exploit",
    "reintegrated_reasoning": "reintegrated reasoning",
}
HACKING_STAGES: frozenset[str] = frozenset({"direct_answer_hacker", "step_by_step_exploit"})
HACKING_RATES: tuple[str, ...] = (
    "answer_in_think",
    "reasoning_before_think",
    "text_before_think",
    "empty_think",
    "multiple_letters",
)
DYNAMICS_FILE = "dynamics.json"
COMPLETIONS_FILE = "completions.jsonl"


class DynamicsError(ValueError):
    """A completions file that cannot be analysed; the message names the file and line."""


@dataclass(frozen=True)
class StageRules:
    """Thresholds of the stage classifier (characters); see the module docstring for the rules."""

    before_think_chars: int = 100
    concise_chars: int = 80
    answer_think_chars: int = 200
    verbose_chars: int = 1500
    walk_min_chars: int = 600
    walk_share: float = 0.75


# ---------------------------------------------------------------------------------------------- parsing

_THINK_OPEN = "<think>"
_THINK_CLOSE = "</think>"
_PROMPT_OPTION = re.compile(r"(?m)^\s*\(?([A-J])[.)]\s+\S")
_THINK_OPTION = re.compile(
    r"(?m)(?:^[ \t>*-]*\(?([A-J])[.):][ \t]|\(([A-J])\)|\b(?:[Oo]ption|[Cc]hoice)\s+\(?([A-J])\b)"
)


def split_completion(completion: str) -> tuple[str, str | None]:
    """(text before ``<think>``, think content or None). No ``<think>``: ("", None)."""
    start = completion.find(_THINK_OPEN)
    if start < 0:
        return "", None
    end = completion.find(_THINK_CLOSE, start + len(_THINK_OPEN))
    think = completion[start + len(_THINK_OPEN) : end if end >= 0 else len(completion)]
    return completion[:start].strip(), think.strip()


def pre_think_text(row: dict) -> str:
    """The text before ``<think>``: the row's ``text_before_think`` when it is a string, else computed."""
    value = row.get("text_before_think")
    if isinstance(value, str):
        return value.strip()
    return split_completion(str(row.get("completion") or ""))[0]


def _think_text(row: dict) -> str:
    return split_completion(str(row.get("completion") or ""))[1] or ""


def _think_chars(row: dict) -> int:
    if row.get("think_chars") is not None:
        return int(row["think_chars"])
    return len(_think_text(row))


def _n_options(row: dict) -> int:
    letters = set(_PROMPT_OPTION.findall(str(row.get("prompt") or "")))
    return len(letters)


def options_walked(think: str) -> int:
    """How many distinct option letters the think text discusses (see the module docstring)."""
    found = set()
    for groups in _THINK_OPTION.findall(think):
        found.update(g for g in groups if g)
    return len(found)


def _answer_in_think(row: dict) -> bool:
    if row.get("answer_in_think") is not None:
        return bool(row["answer_in_think"])
    # Fallback when the verifier's flag is absent: the chosen letter's option text, or "answer is X".
    think = _think_text(row).lower()
    letter = row.get("letter")
    if not think or not letter:
        return False
    prompt = str(row.get("prompt") or "")
    match = re.search(rf"(?m)^\s*\(?{re.escape(letter)}[.)]\s+(.+)$", prompt)
    if match and match.group(1).strip().lower() in think:
        return True
    return re.search(rf"answer is\s*\(?{re.escape(letter.lower())}\b", think) is not None


def _ensure_verdict(row: dict, where: str) -> dict:
    """Rows without the verifier's ``format_ok``: run the verifier on completion + gold (lazy import)."""
    if "format_ok" in row:
        return row
    if "completion" not in row or "gold" not in row:
        raise DynamicsError(
            f"{where}: row has neither the verifier's 'format_ok' nor 'completion' and 'gold'"
        )
    try:
        from medrlvr_lite.verifier import verify
    except ImportError as exc:  # pragma: no cover - the verifier ships with the package
        raise DynamicsError(
            f"{where}: row lacks 'format_ok' and the verifier cannot be imported: {exc}"
        ) from exc
    verdict = verify(row["completion"], row["gold"]).to_dict()
    return {**verdict, **row}


# ------------------------------------------------------------------------------------------- classify


def classify(
    row: dict,
    *,
    before_think_chars: int = StageRules.before_think_chars,
    concise_chars: int = StageRules.concise_chars,
    answer_think_chars: int = StageRules.answer_think_chars,
    verbose_chars: int = StageRules.verbose_chars,
    walk_min_chars: int = StageRules.walk_min_chars,
    walk_share: float = StageRules.walk_share,
) -> str:
    """The stage of one completion row (a completions.jsonl line, or any dict with its fields).

    Never returns ``reintegrated_reasoning`` (a run-level relabel, see ``analyze``). Rules: module docstring.
    """
    row = _ensure_verdict(row, "row")
    if not row.get("format_ok"):
        return "format_failure"
    think_chars = 0 if row.get("empty_think") else _think_chars(row)
    before = len(pre_think_text(row))
    if before >= before_think_chars and before >= think_chars:
        return "step_by_step_exploit"
    if think_chars < concise_chars or (_answer_in_think(row) and think_chars < answer_think_chars):
        return "direct_answer_hacker"
    if think_chars >= verbose_chars:
        return "verbose_formatter"
    if think_chars >= walk_min_chars:
        n_options = _n_options(row)
        need = max(3, math.ceil(walk_share * n_options)) if n_options else 3
        if options_walked(_think_text(row)) >= need:
            return "verbose_formatter"
    return "concise_structurer"


def hacking_flags(row: dict, *, before_think_chars: int = StageRules.before_think_chars) -> dict[str, bool]:
    """The hacking flags of one row: answer_in_think, reasoning_before_think, text_before_think, empty_think,
    multiple_letters (only for rows in a valid format; invalid rows have none)."""
    if not row.get("format_ok"):
        return dict.fromkeys(HACKING_RATES, False)
    before = pre_think_text(row)
    return {
        "answer_in_think": _answer_in_think(row),
        "reasoning_before_think": len(before) >= before_think_chars,
        "text_before_think": bool(before) or row.get("text_before_think") is True,
        "empty_think": bool(row.get("empty_think")) or _think_chars(row) == 0,
        "multiple_letters": bool(row.get("multiple_letters")),
    }


# -------------------------------------------------------------------------------------------- analyze


@dataclass
class DynamicsResult:
    """What ``analyze`` found; saved as ``dynamics.json`` (``to_dict`` / ``load``)."""

    source: str
    run_dir: str
    window: int
    rules: dict[str, Any]
    n: int
    steps: list[dict] = field(default_factory=list)
    windows: list[dict] = field(default_factory=list)
    totals: dict[str, Any] = field(default_factory=dict)
    examples: dict[str, list[dict]] = field(default_factory=dict)
    reintegration_after_step: int | None = None
    stages: list[str] = field(default_factory=lambda: list(STAGES))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DynamicsResult:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def load(cls, path: str | Path) -> DynamicsResult:
        """Read a ``dynamics.json`` (or the one in a run directory)."""
        p = Path(path)
        if p.is_dir():
            p = p / DYNAMICS_FILE
        if not p.is_file():
            raise DynamicsError(f"{p}: not found; run `medrlvr-lite analyze RUN_DIR` first")
        try:
            return cls.from_dict(json.loads(p.read_text()))
        except (json.JSONDecodeError, TypeError) as exc:
            raise DynamicsError(f"{p}: not a dynamics.json: {exc}") from exc

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return p

    def describe_windows(self) -> str:
        """One line per merged window: ``steps 40-80: step-by-step exploit (62% of 160 completions)``."""
        lines = []
        for w in self.windows:
            span = f"step {w['start']}" if w["start"] == w["end"] else f"steps {w['start']}-{w['end']}"
            lines.append(
                f"{span}: {STAGE_LABELS[w['stage']]} ({100 * w['share']:.0f}% of {w['n']} completions)"
            )
        return "\n".join(lines)

    def summary(self) -> dict:
        """The compact part for a study's results.json: windows, totals, n, window size."""
        return {
            "n": self.n,
            "window": self.window,
            "windows": self.windows,
            "totals": self.totals,
            "reintegration_after_step": self.reintegration_after_step,
            "describe": self.describe_windows(),
        }


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with path.open() as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DynamicsError(f"{path}:{lineno}: not valid JSON: {exc.msg}") from None
            if not isinstance(row, dict):
                raise DynamicsError(f"{path}:{lineno}: expected a JSON object")
            rows.append(row)
    return rows


def resolve_completions(path: str | Path) -> tuple[Path, Path]:
    """(completions.jsonl, run dir) for a run directory or a completions file."""
    p = Path(path)
    if p.is_dir():
        file = p / COMPLETIONS_FILE
        if not file.is_file():
            raise DynamicsError(
                f"{p}: no {COMPLETIONS_FILE} here; is this an RLVR run directory "
                "(train rlvr with rlvr.log_completions_every > 0)?"
            )
        return file, p
    if not p.is_file():
        raise DynamicsError(f"{p}: no such run directory or completions file")
    return p, p.parent


def _rate(values: list[bool]) -> float:
    return sum(bool(v) for v in values) / len(values) if values else 0.0


def _mean(values: list[float]) -> float:
    return float(sum(values) / len(values)) if values else 0.0


def _dominant(labels: list[str]) -> tuple[str, float]:
    counts = Counter(labels)
    stage = max(STAGES, key=lambda s: (counts.get(s, 0), -STAGES.index(s)))
    return stage, counts.get(stage, 0) / len(labels)


def _aggregate(items: list[dict]) -> dict:
    """Shares, hacking rates, accuracy, format share and lengths over classified items."""
    labels = [it["stage"] for it in items]
    counts = Counter(labels)
    return {
        "n": len(items),
        "shares": {s: counts.get(s, 0) / len(items) for s in STAGES},
        "counts": {s: counts.get(s, 0) for s in STAGES},
        "hacking": {k: _rate([it["flags"][k] for it in items]) for k in HACKING_RATES},
        "accuracy": _rate([bool(it["row"].get("correct")) for it in items]),
        "format_ok": _rate([bool(it["row"].get("format_ok")) for it in items]),
        "mean_completion_chars": _mean([it["chars"] for it in items]),
        "mean_think_chars": _mean([it["think_chars"] for it in items]),
    }


def _truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half].rstrip()}\n[... {len(text) - 2 * half} characters cut ...]\n{text[-half:].lstrip()}"


def _example(item: dict, why: str, max_chars: int) -> dict:
    row = item["row"]
    return {
        "why": why,
        "step": item["step"],
        "prompt_id": row.get("prompt_id"),
        "gold": row.get("gold"),
        "letter": row.get("letter"),
        "correct": bool(row.get("correct")),
        "completion_chars": item["chars"],
        "think_chars": item["think_chars"],
        "completion": _truncate(str(row.get("completion") or ""), max_chars),
    }


def analyze(
    path: str | Path,
    window: int | None = None,
    *,
    rules: StageRules | None = None,
    write: bool = True,
    out: str | Path | None = None,
    max_example_chars: int = 700,
) -> DynamicsResult:
    """Classify every completion of a run and summarise per step and per window (see module docstring).

    ``path``: an RLVR run directory or its ``completions.jsonl``. Writes ``dynamics.json`` into the run
    directory (or ``out``) unless ``write`` is false.
    """
    rules = rules or StageRules()
    file, run_dir = resolve_completions(path)
    rows = _read_jsonl(file)
    if not rows:
        raise DynamicsError(f"{file}: no completions logged (the file is empty)")
    if window is not None and window < 1:
        raise DynamicsError(f"window must be at least 1 step, got {window}")
    rule_kwargs = asdict(rules)

    items = []
    for lineno, row in enumerate(rows, 1):
        where = f"{file}:{lineno}"
        if "step" not in row:
            raise DynamicsError(f"{where}: row has no 'step'")
        try:
            step = int(row["step"])
        except (TypeError, ValueError):
            raise DynamicsError(f"{where}: 'step' is not an integer: {row['step']!r}") from None
        row = _ensure_verdict(row, where)
        completion = str(row.get("completion") or "")
        items.append(
            {
                "step": step,
                "row": row,
                "stage": classify(row, **rule_kwargs),
                "flags": hacking_flags(row, before_think_chars=rules.before_think_chars),
                "chars": int(row["completion_chars"])
                if row.get("completion_chars") is not None
                else len(completion),
                "think_chars": 0 if not row.get("format_ok") else _think_chars(row),
            }
        )

    steps = sorted({it["step"] for it in items})
    first = steps[0]
    if window is None:
        window = max(1, math.ceil((steps[-1] - first + 1) / 16))

    def bucket_of(step: int) -> int:
        return (step - first) // window

    buckets: dict[int, list[dict]] = {}
    for it in items:
        buckets.setdefault(bucket_of(it["step"]), []).append(it)
    order = sorted(buckets)

    # Relabel: concise completions after the first window dominated by a hacking stage are reintegrated.
    hack_bucket = next(
        (b for b in order if _dominant([it["stage"] for it in buckets[b]])[0] in HACKING_STAGES), None
    )
    reintegration_after = None
    if hack_bucket is not None:
        reintegration_after = max(it["step"] for it in buckets[hack_bucket])
        for b in order:
            if b > hack_bucket:
                for it in buckets[b]:
                    if it["stage"] == "concise_structurer":
                        it["stage"] = "reintegrated_reasoning"

    per_step = []
    for step in steps:
        agg = _aggregate([it for it in items if it["step"] == step])
        per_step.append({"step": step, **agg})

    # Dominant stage per window, then merge adjacent windows with the same dominant stage.
    merged: list[dict] = []
    for b in order:
        stage, _ = _dominant([it["stage"] for it in buckets[b]])
        if merged and merged[-1]["stage"] == stage:
            merged[-1]["items"].extend(buckets[b])
        else:
            merged.append({"stage": stage, "items": list(buckets[b])})
    windows = []
    for m in merged:
        agg = _aggregate(m["items"])
        windows.append(
            {
                "start": min(it["step"] for it in m["items"]),
                "end": max(it["step"] for it in m["items"]),
                "stage": m["stage"],
                "share": agg["shares"][m["stage"]],
                **{
                    k: agg[k]
                    for k in ("n", "accuracy", "format_ok", "mean_completion_chars", "hacking", "shares")
                },
            }
        )

    examples: dict[str, list[dict]] = {}
    for stage in STAGES:
        members = [it for it in items if it["stage"] == stage]
        if not members:
            continue
        chosen = [_example(members[0], "first", max_example_chars)]
        median = statistics.median(it["chars"] for it in members)
        typical = min(members, key=lambda it: abs(it["chars"] - median))
        if typical is not members[0]:
            chosen.append(_example(typical, "typical", max_example_chars))
        examples[stage] = chosen

    result = DynamicsResult(
        source=str(file),
        run_dir=str(run_dir),
        window=window,
        rules=rule_kwargs,
        n=len(items),
        steps=per_step,
        windows=windows,
        totals=_aggregate(items),
        examples=examples,
        reintegration_after_step=reintegration_after,
    )
    if write:
        result.save(Path(out) if out is not None else run_dir / DYNAMICS_FILE)
    return result
