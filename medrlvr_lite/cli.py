"""The ``medrlvr-lite`` command line: one Typer app whose commands wrap each stage of the study.

    medrlvr-lite --help
    medrlvr-lite data list | data inspect SPEC | data export SPEC OUT.jsonl
    medrlvr-lite score FILE.jsonl
    medrlvr-lite train rlvr --config configs/smoke.yaml
    medrlvr-lite train sft --config configs/smoke.yaml
    medrlvr-lite eval --model M --dataset medqa:test --prompt r1
    medrlvr-lite study --config configs/smoke.yaml
    medrlvr-lite analyze RUN_DIR | report STUDY_DIR | export RUN_DIR --out DIR

Commands stay thin: parse options, call the stage module, print where the results are.
"""

from __future__ import annotations

import typer
from rich.console import Console

app = typer.Typer(
    help="Med-RLVR on one GPU: data, prompts, verifier, GRPO vs SFT, evaluation, report, export.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="List, inspect and export the medical MCQ datasets.", no_args_is_help=True)
train_app = typer.Typer(help="Train: RLVR (GRPO) or SFT.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(train_app, name="train")
console = Console(stderr=True)


def _fail(message: str, code: int = 2) -> None:
    """Print a user-facing error and exit (no traceback)."""
    from rich.markup import escape

    console.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code)


# --- data: list, inspect and export datasets (data.py) -----------------------------------------------------------
_SPEC_HELP = "Dataset spec NAME:SUBSET@PATH (SUBSET, PATH optional): smoke, medqa:test, jsonl@my.jsonl."


def _load_data(spec: str, skip_invalid: bool, nota: bool, shuffle_seed: int | None, limit: int | None):
    """load_records with the CLI's flags; prints skipped rows; exits with the DataError message on failure."""
    from medrlvr_lite.config import DataOptions
    from medrlvr_lite.data import DataError, LoadReport, load_records

    opts = DataOptions(
        add_none_of_the_above=nota,
        shuffle_options_seed=shuffle_seed,
        skip_invalid=skip_invalid,
        limit=limit,
    )
    report = LoadReport()
    try:
        records = load_records(spec, opts, report=report)
    except DataError as exc:
        _fail(str(exc), 1)
    if report.skipped:
        console.print(f"[yellow]skipped {report.n_skipped} invalid row(s)[/] (--skip-invalid):")
        for where, why in report.skipped[:5]:
            console.print(f"  {where}: {why}", markup=False, highlight=False)
        if report.n_skipped > 5:
            console.print(f"  ... and {report.n_skipped - 5} more")
    return records, report


@data_app.command("list")
def data_list() -> None:
    """Name every dataset: what it is, its default Hugging Face Hub id and its subsets."""
    from rich.table import Table
    from rich.text import Text

    from medrlvr_lite.data import DATASETS

    table = Table(title=Text("Datasets (spec: NAME[:SUBSET][@PATH])"))
    table.add_column("name", style="bold")
    table.add_column("description")
    table.add_column("Hub id (default source)", overflow="fold")
    table.add_column("subsets (default first)")
    for info in DATASETS.values():
        subsets = [info.default_subset] + [s for s in info.subsets if s != info.default_subset]
        label = ", ".join(subsets[:6]) + (", ..." if len(subsets) > 6 else "")
        if info.subset_is == "category":
            label = "category: " + label
        table.add_row(info.name, Text(info.description), Text(info.hub_label()), Text(label))
    out = Console()
    out.print(table)
    out.print(
        "Without @PATH the Hub id is read with datasets.load_dataset; @PATH reads a local .jsonl/.json/.csv/.parquet "
        "file or a folder. Formats: `python -c 'import medrlvr_lite.data as d; help(d)'`."
    )


@data_app.command("inspect")
def data_inspect(
    spec: str = typer.Argument(..., help=_SPEC_HELP),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="Skip bad rows (and report how many)."),
    none_of_the_above: bool = typer.Option(False, "--none-of-the-above", help="Append 'None of the above'."),
    shuffle_seed: int | None = typer.Option(None, "--shuffle-seed", help="Shuffle options with this seed."),
    limit: int | None = typer.Option(None, "--limit", help="Read at most this many records."),
    sample: int = typer.Option(0, "--sample", help="Index of the record shown as a sample."),
) -> None:
    """Counts, option-count histogram, gold-letter balance, top subjects and one sample record."""
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    from medrlvr_lite.data import describe

    records, report = _load_data(spec, skip_invalid, none_of_the_above, shuffle_seed, limit)
    stats = describe(records)
    out = Console()
    counts = Table(title=Text(spec), show_header=False)
    counts.add_row("records", str(stats["records"]))
    counts.add_row("read from", Text(report.origin))
    counts.add_row("rows read", str(report.rows_read))
    counts.add_row("outside subset", str(report.filtered))
    counts.add_row("invalid skipped", str(report.n_skipped))
    counts.add_row("splits", Text(", ".join(f"{k}: {v}" for k, v in stats["splits"].items())))
    counts.add_row("mean question chars", f"{stats['mean_question_chars']:.0f}")
    out.print(counts)
    n = stats["records"]
    hist = Table(title="options per question")
    hist.add_column("options", justify="right")
    hist.add_column("questions", justify="right")
    hist.add_column("%", justify="right")
    for k, v in stats["option_counts"].items():
        hist.add_row(str(k), str(v), f"{100 * v / n:.1f}")
    gold = Table(title="gold letters")
    gold.add_column("letter")
    gold.add_column("questions", justify="right")
    gold.add_column("%", justify="right")
    for k, v in stats["gold_letters"].items():
        gold.add_row(k, str(v), f"{100 * v / n:.1f}")
    subjects = Table(title=f"subjects (top 10 of {len(stats['subjects'])})")
    subjects.add_column("subject")
    subjects.add_column("questions", justify="right")
    for k, v in list(stats["subjects"].items())[:10]:
        subjects.add_row(Text(k), str(v))
    out.print(hist, gold, subjects)
    rec = records[min(max(sample, 0), n - 1)]
    question = rec.question if len(rec.question) <= 1500 else rec.question[:1500] + " ..."
    lines = [question, ""] + [
        f"{k}. {v}" + ("   <- gold" if k == rec.gold else "") for k, v in rec.options.items()
    ]
    title = f"sample: id {rec.id} | {rec.source}:{rec.split} | subject {rec.subject or '-'} | gold {rec.gold}"
    out.print(Panel(Text("\n".join(lines)), title=Text(title), title_align="left"))


