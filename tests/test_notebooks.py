"""The notebooks: stored tidy (no outputs, one ``parameters`` cell, a badge, as the generator writes them) and
executed headless with nbclient on CPU, their parameters switched to the tiny model and the bundled questions.

Each run injects a cell after the ``parameters`` cell (papermill-style) and one at the top that checks the kernel
is this interpreter; any cell error fails the test. ``CI=true`` is set for the kernel, so the install cells skip
their GPU installs (and say so). Run alone: ``python -m pytest -m notebooks -q``.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

pytestmark = pytest.mark.notebooks

ROOT = Path(__file__).resolve().parents[1]
NB_DIR = ROOT / "notebooks"
NOTEBOOKS = ("quickstart.ipynb", "rlvr_medqa_colab.ipynb", "study_kaggle.ipynb")
BADGES = ("colab.research.google.com/assets/colab-badge.svg", "kaggle.com/static/images/open-in-kaggle.svg")
KERNEL = "medrlvr-lite-test"
# Tiny everything: the three notebooks in well under three minutes on 2 cores.
FAST = [
    "sft.lr_grid=null",
    "sft.max_steps=2",
    "rlvr.format_warmup_steps=2",
    "rlvr.save_steps=1",
    "rlvr.log_completions_every=1",  # the dynamics need logged completions within the 2 steps
    "rlvr.save_total_limit=4",
    "eval.max_new_tokens=24",
    "eval.bootstrap_resamples=50",
]
SMOKE = "configs/smoke.yaml"


def ci_parameters(name: str, tmp: Path) -> dict:
    """The values injected after each notebook's parameters cell: the smoke study's model and data, on CPU."""
    common = {"preset": "auto", "max_steps": 2, "eval_limit": 3, "overrides": list(FAST)}
    if name == "quickstart.ipynb":
        return {**common, "config": SMOKE, "output_dir": str(tmp / "quickstart")}
    from medrlvr_lite.config import load_config

    smoke = load_config(ROOT / SMOKE)
    gpu_common = {
        **common,
        "config": SMOKE,
        "model": smoke.model.name_or_path,
        "backend": "cpu",
        "train_dataset": smoke.rlvr.dataset,
        "hub_repo": "",
        "install_vllm": False,
    }
    if name == "rlvr_medqa_colab.ipynb":
        return {
            **gpu_common,
            "eval_datasets": [smoke.study.in_distribution],
            "output_dir": str(tmp / "rlvr"),
            "use_drive": True,  # ignored off Colab, and the cell must say so
            "export_merge": "16bit",
        }
    return {  # the same study as the quickstart's, so that its output can serve as the previous session
        **gpu_common,
        "in_distribution": smoke.study.in_distribution,
        "out_of_distribution": list(smoke.study.out_of_distribution),
        "output_dir": str(tmp / "study"),
        "resume_from": str(tmp / "previous_session" / "study"),
        "session_budget_hours": None,
        "export_merge": "lora",
    }


def read(name: str):
    return nbformat.read(NB_DIR / name, as_version=4)


def parameters_index(nb) -> int:
    found = [i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(found) == 1, f"expected exactly one cell tagged 'parameters', found {len(found)}"
    return found[0]


def inject(nb, params: dict) -> None:
    """Papermill-style: a cell tagged ``injected-parameters`` right after the parameters cell, and a first cell that
    asserts the kernel runs this interpreter."""
    i = parameters_index(nb)
    lines = ["# Parameters injected by tests/test_notebooks.py"] + [f"{k} = {v!r}" for k, v in params.items()]
    cell = nbformat.v4.new_code_cell("\n".join(lines), metadata={"tags": ["injected-parameters"]})
    nb.cells.insert(i + 1, cell)
    check = nbformat.v4.new_code_cell(
        f"import sys\nassert sys.prefix == {sys.prefix!r}, f'kernel runs {{sys.executable}}, not the test venv'"
    )
    nb.cells.insert(0, check)
    for j, c in enumerate(nb.cells):  # unique ids after the insertions
        c["id"] = f"cell-{j:02d}"


@pytest.fixture(scope="module")
def kernel_manager_factory(tmp_path_factory):
    """Kernel managers for a kernelspec whose argv[0] is this interpreter (not whatever ``python`` is on PATH)."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    kernels = tmp_path_factory.mktemp("kernels")
    spec_dir = kernels / KERNEL
    spec_dir.mkdir()
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "medrlvr-lite tests",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    ksm = KernelSpecManager(kernel_dirs=[str(kernels)])
    assert ksm.get_kernel_spec(KERNEL).argv[0] == sys.executable

    def make():
        return KernelManager(kernel_name=KERNEL, kernel_spec_manager=ksm)

    return make


def outputs_text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                parts.append(out.get("text", ""))
            elif "data" in out:
                parts.append(out["data"].get("text/plain", ""))
            elif out.get("output_type") == "error":
                parts.append("\n".join(out.get("traceback", [])))
    return "\n".join(parts)


def has_image(nb) -> bool:
    return any("image/png" in out.get("data", {}) for c in nb.cells for out in c.get("outputs", []))


# ------------------------------------------------------------------------------------------------ stored form


