"""Generate the notebooks in this folder (stored without outputs), so they stay reproducible and tidy.

    python notebooks/build_notebooks.py           # (re)write quickstart / rlvr_medqa_colab / study_kaggle .ipynb
    python notebooks/build_notebooks.py --check   # exit 1 if a stored notebook differs from what this writes

Edit the cells here, not in Jupyter. Every cell calls the package's Python API (or CLI); no training logic
lives in a notebook. Each notebook has a badge, a short paragraph, and ONE parameters cell (tagged
``parameters``, papermill-style: papermill or ``tests/test_notebooks.py`` inject a cell after it that overrides
the values). The install cell skips GPU installs in CI (``CI=true``) or off Colab / Kaggle and says so.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
GITHUB = "medrlvr-lite/medrlvr-lite"
REPO_URL = f"https://github.com/{GITHUB}"


def colab_badge(name: str) -> str:
    url = f"https://colab.research.google.com/github/{GITHUB}/blob/main/notebooks/{name}"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"


def kaggle_badge(name: str) -> str:
    url = f"https://kaggle.com/kernels/welcome?src=https://github.com/{GITHUB}/blob/main/notebooks/{name}"
    return f"[![Open in Kaggle](https://kaggle.com/static/images/open-in-kaggle.svg)]({url})"


def _src(text: str) -> str:
    return textwrap.dedent(text).strip("\n")


# ---------------------------------------------------------------------------------------------- shared cells

INSTALL = """
# Install: find (or clone) the repository, whose configs/ hold the study configs and GPU presets, and install
# the package. GPU extras (unsloth, bitsandbytes{vllm_note}) only on Colab / Kaggle, never in CI.
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
{pre}
ON_COLAB = "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ
ON_KAGGLE = "KAGGLE_KERNEL_RUN_TYPE" in os.environ
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
print(f"Colab: {{ON_COLAB}}  Kaggle: {{ON_KAGGLE}}  CI: {{IN_CI}}")


def pip_install(*args):
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *args], check=True)


def is_repo(d):
    return (d / "medrlvr_lite" / "__init__.py").is_file() and (d / "configs").is_dir()


repo = next((d for d in (Path.cwd(), *Path.cwd().parents) if is_repo(d)), None)
if repo is None:
    if IN_CI:
        raise RuntimeError("CI: run the notebook from inside the repository")
    repo = (Path("/content") if ON_COLAB else Path.home()) / "medrlvr-lite"
    if not is_repo(repo):
        subprocess.run(["git", "clone", "--depth", "1", repo_url, str(repo)], check=True)
{install_branch}
sys.path.insert(0, str(repo))  # an editable install is seen by a fresh kernel only; this makes it importable now
os.chdir(repo)  # config paths below are relative to the repository
import medrlvr_lite

print("medrlvr-lite", medrlvr_lite.__version__, "from", repo)
"""

INSTALL_CPU = """
if importlib.util.find_spec("medrlvr_lite") is None:
    pip_install("-e", str(repo))
print("This notebook runs on CPU: no GPU installs (unsloth, bitsandbytes, vLLM) are needed, none are made.")
"""

INSTALL_GPU = """
if IN_CI or not (ON_COLAB or ON_KAGGLE):
    reason = "CI=true" if IN_CI else "not on Colab or Kaggle"
    print(f"{reason}: skipping the GPU installs (unsloth, bitsandbytes, vLLM); using the environment as it is.")
    if importlib.util.find_spec("medrlvr_lite") is None:
        pip_install("-e", str(repo))
else:
    extras = "gpu,vllm" if install_vllm else "gpu"
    pip_install("-e", f"{repo}[{extras}]")
    print(f"installed medrlvr-lite[{extras}] (Unsloth, bitsandbytes{', vLLM' if install_vllm else ''})")
"""

HARDWARE = """
# What this machine has, the backend that will be used, and the GPU preset (batch, generations, lengths, LoRA
# rank, precision) chosen for it. The preset's choice and reason are also written to preset.json.
from medrlvr_lite.config import load_config
from medrlvr_lite.models import gpu_info, pick_backend_with_reason
from medrlvr_lite.presets import apply_preset, override_keys

