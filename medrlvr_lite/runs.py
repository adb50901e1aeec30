"""Run directories shared by the training stages (rlvr.py, sft.py): checkpoints, JSONL logs, run metadata.

A training run directory holds TRL's ``checkpoint-N/`` folders and our append-only JSONL logs. Resuming means:
find the last *complete* checkpoint, read its step, and cut the logs back to that step, so that no line is
duplicated or lost. One implementation serves both trainers.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def read_jsonl(path: str | Path) -> list[dict]:
    """The JSON lines of ``path`` ([] when missing; a torn last line, from a killed process, is skipped)."""
    rows = []
    p = Path(path)
    if not p.is_file():
        return rows
    for line in p.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    return rows


def truncate_jsonl(path: str | Path, max_step: int) -> int:
    """Keep only the lines of ``path`` with ``step <= max_step`` (atomically; blank lines are not counted, a torn
    line is dropped); returns how many lines were dropped. Called before resuming from the checkpoint at
    ``max_step``."""
    p = Path(path)
    if not p.is_file():
        return 0
    kept, dropped = [], 0
    for line in p.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            dropped += 1
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= max_step:
            kept.append(line)
        else:
            dropped += 1
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text("".join(x + "\n" for x in kept), encoding="utf-8")
    os.replace(tmp, p)
    return dropped


def find_last_checkpoint(run_dir: str | Path) -> Path | None:
    """The ``checkpoint-N`` with the largest N that holds a ``trainer_state.json`` (a complete save), or None."""
    root = Path(run_dir)
    if not root.is_dir():
        return None
    found = [
        (int(m.group(1)), p)
        for p in root.iterdir()
        if (m := _CHECKPOINT.match(p.name)) and p.is_dir() and (p / "trainer_state.json").is_file()
    ]
    return max(found)[1] if found else None


def checkpoint_step(checkpoint: str | Path) -> int:
    """The global step a checkpoint was saved at (its trainer_state.json, else its name)."""
    p = Path(checkpoint)
    try:
        state = json.loads((p / "trainer_state.json").read_text())
    except (OSError, ValueError):
        state = {}
    if "global_step" in state:
        return int(state["global_step"])
    m = _CHECKPOINT.match(p.name)
    if not m:
        raise ValueError(f"{p}: not a checkpoint-N folder")
    return int(m.group(1))


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON atomically (a reader never sees half a file)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def run_versions() -> dict[str, str | None]:
    """Package versions for a training run's run.json: the evaluation's set plus the training stack."""
    from importlib.metadata import PackageNotFoundError, version

    from medrlvr_lite.evaluate import package_versions

    found: dict[str, str | None] = {"python": sys.version.split()[0], **package_versions()}
    for name in ("accelerate", "datasets", "bitsandbytes"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found