def test_notebooks_match_their_generator():
    spec = importlib.util.spec_from_file_location("build_notebooks", NB_DIR / "build_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert sorted(module.NOTEBOOKS) == sorted(NOTEBOOKS)
    assert module.main(["--check"]) == 0, "stored notebooks differ: run python notebooks/build_notebooks.py"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_stored_tidy(name):
    nb = read(name)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{name}: cell {cell.id} is stored with outputs"
            assert cell.execution_count is None, f"{name}: cell {cell.id} has an execution count"
    first = nb.cells[0]
    assert first.cell_type == "markdown" and any(b in first.source for b in BADGES), f"{name}: no badge"
    assert "blob/main/notebooks/" + name in first.source
    i = parameters_index(nb)
    code_cells = [j for j, c in enumerate(nb.cells) if c.cell_type == "code"]
    assert code_cells[0] == i, f"{name}: the parameters cell must be the first code cell"
    # Every name the CI run overrides is a real parameter (a typo would silently leave the GPU default).
    params = "\n" + nb.cells[i].source
    for key in ci_parameters(name, Path("/nonexistent")):
        assert f"\n{key} = " in params, f"{name}: {key} is not in the parameters cell"


# ------------------------------------------------------------------------------------------------ execution


def execute(name: str, tmp_path: Path, kernel_manager_factory, monkeypatch):
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    nb = read(name)
    inject(nb, ci_parameters(name, tmp_path))
    client = nbclient.NotebookClient(
        nb,
        km=kernel_manager_factory(),
        timeout=300,
        allow_errors=False,
        resources={"metadata": {"path": str(NB_DIR)}},
    )
    try:
        client.execute()
    finally:
        nbformat.write(nb, tmp_path / f"executed_{name}")  # kept for debugging a failure
    return nb


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory, kernel_manager_factory):
    """The quickstart notebook, executed once: its study also serves as the Kaggle test's previous session."""
    tmp = tmp_path_factory.mktemp("nb_quickstart")
    with pytest.MonkeyPatch.context() as mp:
        nb = execute("quickstart.ipynb", tmp, kernel_manager_factory, mp)
    return nb, tmp / "quickstart"


def test_quickstart_runs(quickstart):
    nb, study = quickstart
    assert (study / "report.md").is_file() and (study / "results.json").is_file()
    assert sorted((study / "figures").glob("*.png")), "no figures"
    assert json.loads((study / "preset.json").read_text())["preset"] == "none"
    state = json.loads((study / "study.json").read_text())
    assert all(state["phases"][p]["status"] == "done" for p in ("base_direct", "sft", "rlvr", "report"))
    text = outputs_text(nb)
    assert "no GPU installs" in text
    assert "preset: none" in text
    assert has_image(nb), "the report's figures were not shown inline"


def test_rlvr_colab_runs(tmp_path, kernel_manager_factory, monkeypatch):
    nb = execute("rlvr_medqa_colab.ipynb", tmp_path, kernel_manager_factory, monkeypatch)
    run = tmp_path / "rlvr"
    assert (run / "adapter" / "adapter_config.json").is_file()
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    assert steps == [1, 2]
    assert (
        sorted(p.name for p in (run / "eval").iterdir() if p.is_dir())
        and (run / "eval" / "results.md").is_file()
    )
    assert (run / "training_curves.png").is_file() and (run / "dynamics.json").is_file()
    exported = json.loads((run / "export-16bit" / "export.json").read_text())
    assert exported["merge"] == "16bit"
    text = outputs_text(nb)
    assert "CI=true: skipping the GPU installs" in text
    assert "Google Drive not mounted" in text
    assert "hub_repo is empty" in text
    assert has_image(nb)


def test_study_kaggle_resumes_the_previous_session(quickstart, tmp_path, kernel_manager_factory, monkeypatch):
    """The previous session (the quickstart's study) was cut off during RLVR, after checkpoint-1: the copy-back
    cell brings its outputs back, finished phases are skipped, RLVR resumes from checkpoint-1."""
    _, done = quickstart
    previous = tmp_path / "previous_session" / "study"
    shutil.copytree(done, previous)
    for cut in ("rlvr/adapter", "rlvr/checkpoint-2", "eval/rlvr", "figures"):
        shutil.rmtree(previous / cut)
    for cut in ("rlvr/dynamics.json", "report.md", "results.json"):
        (previous / cut).unlink()
    assert (previous / "rlvr" / "checkpoint-1").is_dir()
    nb = execute("study_kaggle.ipynb", tmp_path, kernel_manager_factory, monkeypatch)
    study = tmp_path / "study"
    state = json.loads((study / "study.json").read_text())
    for phase in ("base_direct", "base_cot", "sft", "eval_sft"):
        assert state["phases"][phase]["status"] == "skipped", phase
    for phase in ("rlvr", "eval_rlvr", "analyze", "report"):
        assert state["phases"][phase]["status"] == "done", phase
    run = json.loads((study / "rlvr" / "run.json").read_text())
    assert run["resumed_from"].endswith("checkpoint-1")
    steps = [
        json.loads(x)["step"]
        for x in (study / "rlvr" / "metrics.jsonl").read_text().splitlines()
        if x.strip()
    ]
    assert steps == [1, 2], "each step exactly once across the two sessions"
    assert (study / "report.md").is_file() and (study / "results.json").is_file()
    assert (study / "rlvr" / "export-lora" / "adapter_config.json").is_file()
    text = outputs_text(nb)
    assert "CI=true: skipping the GPU installs" in text
    assert "copied" in text and "from " + str(previous) in text
    assert "study complete: True" in text
    assert has_image(nb)