cfg = load_config(config, overrides)
cfg, preset_reason = apply_preset(cfg, preset, keep=override_keys(overrides), output_dir={out})
print("GPU:", gpu_info())
print("backend: %s (%s)" % pick_backend_with_reason(cfg.model.backend))
print("model:", cfg.model.name_or_path, "| dtype:", cfg.model.dtype, "| LoRA r:", cfg.model.lora.r)
"""

SHOW_REPORT = """
# The report, inline: report.md's text, then each figure it points to.
import re

from IPython.display import Image, Markdown, display

report_md = Path(study_dir) / "report.md"
text = report_md.read_text()
display(Markdown(re.sub(r"!\\[[^\\]]*\\]\\([^)]*\\)", "*(figure below)*", text)))
for png in sorted((Path(study_dir) / "figures").glob("*.png")):
    display(Markdown(f"**{png.name}**"))
    display(Image(filename=str(png)))
print("report:", report_md)
"""


def overrides_cell(extra: str = "") -> str:
    return (
        _src(
            """
        # The parameters above, as config overrides (`--set section.field=value` on the command line).
        overrides = list(overrides)
        if model:
            overrides.append(f"model.name_or_path={model}")
        if backend:
            overrides.append(f"model.backend={backend}")
        if train_dataset:
            overrides += [f"rlvr.dataset={train_dataset}", f"sft.dataset={train_dataset}"]
        if max_steps is not None:
            overrides.append(f"rlvr.max_steps={max_steps}")
        if eval_limit is not None:
            overrides.append(f"study.eval_limit={eval_limit}")
        """
        )
        + (("\n" + _src(extra)) if extra else "")
        + "\nprint(overrides)"
    )


# ---------------------------------------------------------------------------------------------- notebooks


def quickstart() -> list:
    name = "quickstart.ipynb"
    return [
        new_markdown_cell(
            _src(
                f"""
                {colab_badge(name)}

                # medrlvr-lite quickstart: the whole Med-RLVR study, offline, in minutes

                Runs every phase of the study — base model (direct and chain-of-thought prompts), SFT, RLVR
                with GRPO, their evaluations in- and out-of-distribution, the training dynamics and the report —
                on the embedded smoke study (`configs/smoke.yaml`: a tiny random model, the bundled medical
                questions), then shows the report and its plots here. No GPU, no download, no token: two to
                three minutes on 2 CPU cores (Colab's free CPU runtime included). The numbers are those of a tiny
                model and mean nothing medically; the point is to see the pipeline and the report end to end.
                For the real thing, see `rlvr_medqa_colab.ipynb` (T4 and up) and `study_kaggle.ipynb`.
                """
            )
        ),
        new_code_cell(
            _src(
                f"""
                # Parameters
                config = "configs/smoke.yaml"  # the smoke study: tiny model, bundled questions, CPU
                output_dir = "runs/quickstart"  # study directory: report.md, results.json, figures/
                model = None  # None: the config's model ("tiny"); e.g. "Qwen/Qwen2.5-0.5B" (downloads)
                backend = None  # None: the config's backend (smoke: cpu)
                train_dataset = None  # None: the config's (the bundled questions); e.g. "medqa:train"
                eval_datasets = None  # None: the config's; e.g. ["medqa:test", "mmlu_pro:health"]
                preset = "auto"  # GPU preset: auto (none on CPU or for the tiny model) / t4 / 24gb / 80gb / none
                max_steps = None  # RLVR optimizer steps; None: the config's
                eval_limit = None  # questions per evaluation set; None: the config's
                overrides = []  # more config overrides, e.g. ["rlvr.learning_rate=1e-4"]
                force = False  # rerun phases whose outputs are already complete
                repo_url = "{REPO_URL}"
                """
            ),
            metadata={"tags": ["parameters"]},
        ),
        new_markdown_cell("## Install"),
        new_code_cell(_src(INSTALL.format(vllm_note="", install_branch=_src(INSTALL_CPU), pre=""))),
        new_markdown_cell("## Config and hardware"),
        new_code_cell(
            overrides_cell(
                """
                if eval_datasets:
                    overrides.append(f"study.in_distribution={eval_datasets[0]}")
                    overrides.append(f"study.out_of_distribution={list(eval_datasets[1:])}")
                """
            )
        ),
        new_code_cell(_src(HARDWARE.format(out="output_dir"))),
        new_markdown_cell(
            _src(
                """
                ## The study

                `run_study` runs the phases in order and skips those whose outputs are complete, so running
                this cell again continues where it stopped (`force=True` reruns everything). The same from a
                terminal: `medrlvr-lite study --config configs/smoke.yaml`.
                """
            )
        ),
        new_code_cell(
            _src(
                """
                from medrlvr_lite.rlvr import TrainingInterrupted as RLVRInterrupted
                from medrlvr_lite.sft import TrainingInterrupted as SFTInterrupted
                from medrlvr_lite.study import run_study

                study_dir = run_study(cfg, output_dir=output_dir, force=force)
                print("study directory:", study_dir)
                """
            )
        ),
        new_markdown_cell("## The report"),
        new_code_cell(_src(SHOW_REPORT)),
        new_code_cell(
            _src(
                """
                # Every number of the report, from results.json (accuracies are fractions 0..1).
                import json

                results = json.loads((Path(study_dir) / "results.json").read_text())
                for phase, sets in results["evaluations"].items():
                    for spec, res in sets.items():
                        print(f"{phase:12s} {spec:24s} accuracy {100 * res['accuracy']:5.1f}%  n={res['n']}")
                """
            )
        ),
    ]


def rlvr_colab() -> list:
    name = "rlvr_medqa_colab.ipynb"
    return [
        new_markdown_cell(
            _src(
                f"""
                {colab_badge(name)} {kaggle_badge(name)}

                # RLVR on MedQA with a 4-bit Qwen2.5-3B (Unsloth + GRPO), on a free Colab T4 or bigger

                Trains Qwen2.5-3B (base, 4-bit, QLoRA adapters) with GRPO and the multiple-choice verifier's
                reward on MedQA, as in Med-RLVR (Zhang et al., 2025), then evaluates it on MedQA test
                (in-distribution) and MMLU-Pro health (out-of-distribution), shows the training dynamics (the
                paper's six stages), and exports the model to the Hugging Face Hub.

                * **Runtime:** Runtime → Change runtime type → T4 GPU (or L4 / A100). The GPU preset is picked
                  from the card's memory (`preset = "auto"`, see `configs/rlvr_qwen2.5-3b_medqa_t4.yaml`): on a
                  T4, fp16, 2 prompts x 8 generations per step, completions up to 512 tokens, LoRA rank 16; on
                  an L4 / A10 the 24 GB recipe; on an A100, bf16, 16-bit weights and 16 generations.
                * **Time (an estimate, not yet measured on a T4):** Unsloth's own Qwen2.5-3B GRPO notebook takes
                  about 24 s a step on a T4 (8 completions of up to 200 tokens); this one samples 16 completions
                  of up to 512 tokens a step, so expect about a minute a step, a few hours for the default 250
                  steps, and about an hour more for evaluating the 2,091 test questions. Set `max_steps` and
                  `eval_limit` lower for a first look.
                * **Disconnects:** with `use_drive = True` the run directory is on your Google Drive. After a
                  disconnect, reconnect and run all cells again: training resumes from its last checkpoint
                  (`train_rlvr(..., resume=True)`), evaluation from the predictions already written.
                * **Hub:** put a write token in Colab's secrets (🔑 in the left bar) as `HF_TOKEN`, give the
                  notebook access, and set `hub_repo`. The token is read into the environment, never printed.
                """
            )
        ),
        new_code_cell(
            _src(
                f"""
                # Parameters
                model = "Qwen/Qwen2.5-3B"  # the base model; loaded in 4-bit (Unsloth takes its pre-quantised copy)
                backend = "auto"  # auto: unsloth on a GPU when installed, else hf (bitsandbytes), else cpu
                config = "configs/rlvr_qwen2.5-3b_medqa.yaml"  # the RLVR recipe (the preset resizes it)
                train_dataset = "medqa:train"  # training questions (any data spec: medqa:train, jsonl@file, ...)
                eval_datasets = ["medqa:test", "mmlu_pro:health"]  # in-distribution first, then out-of-distribution
                preset = "auto"  # GPU preset by memory: auto / t4 / 24gb / 80gb / none
                output_dir = "medrlvr-lite/rlvr_medqa"  # relative: under MyDrive when Drive is mounted
                use_drive = True  # Colab: keep the run on Google Drive so a disconnect resumes
                max_steps = 250  # RLVR optimizer steps (None: the config's epochs)
                eval_limit = None  # questions per evaluation set (None: all)
                overrides = []  # more config overrides, e.g. ["rlvr.learning_rate=2e-5"]
                hub_repo = ""  # e.g. "your-name/qwen2.5-3b-med-rlvr"; empty: export locally, no push
                hub_private = True  # create the Hub repository as private
                export_merge = "16bit"  # "16bit": merged into the 16-bit base; "lora": the adapter alone
                install_vllm = True  # Unsloth's fast generation through vLLM (much faster rollouts)
                repo_url = "{REPO_URL}"
                """
            ),
            metadata={"tags": ["parameters"]},
        ),
        new_markdown_cell("## Install"),
        new_code_cell(_src(INSTALL.format(vllm_note=", vLLM", install_branch=_src(INSTALL_GPU), pre=""))),
        new_markdown_cell("## Where the run lives: Google Drive on Colab"),
        new_code_cell(
            _src(
                """
                # On Colab the run directory goes to Google Drive, so that a disconnect loses nothing.
                if ON_COLAB and use_drive and not IN_CI:
                    from google.colab import drive

                    drive.mount("/content/drive")
                    run_dir = Path("/content/drive/MyDrive") / output_dir
                else:
                    run_dir = Path(output_dir).resolve()
                    why = "CI" if IN_CI else ("use_drive=False" if ON_COLAB else "not on Colab")
                    print(f"{why}: Google Drive not mounted; the run stays in {run_dir}")
                run_dir.mkdir(parents=True, exist_ok=True)
                print("run directory:", run_dir)
                """
            )
        ),
        new_markdown_cell("## Config, hardware and GPU preset"),
        new_code_cell(overrides_cell('overrides.append(f"eval.datasets={list(eval_datasets)}")')),
        new_code_cell(_src(HARDWARE.format(out="run_dir"))),
        new_markdown_cell(
            _src(
                """
                ## RLVR with GRPO

                Resumes from the last checkpoint in the run directory when there is one (after a disconnect,
                run all cells again). Watch the reward, the accuracy and the completion length: the paper saw
                format failures first, then long verbose reasoning, then short (sometimes hacked) answers.
                Terminal equivalent: `medrlvr-lite train rlvr --config ... --output-dir RUN --resume`.
                """
            )
        ),
        new_code_cell(
            _src(
                """
                from medrlvr_lite.rlvr import train_rlvr

                adapter = run_dir / "adapter"
                if (adapter / "adapter_config.json").is_file() and (run_dir / "run.json").is_file():
                    print("training already finished:", adapter)
                else:
                    train_rlvr(cfg, resume=True, output_dir=str(run_dir))
                print("adapter:", adapter)
                """
            )
        ),
        new_markdown_cell(
            _src(
                """
                ## Evaluation: MedQA (in-distribution) and MMLU-Pro health (out-of-distribution)

                Greedy decoding with the paper's prompt, scored by the same verifier as the reward; accuracy
                with the bootstrap SD. Interrupted evaluations resume from the predictions already written.
                """
            )
        ),
        new_code_cell(
            _src(
                """
                from IPython.display import Markdown, display

                from medrlvr_lite.evaluate import evaluate

                eval_dir = run_dir / "eval"
                results = evaluate(
                    cfg.model,
                    cfg.eval.model_copy(update={"prompt": cfg.rlvr.prompt}),
                    adapter=str(adapter),
                    datasets=list(eval_datasets),
                    output_dir=str(eval_dir),
                    data_options=cfg.data,
                    limit=eval_limit,
                )
                display(Markdown((eval_dir / "results.md").read_text()))
                """
            )
        ),
        new_markdown_cell(
            _src(
                """
                ## Training dynamics

                Every logged completion classified into the paper's six stages (format failure, verbose
                formatter, concise structurer, direct-answer hacker, step-by-step exploit, reintegrated
                reasoning); accuracy and response length over the steps, stage windows shaded.
                """
            )
        ),
        new_code_cell(
            _src(
                """
                from IPython.display import Image

                from medrlvr_lite.dynamics import analyze
                from medrlvr_lite.report import plot_run

                dynamics = analyze(run_dir)
                print(dynamics.describe_windows())
                for title, png in plot_run(run_dir, dynamics).items():
                    display(Markdown(f"**{title}**"))
                    display(Image(filename=str(png)))
                """
            )
        ),
        new_markdown_cell(
            _src(
                """
                ## Export and push to the Hugging Face Hub

                The adapter is merged into the 16-bit base (never into 4-bit weights, which loses accuracy),
                or saved alone with `export_merge = "lora"`; a model card comes with it. With `hub_repo` set,
                the token comes from Colab's secrets (`HF_TOKEN`) into the environment, and is never printed.
                """
            )
        ),
        new_code_cell(_src(EXPORT.format(secret=COLAB_SECRET.strip("\n"), run="run_dir"))),
    ]


KAGGLE_ONE_GPU = """
# Kaggle's "GPU T4 x2" shows two GPUs; training here uses one (set before torch is imported).
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "0")
"""

COLAB_SECRET = """
    if ON_COLAB:
        from google.colab import userdata

        os.environ["HF_TOKEN"] = userdata.get("HF_TOKEN")