@data_app.command("export")
def data_export(
    spec: str = typer.Argument(..., help=_SPEC_HELP),
    out: str = typer.Argument(..., help="Output JSONL: one MCQRecord dict a line (reads back: jsonl@OUT)."),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="Skip bad rows (and report how many)."),
    none_of_the_above: bool = typer.Option(False, "--none-of-the-above", help="Append 'None of the above'."),
    shuffle_seed: int | None = typer.Option(None, "--shuffle-seed", help="Shuffle options with this seed."),
    limit: int | None = typer.Option(None, "--limit", help="Write at most this many records."),
) -> None:
    """Write a dataset's records as JSON lines {id, question, options, gold, source, split, subject}."""
    from medrlvr_lite.data import save_records

    records, report = _load_data(spec, skip_invalid, none_of_the_above, shuffle_seed, limit)
    n = save_records(records, out)
    console.print(f"wrote {n} records to {out} ({report.n_skipped} invalid skipped)", markup=False)


# --- score: the verifier on saved completions ------------------------------------------------------------------
@app.command()
def score(
    file: str = typer.Argument(
        ..., help='JSONL with lines {"completion": ..., "answer": "B", "options": [...]}'
    ),
    output: str = typer.Option(None, "--output", "-o", help="Write scored lines here (default: stdout)."),
    mode: str = typer.Option("paper", help="Verifier mode: paper (text before <think> allowed) or strict."),
) -> None:
    """Score completions with the verifier: one JSON line per input (format_ok, letter, correct, reward, flags)."""
    import json
    import sys
    from pathlib import Path

    from medrlvr_lite.verifier import verify

    if mode not in ("paper", "strict"):
        _fail(f"--mode must be paper or strict, not {mode!r}")
    path = Path(file)
    if not path.is_file():
        _fail(f"{path}: no such file")
    out = open(output, "w", encoding="utf-8") if output else sys.stdout  # noqa: SIM115
    n = correct = 0
    try:
        for lineno, line in enumerate(path.open(encoding="utf-8", errors="replace"), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("not a JSON object")
            except ValueError as exc:
                _fail(f"{path}:{lineno}: not a JSON object ({exc})")
            options = row.get("options")
            letters = list(options) if isinstance(options, dict) else None
            verdict = verify(row.get("completion", ""), row.get("answer"), letters, options, mode=mode)
            out.write(json.dumps({"line": lineno, **verdict.to_dict()}, ensure_ascii=False) + "\n")
            n += 1
            correct += verdict.correct
    finally:
        if output:
            out.close()
    console.print(f"scored {n} completions: {correct} correct" + (f" -> {output}" if output else ""))


@app.command()
def prompt(
    spec: str = typer.Argument(..., help="Dataset spec, e.g. smoke or medqa:test@path/to/test.jsonl."),
    style: str = typer.Option("r1", help="r1 (the paper's R1-Zero template), cot or direct."),
    index: int = typer.Option(0, help="Which record to render."),
) -> None:
    """Print the prompt a model sees for one record."""
    from medrlvr_lite.data import DataError, load_records
    from medrlvr_lite.prompts import STYLES, render_prompt

    if style not in STYLES:
        _fail(f"--style must be one of {', '.join(STYLES)}, not {style!r}")
    try:
        records = load_records(spec)
    except DataError as exc:
        _fail(str(exc))
    if not 0 <= index < len(records):
        _fail(f"--index {index} is out of range: {spec} has {len(records)} records")
    typer.echo(render_prompt(records[index], style=style))


# --- train rlvr: GRPO with the verifier reward (rlvr.py) --------------------------------------------------------
@train_app.command("rlvr")
def train_rlvr_cmd(
    config: str = typer.Option(
        None, "--config", "-c", help="Config file (YAML); its model/data/rlvr sections."
    ),
    overrides: list[str] = typer.Option(None, "--set", help="Override a config field: section.field=value."),
    output_dir: str = typer.Option(
        None, "--output-dir", "-o", help="Run directory (default: rlvr.output_dir)."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue from the last checkpoint-N (same step count, logs cut back to it)."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Delete an earlier run in the directory first."
    ),
    model: str = typer.Option(None, "--model", "-m", help="Base model: Hub id, local path or 'tiny'."),
    backend: str = typer.Option(None, "--backend", help="auto, unsloth, hf or cpu (default: config)."),
    dataset: str = typer.Option(None, "--dataset", "-d", help="Training data spec (default: rlvr.dataset)."),
    learning_rate: float = typer.Option(None, "--learning-rate", "--lr", help="Learning rate."),
    max_steps: int = typer.Option(None, "--max-steps", help="Optimizer steps (default: rlvr.max_steps)."),
    preset: str = typer.Option(
        "auto", "--preset", help="GPU preset: auto (by GPU memory; none on CPU), t4, 24gb, 80gb or none."
    ),
) -> None:
    """RLVR: GRPO (TRL) on a LoRA policy with the verifier as reward (the paper's -1 / 0 / +1 by default).

    Writes config.yaml, checkpoint-N/, adapter/, metrics.jsonl, completions.jsonl, training_args.json and
    run.json in the run directory. Ctrl-C or SIGTERM saves a checkpoint; rerun with --resume to continue.
    """
    from pydantic import ValidationError

    from medrlvr_lite.config import ConfigError, load_config

    try:
        cfg = load_config(config, overrides)
        for section, key, value in (
            (cfg.model, "name_or_path", model), (cfg.model, "backend", backend), (cfg.rlvr, "dataset", dataset),
            (cfg.rlvr, "learning_rate", learning_rate), (cfg.rlvr, "max_steps", max_steps),
            (cfg.rlvr, "output_dir", output_dir),
        ):  # fmt: skip
            if value is not None:
                setattr(section, key, value)
        from medrlvr_lite.presets import apply_preset, override_keys

        keep = override_keys(overrides) + (["model.backend"] if backend is not None else [])
        cfg, _ = apply_preset(cfg, preset, keep=keep, output_dir=cfg.rlvr.output_dir)
    except ConfigError as exc:
        _fail(str(exc))
    except ValidationError as exc:
        _fail("; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()))
    from medrlvr_lite.rlvr import RLVRError, TrainingInterrupted, train_rlvr

    try:
        run_dir = train_rlvr(cfg, resume=resume, overwrite=overwrite)
    except TrainingInterrupted as exc:
        console.print(str(exc), style="bold yellow", markup=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except (RLVRError, ValueError, RuntimeError, OSError) as exc:
        if isinstance(exc, RLVRError) or type(exc).__name__ in ("DataError", "BackendError"):
            _fail(str(exc))
        raise
    console.print(f"[bold green]run[/]: {run_dir}  adapter: {run_dir / 'adapter'}", soft_wrap=True)
    console.print(
        f"metrics: {run_dir / 'metrics.jsonl'}  completions: {run_dir / 'completions.jsonl'}", soft_wrap=True
    )


# --- train sft: the supervised baseline, answers only (sft.py) --------------------------------------------------
@train_app.command("sft")
def train_sft_cmd(
    config: str = typer.Option(
        None, "--config", "-c", help="Config file (YAML); its model/data/sft/eval sections."
    ),
    overrides: list[str] = typer.Option(None, "--set", help="Override a config field: section.field=value."),
    output_dir: str = typer.Option(
        None, "--output-dir", "-o", help="Run directory (default: sft.output_dir)."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue from the last checkpoint; finished runs and grid points are kept."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Delete an earlier run in the directory first."
    ),
    lr_grid: str = typer.Option(
        None,
        "--lr-grid",
        help="Learning rates, comma-separated (paper: 1e-5,5e-6,1e-6): one run each, the best on sft.dev_dataset kept.",
    ),
    model: str = typer.Option(None, "--model", "-m", help="Base model: Hub id, local path or 'tiny'."),
    backend: str = typer.Option(None, "--backend", help="auto, unsloth, hf or cpu (default: config)."),
    dataset: str = typer.Option(None, "--dataset", "-d", help="Training data spec (default: sft.dataset)."),
    learning_rate: float = typer.Option(None, "--learning-rate", "--lr", help="Learning rate (no grid)."),
    epochs: float = typer.Option(None, "--epochs", help="Epochs (default: sft.num_train_epochs)."),
    max_steps: int = typer.Option(None, "--max-steps", help="Optimizer steps; overrides --epochs."),
) -> None:
    """Supervised fine-tuning on the gold answers (the paper's SFT baseline), LoRA on TRL's SFTTrainer.

    Writes config.yaml, checkpoint-N/, adapter/, metrics.jsonl and run.json in the run directory; with
    --lr-grid one lr_<value>/ run each, grid.json (dev accuracy per learning rate), best.json, and the best
    adapter in adapter/. Ctrl-C or SIGTERM saves a checkpoint; rerun with --resume to continue.
    """
    from pydantic import ValidationError

    from medrlvr_lite.config import ConfigError, load_config

    try:
        cfg = load_config(config, overrides)
        for section, key, value in (
            (cfg.model, "name_or_path", model), (cfg.model, "backend", backend), (cfg.sft, "dataset", dataset),
            (cfg.sft, "learning_rate", learning_rate), (cfg.sft, "num_train_epochs", epochs),
            (cfg.sft, "max_steps", max_steps), (cfg.sft, "output_dir", output_dir),
        ):  # fmt: skip
            if value is not None:
                setattr(section, key, value)
    except ConfigError as exc:
        _fail(str(exc))
    except ValidationError as exc:
        _fail("; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()))
    from medrlvr_lite.sft import SFTError, TrainingInterrupted, train_sft

    try:
        adapter = train_sft(cfg, resume=resume, lr_grid=lr_grid, overwrite=overwrite)
    except TrainingInterrupted as exc:
        console.print(f"[bold yellow]interrupted:[/] {exc}")
        raise typer.Exit(exc.exit_code) from None
    except (SFTError, ValueError, RuntimeError, OSError) as exc:
        if isinstance(exc, SFTError) or type(exc).__name__ in ("DataError", "BackendError", "EvalError"):
            _fail(str(exc))
        raise
    run_dir = adapter.parent
    console.print(f"[bold green]adapter[/]: {adapter}")
    if (run_dir / "grid.json").is_file():
        console.print(f"grid: {run_dir / 'grid.json'}  best: {run_dir / 'best.json'}")
    else:
        console.print(f"metrics: {run_dir / 'metrics.jsonl'}  run: {run_dir / 'run.json'}")


# --- eval: generate, verify, accuracy ± bootstrap SD (evaluate.py) ---------------------------------------------
@app.command("eval")
def eval_cmd(
    model: str = typer.Option(
        None, "--model", "-m", help="Base model: Hub id, local path or 'tiny' (default: config)."
    ),
    adapter: str = typer.Option(None, "--adapter", "-a", help="LoRA adapter directory (base + adapter)."),
    dataset: list[str] = typer.Option(
        None,
        "--dataset",
        "-d",
        help="Dataset spec, repeatable (e.g. medqa:test, mmlu_pro:health). Default: config.",
    ),
    prompt: str = typer.Option(
        None, "--prompt", "-p", help="r1 (the paper's), cot or direct. Default: config."
    ),
    config: str = typer.Option(
        None, "--config", "-c", help="Config file (YAML); its model/data/eval sections."
    ),
    overrides: list[str] = typer.Option(None, "--set", help="Override a config field: section.field=value."),
    output_dir: str = typer.Option(
        None, "--output-dir", "-o", help="Eval directory (default: eval.output_dir)."
    ),
    limit: int = typer.Option(None, "--limit", help="Evaluate on the first N questions of each dataset."),
    max_new_tokens: int = typer.Option(
        None, "--max-new-tokens", help="Longest completion (the direct prompt's too)."
    ),
    temperature: float = typer.Option(None, "--temperature", help="0: greedy (default); > 0: sampling."),
    num_samples: int = typer.Option(
        None, "--num-samples", help="Samples per question (needs --temperature > 0)."
    ),
    seed: int = typer.Option(None, "--seed", help="Sampling seed."),
    batch_size: int = typer.Option(None, "--batch-size", help="Prompts per generation batch."),
    backend: str = typer.Option(None, "--backend", help="auto, unsloth, hf or cpu (default: config)."),
) -> None:
    """Evaluate a model (base, base + adapter, merged) on one or more datasets: accuracy ± bootstrap SD.

    Writes <output-dir>/<dataset>/predictions.jsonl and results.json, and <output-dir>/results.md. Rerunning
    the same command resumes from the predictions already written.
    """
    from pathlib import Path

    from pydantic import ValidationError

    from medrlvr_lite.config import ConfigError, load_config

    try:
        cfg = load_config(config, overrides)
        for section, key, value in (
            (cfg.model, "name_or_path", model), (cfg.model, "backend", backend), (cfg.eval, "prompt", prompt),
            (cfg.eval, "temperature", temperature), (cfg.eval, "num_samples", num_samples), (cfg.eval, "seed", seed),
            (cfg.eval, "batch_size", batch_size), (cfg.eval, "output_dir", output_dir),
        ):  # fmt: skip
            if value is not None:
                setattr(section, key, value)
        if max_new_tokens is not None:
            key = "direct_max_new_tokens" if cfg.eval.prompt == "direct" else "max_new_tokens"
            setattr(cfg.eval, key, max_new_tokens)
    except ConfigError as exc:
        _fail(str(exc))
    except ValidationError as exc:
        _fail("; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()))
    from medrlvr_lite.evaluate import EvalError, evaluate, format_table

    try:
        results = evaluate(
            cfg.model, cfg.eval, adapter=adapter, datasets=dataset or None, data_options=cfg.data, limit=limit
        )
    except (EvalError, ValueError, RuntimeError, OSError) as exc:
        if isinstance(exc, (EvalError, ConfigError)) or type(exc).__name__ in ("DataError", "BackendError"):
            _fail(str(exc))
        raise
    typer.echo(format_table(list(results.values())), nl=False)
    out = Path(cfg.eval.output_dir)
    for r in results.values():
        console.print(f"{r['dataset']}: {Path(r['predictions']).parent}")
    console.print(f"table: {out / 'results.md'}")


# --- analyze / report: training dynamics and the study report (dynamics.py, report.py) --------------------------
@app.command()
def analyze(
    run_dir: str = typer.Argument(
        ..., help="RLVR run directory (with completions.jsonl) or a completions.jsonl."
    ),
    window: int = typer.Option(
        None, "--window", help="Steps per window (default: a sixteenth of the logged span)."
    ),
) -> None:
    """Classify logged completions into the paper's six stages; write dynamics.json and PNG plots."""
    from pathlib import Path

    from rich.table import Table

    from medrlvr_lite.dynamics import HACKING_RATES, STAGE_LABELS, DynamicsError
    from medrlvr_lite.dynamics import analyze as run_analyze
    from medrlvr_lite.report import plot_run

    try:
        result = run_analyze(run_dir, window=window)
    except DynamicsError as exc:
        _fail(str(exc))
    pngs = plot_run(result.run_dir, result)
    table = Table(title=f"Training dynamics: {result.n} completions, windows of {result.window} steps")
    for col in ("steps", "dominant stage", "share", "n", "accuracy", "format ok", "mean chars"):
        table.add_column(col, justify="left" if col in ("steps", "dominant stage") else "right")
    for k in HACKING_RATES[:3]:
        table.add_column(k.replace("_", " "), justify="right")
    for w in result.windows:
        table.add_row(
            f"{w['start']}-{w['end']}",
            STAGE_LABELS[w["stage"]],
            f"{100 * w['share']:.0f}%",
            str(w["n"]),
            f"{100 * w['accuracy']:.1f}%",
            f"{100 * w['format_ok']:.1f}%",
            f"{w['mean_completion_chars']:.0f}",
            *(f"{100 * w['hacking'][k]:.1f}%" for k in HACKING_RATES[:3]),
        )
    Console().print(table)
    console.print(f"dynamics: {Path(result.run_dir) / 'dynamics.json'}")
    for path in pngs.values():
        console.print(f"plot: {path}")


@app.command()
def report(study_dir: str = typer.Argument(..., help="Study directory with results.json.")) -> None:
    """Rebuild report.md and its PNG figures from a study directory's saved files."""
    from medrlvr_lite.dynamics import DynamicsError
    from medrlvr_lite.report import ReportError, write_report

    try:
        path = write_report(study_dir)
    except (ReportError, DynamicsError) as exc:
        _fail(str(exc))
    console.print(f"report: {path}")
    console.print(f"figures: {path.parent / 'figures'}")


# --- study: every phase in order, resumable (study.py) ----------------------------------------------------------
def _split_phases(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [p.strip() for v in values for p in v.split(",") if p.strip()]


@app.command()
def study(
    config: str = typer.Option("configs/smoke.yaml", "--config", "-c", help="Study config (YAML)."),
    output_dir: str = typer.Option(None, "--output-dir", help="Study directory (default: study.output_dir)."),
    only: list[str] = typer.Option(
        None, "--only", help="Run only these phases (comma-separated or repeated)."
    ),
    skip: list[str] = typer.Option(None, "--skip", help="Skip these phases."),
    start: str = typer.Option(None, "--from", help="Start at this phase."),
    force: bool = typer.Option(False, "--force", help="Rerun phases whose outputs are already complete."),
    overrides: list[str] = typer.Option(None, "--set", help="Override a config field: section.field=value."),
    preset: str = typer.Option(
        "auto", "--preset", help="GPU preset: auto (by GPU memory; none on CPU), t4, 24gb, 80gb or none."
    ),
) -> None:
    """Run the study: base (direct, CoT), SFT, RLVR, their evaluations, the dynamics, and the report.

    Phases: base_direct, base_cot, sft, rlvr, eval_sft, eval_rlvr, analyze, report. Finished phases are
    skipped, so rerunning after a crash or a disconnect continues where it stopped.
    """
    from medrlvr_lite.config import ConfigError, load_config
    from medrlvr_lite.study import StudyError, run_study

    try:
        cfg = load_config(config, overrides)
        from medrlvr_lite.presets import apply_preset, override_keys

        cfg, _ = apply_preset(
            cfg, preset, keep=override_keys(overrides), output_dir=output_dir or cfg.study.output_dir
        )
        path = run_study(
            cfg,
            output_dir=output_dir,
            only=_split_phases(only),
            skip=_split_phases(skip),
            start=start,
            force=force,
        )
    except (ConfigError, StudyError) as exc:
        _fail(str(exc))
    except (
        Exception
    ) as exc:  # a stage's own user-facing errors (data, backend, eval, training) carry their message
        if type(exc).__name__ == "TrainingInterrupted":
            console.print(str(exc), style="bold yellow", markup=False, soft_wrap=True)
            console.print("rerun the same `medrlvr-lite study` command to continue where it stopped")
            raise typer.Exit(getattr(exc, "exit_code", 130)) from None
        user_errors = (
            "DataError",
            "BackendError",
            "EvalError",
            "ReportError",
            "DynamicsError",
            "RLVRError",
            "SFTError",
        )
        if type(exc).__name__ in user_errors:
            _fail(str(exc))
        raise
    console.print(f"[bold green]study complete[/]: {path}")
    console.print(f"report: {path / 'report.md'}")
    console.print(f"results: {path / 'results.json'}")
    console.print(f"figures: {path / 'figures'}")


# --- export: merge / save / push to the Hub (export.py) ---------------------------------------------------------
@app.command("export")
def export_cmd(
    source: str = typer.Argument(..., help="Run directory (adapter/ + config.yaml) or an adapter directory."),
    out: str = typer.Option(..., "--out", "-o", help="Directory to write the export and its model card to."),
    merge: str = typer.Option(
        "lora", "--merge", help="lora: the adapter alone; 16bit: merged into the 16-bit base; 4bit: then NF4."
    ),
    push_to_hub: str = typer.Option(None, "--push-to-hub", help="Upload it to the Hub repo USER/REPO."),
    private: bool = typer.Option(False, "--private", help="Create the Hub repo as private."),
    gguf: str = typer.Option(None, "--gguf", help="Also write GGUF in this quantisation (q4_k_m; Unsloth)."),
    force: bool = typer.Option(
        False, "--force", help="Accept the lossy --merge 4bit, and write into a non-empty --out directory."
    ),
    license: str = typer.Option(None, "--license", help="License for the card (default: the base model's)."),
) -> None:
    """Export a trained adapter: as is, merged in 16-bit, or merged and quantised; with a model card; to the Hub.

    Weights are written as safetensors only. The Hub token comes from HF_TOKEN or `hf auth login`.
    """
    from rich.markup import escape

    from medrlvr_lite.export import ExportError, PushError, export_run

    try:
        result = export_run(
            source,
            out,
            merge=merge,
            push_to_hub=push_to_hub,
            private=private,
            gguf=gguf,
            force=force,
            license=license,
        )
    except PushError as exc:
        _fail(str(exc), code=1)
    except ExportError as exc:
        _fail(str(exc))
    dtype = f", {result.dtype}" if result.dtype else ""
    console.print(f"[bold green]exported[/] ({result.merge}{dtype}): {escape(str(result.out_dir))}")
    console.print(f"model card: {escape(str(result.card))}", highlight=False)
    for path in result.gguf_files:
        console.print(f"gguf: {escape(path)}", highlight=False)
    if result.hub_url:
        console.print(f"hub: {escape(result.hub_url)}", highlight=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