"""

KAGGLE_SECRET = """
    if ON_KAGGLE:
        from kaggle_secrets import UserSecretsClient

        os.environ["HF_TOKEN"] = UserSecretsClient().get_secret("HF_TOKEN")
"""

EXPORT = """
# Export and, with hub_repo set, push. The CLI does the same:
#   medrlvr-lite export RUN --out DIR --merge 16bit --push-to-hub USER/REPO --private
from medrlvr_lite.export import export_run

export_dir = Path({run}) / f"export-{{export_merge}}"
if hub_repo:
{secret}
    if not os.environ.get("HF_TOKEN"):
        raise RuntimeError("hub_repo is set but no HF_TOKEN secret was found; add it to the notebook's secrets")
else:
    print("hub_repo is empty: exporting locally, nothing is pushed")
exported = export_run(
    {run}, export_dir, merge=export_merge, push_to_hub=hub_repo or None, private=hub_private, force=True
)
print("exported:", exported.out_dir, "| files:", ", ".join(exported.files), "| hub:", exported.hub_url)
"""


def study_kaggle() -> list:
    name = "study_kaggle.ipynb"
    return [
        new_markdown_cell(
            _src(
                f"""
                {kaggle_badge(name)}

                # The whole Med-RLVR study on Kaggle (GPU T4 / P100), resumable across sessions

                Runs `medrlvr-lite study`: Qwen2.5-3B base with the direct and chain-of-thought prompts, SFT on
                MedQA (answers only), RLVR with GRPO, both evaluated on MedQA test (in-distribution) and
                MMLU-Pro health (out-of-distribution), the training dynamics and the report (the paper's
                Figures 2 and 3, ours beside theirs); then pushes the RLVR model to the Hugging Face Hub.

                * **Accelerator:** Settings → Accelerator → GPU T4 x2 (one is used) or P100; Internet on. The
                  T4 preset is taken automatically (fp16, 2 prompts x 8 generations a step, 512-token completions,
                  `configs/rlvr_qwen2.5-3b_medqa_t4.yaml`). On
                  a P100 (compute capability 6.0, no Triton) Unsloth and vLLM do not run: the `hf` backend is
                  taken, several times slower.
                * **Time:** the whole study does not fit one 12-hour Kaggle session on a T4 (RLVR alone is
                  several hours; four evaluations of 2,091 questions add a few more). It is built to span
                  sessions: every phase skips what is finished, training resumes from its last checkpoint,
                  evaluation from the predictions written. `session_budget_hours` stops the run cleanly
                  (checkpoint saved) before Kaggle's limit.
                * **Carrying the outputs into the next session:** everything is in `/kaggle/working/study`.
                  1. At the end of a session, **Save Version** (Save & Run All, or Quick Save); the version's
                     output holds `/kaggle/working/study`.
                  2. In the next session, **Add Input** → *Your Work* → this notebook (its output), or make a
                     dataset from the version's output (Output tab → *New Dataset*) and add it; it is mounted
                     read-only under `/kaggle/input/<name>/`.
                  3. Set `resume_from` below to `/kaggle/input/<name>/study`. The copy-back cell copies it to
                     `/kaggle/working/study`, and the study continues where it stopped.
                * **Hub:** Add-ons → Secrets → `HF_TOKEN` (a write token), attach it to the notebook, set `hub_repo`.
                """
            )
        ),
        new_code_cell(
            _src(
                f"""
                # Parameters
                config = "configs/study_qwen2.5-3b_medqa.yaml"  # the study recipe (the GPU preset resizes it)
                model = "Qwen/Qwen2.5-3B"  # the base model; loaded in 4-bit (Unsloth takes its pre-quantised copy)
                backend = "auto"  # auto: unsloth on a GPU when installed, else hf (bitsandbytes), else cpu
                train_dataset = "medqa:train"  # SFT and RLVR training questions
                in_distribution = "medqa:test"
                out_of_distribution = ["mmlu_pro:health"]  # also selectable: "medmcqa:dev", "pubmedqa:test"
                preset = "auto"  # GPU preset by memory: auto / t4 / 24gb / 80gb / none
                output_dir = "/kaggle/working/study"  # Kaggle keeps /kaggle/working as the version's output
                resume_from = ""  # e.g. "/kaggle/input/<previous-output>/study": copied to output_dir first
                session_budget_hours = 11.0  # stop cleanly (checkpoint saved) after this long; None: never
                max_steps = 250  # RLVR optimizer steps (None: the config's epochs)
                eval_limit = None  # questions per evaluation set (None: all)
                # One SFT run of 2 epochs instead of the paper's 3-point grid of 10 epochs (days on a T4; the grid
                # also needs MedQA dev, which the Hub copy lacks: sft.dev_dataset=medqa:dev@/kaggle/input/...).
                overrides = ["sft.lr_grid=null", "sft.num_train_epochs=2"]
                hub_repo = ""  # e.g. "your-name/qwen2.5-3b-med-rlvr"; empty: nothing is pushed
                hub_private = True
                export_merge = "16bit"  # "16bit": merged into the 16-bit base; "lora": the adapter alone
                install_vllm = True  # Unsloth's fast generation through vLLM
                repo_url = "{REPO_URL}"
                """
            ),
            metadata={"tags": ["parameters"]},
        ),
        new_markdown_cell("## Install"),
        new_code_cell(
            _src(INSTALL.format(vllm_note=", vLLM", install_branch=_src(INSTALL_GPU), pre=KAGGLE_ONE_GPU))
        ),
        new_markdown_cell(
            _src(
                """
                ## Copy the previous session's outputs back

                Kaggle mounts inputs read-only under `/kaggle/input/`; the study needs them writable in
                `/kaggle/working/`. Files already in `output_dir` are kept (they are newer).
                """
            )
        ),
        new_code_cell(
            _src(
                """
                import shutil

                study_dir = Path(output_dir)
                if resume_from:
                    source = Path(resume_from)
                    if not source.is_dir():
                        raise FileNotFoundError(f"resume_from={resume_from!r} is not a folder; add the previous output as an input")
                    copied = 0
                    for src in source.rglob("*"):
                        dst = study_dir / src.relative_to(source)
                        if src.is_dir():
                            dst.mkdir(parents=True, exist_ok=True)
                        elif not dst.exists():
                            dst.parent.mkdir(parents=True, exist_ok=True)
                            shutil.copy2(src, dst)
                            copied += 1
                    print(f"copied {copied} files from {source} to {study_dir}")
                else:
                    print("resume_from is empty: starting from", study_dir, "(continuing what is already there)")
                """
            )
        ),
        new_markdown_cell("## Config, hardware and GPU preset"),
        new_code_cell(
            overrides_cell(
                """
                overrides.append(f"study.in_distribution={in_distribution}")
                overrides.append(f"study.out_of_distribution={list(out_of_distribution)}")
                """
            )
        ),
        new_code_cell(_src(HARDWARE.format(out="study_dir"))),
        new_markdown_cell(
            _src(
                """
                ## The study

                Phases: base_direct, base_cot, sft, rlvr, eval_sft, eval_rlvr, analyze, report; finished ones are
                skipped. When `session_budget_hours` runs out the run is interrupted like Ctrl-C (the trainer
                saves a checkpoint) and the cell ends without an error, so that Save & Run All still saves the
                outputs; carry them into the next session as described at the top.
                """
            )
        ),
        new_code_cell(
            _src(
                """
                import _thread
                import threading

                from medrlvr_lite.rlvr import TrainingInterrupted as RLVRInterrupted
                from medrlvr_lite.sft import TrainingInterrupted as SFTInterrupted
                from medrlvr_lite.study import run_study

                timer = None
                if session_budget_hours:
                    timer = threading.Timer(session_budget_hours * 3600, _thread.interrupt_main)
                    timer.daemon = True
                    timer.start()
                study_complete = False
                try:
                    run_study(cfg, output_dir=str(study_dir))
                    study_complete = True
                except (KeyboardInterrupt, RLVRInterrupted, SFTInterrupted):
                    print("stopped at the session budget: Save Version, then continue in a new session with resume_from")
                finally:
                    if timer is not None:
                        timer.cancel()
                print("study complete:", study_complete, "-", study_dir)
                """
            )
        ),
        new_markdown_cell("## The report"),
        new_code_cell(
            _src(
                """
                if study_complete:
                """
            )
            + "\n"
            + textwrap.indent(_src(SHOW_REPORT), "    ")
            + "\nelse:\n"
            + '    print("the study is not finished yet; the report comes with the last session")'
        ),
        new_markdown_cell(
            _src(
                """
                ## Export the RLVR model and push it to the Hub

                The token comes from Kaggle's secrets (`HF_TOKEN`) into the environment, and is never printed.
                """
            )
        ),
        new_code_cell(
            "if study_complete:\n"
            + textwrap.indent(
                _src(EXPORT.format(secret=KAGGLE_SECRET.strip("\n"), run='study_dir / "rlvr"')), "    "
            )
            + "\nelse:\n"
            + '    print("the study is not finished yet: nothing to export")'
        ),
    ]


NOTEBOOKS = {
    "quickstart.ipynb": (quickstart, "colab"),
    "rlvr_medqa_colab.ipynb": (rlvr_colab, "colab"),
    "study_kaggle.ipynb": (study_kaggle, "kaggle"),
}


def build(name: str) -> nbformat.NotebookNode:
    make, platform = NOTEBOOKS[name]
    nb = new_notebook(cells=make())
    stem = name.removesuffix(".ipynb").replace("_", "-")
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{stem}-{i:02d}"
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    if platform == "colab" and name != "quickstart.ipynb":
        nb.metadata["accelerator"] = "GPU"
        nb.metadata["colab"] = {"provenance": [], "gpuType": "T4"}
    if platform == "kaggle":
        nb.metadata["kaggle"] = {"accelerator": "gpu", "isInternetEnabled": True, "isGpuEnabled": True}
    nbformat.validate(nb)
    return nb


def render(name: str) -> str:
    return nbformat.writes(build(name)) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a stored notebook is out of date")
    args = parser.parse_args(argv)
    stale = []
    for name in NOTEBOOKS:
        path = HERE / name
        text = render(name)
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
            print("wrote", path)
    if stale:
        print("out of date (run python notebooks/build_notebooks.py):", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
