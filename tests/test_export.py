"""Export: merged logits equal base + adapter, the folders reload offline, the card, the Hub push path, refusals.

A fake training run is built here: the tiny model, a PEFT LoRA whose ``lora_B`` weights are perturbed (a fresh
LoRA has B = 0 and would merge to the base itself), saved with ``config.yaml`` as a study's ``rlvr/`` run, with
the study's ``results.json`` beside it.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from typer.testing import CliRunner

from medrlvr_lite.cli import app
from medrlvr_lite.config import load_config, save_config
from medrlvr_lite.models import _has_module, build_tiny, make_lora_config
from medrlvr_lite.prompts import DIRECT_TEMPLATE, R1_TEMPLATE

ATOL = 1e-4  # fp32 merge of W + scale * B @ A vs the unmerged LoRA forward: rounding only
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"}
SECRET = "hf_exportTestSecretToken0123456789"
RESULTS = {
    "evaluations": {
        "base_direct": {"medqa:test": {"accuracy": 0.2346, "bootstrap_sd": 0.0119, "n": 40}},
        "sft": {
            "medqa:test": {"accuracy": 0.5003, "bootstrap_sd": 0.0135, "n": 40},
            "mmlu_pro:health": {"accuracy": 0.3168, "bootstrap_sd": 0.0163, "n": 30},
        },
        "rlvr": {
            "medqa:test": {"accuracy": 0.4924, "bootstrap_sd": 0.0141, "n": 40},
            "mmlu_pro:health": {"accuracy": 0.4009, "bootstrap_sd": 0.0175, "n": 30},
        },
    },
    "rlvr_run": "rlvr",
    "sft_run": "sft",
}

runner = CliRunner()


def _text(result) -> str:
    """Console output with rich's line wrapping undone."""
    return " ".join(result.output.split())


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A study dir with an RLVR run (adapter with non-zero B, config.yaml, metrics.jsonl) and results.json."""
    from peft import get_peft_model

    study = tmp_path_factory.mktemp("study")
    run_dir = study / "rlvr"
    cfg = load_config(
        None,
        [
            "model.name_or_path=tiny",
            "model.lora.r=4",
            "model.lora.alpha=8",
            f"rlvr.output_dir={run_dir}",
            "rlvr.dataset=smoke",
            "rlvr.reward.format_error=-1.0",
        ],
    )
    model, tokenizer = build_tiny(cfg.model)
    peft_model = get_peft_model(model, make_lora_config(cfg.model.lora))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.1)
    peft_model.eval()
    peft_model.save_pretrained(str(run_dir / "adapter"))
    tokenizer.save_pretrained(str(run_dir / "adapter"))
    save_config(cfg, run_dir / "config.yaml")
    (run_dir / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": s, "reward": 0.1 * s, "accuracy": 0.05 * s}) + "\n" for s in range(1, 5))
    )
    (study / "results.json").write_text(json.dumps(RESULTS))

    prompt = R1_TEMPLATE.format(
        question="Which vitamin deficiency causes scurvy?\nA. Vitamin C\nB. Vitamin D"
    )
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    expected = _logits(peft_model, ids)
    with peft_model.disable_adapter():
        base = _logits(peft_model, ids)
    # the merged weights in fp32, computed here independently of export.py
    merged_weights = {
        k: v.clone() for k, v in copy.deepcopy(peft_model).merge_and_unload().state_dict().items()
    }
    # A second copy of the run with no study beside it (no results.json in its parent).
    lone = tmp_path_factory.mktemp("lone") / "rlvr"
    shutil.copytree(run_dir, lone)
    return SimpleNamespace(
        study=study,
        dir=run_dir,
        lone=lone,
        cfg=cfg,
        ids=ids,
        expected=expected,
        base=base,
        tokenizer=tokenizer,
        merged_weights=merged_weights,
    )


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def _assert_safetensors_only(out: Path) -> None:
    files = [p for p in out.rglob("*") if p.is_file()]
    assert not [p.name for p in files if p.suffix in PICKLE_SUFFIXES]
    assert any(p.suffix == ".safetensors" for p in files)


def _front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_merge_16bit_equals_base_plus_adapter_and_reloads_with_transformers(run, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # The adapter really changes the model, so equality below is not trivially base == base.
    assert (run.expected - run.base).abs().max() > 1e-2
    out = tmp_path / "merged"
    result = runner.invoke(app, ["export", str(run.dir), "--out", str(out), "--merge", "16bit"])
    assert result.exit_code == 0, result.output
    assert "float32" in _text(result)

    model = AutoModelForCausalLM.from_pretrained(str(out), local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(str(out), local_files_only=True)
    assert not hasattr(model, "peft_config")
    assert model.dtype == torch.float32
    prompt = run.tokenizer.decode(run.ids[0])
    assert tokenizer(prompt, return_tensors="pt")["input_ids"].tolist() == run.ids.tolist()
    merged = _logits(model, run.ids)
    torch.testing.assert_close(merged, run.expected, atol=ATOL, rtol=0)
    assert (merged - run.base).abs().max() > 1e-2

    _assert_safetensors_only(out)
    assert (out / "model.safetensors").is_file()
    assert not (out / "adapter_config.json").exists()
    record = json.loads((out / "export.json").read_text())
    assert record["merge"] == "16bit" and record["dtype"] == "float32" and record["method"] == "rlvr"

    card = (out / "README.md").read_text()
    meta = _front_matter(card)
    assert meta["library_name"] == "transformers"
    assert {"medical", "rlvr", "grpo"} <= set(meta["tags"])
    assert meta["license"]
    assert "base_model" not in meta  # 'tiny' is not a Hub id: the Hub would reject it
    assert R1_TEMPLATE in card and "<think>" in card and "<answer>" in card
    assert "RLVR" in card and "GRPO" in card and "`smoke`" in card
    assert "| invalid format (tags missing or malformed) | -1.0 |" in card
    assert "| num_generations | 8 |" in card and "r=4, alpha=8" in card
    assert "float32" in card
    assert "medrlvr-lite score" in card and "AutoModelForCausalLM.from_pretrained" in card
    # the study's table, this run marked, ours beside the paper's
    assert "## Evaluation" in card
    assert "**RLVR (this model)**" in card
    assert "49.24 ± 1.41 (n=40)" in card and "40.09 ± 1.75 (n=30)" in card
    assert "50.03 ± 1.35" in card


def test_lora_export_reloads_with_peft_on_rebuilt_tiny_base(run, tmp_path):
    from peft import PeftModel
    from transformers import AutoTokenizer

    out = tmp_path / "lora"
    result = runner.invoke(app, ["export", str(run.lone), "--out", str(out)])  # --merge lora is the default
    assert result.exit_code == 0, result.output
    names = {p.name for p in out.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "README.md"} <= names
    assert "model.safetensors" not in names
    _assert_safetensors_only(out)
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == "tiny"

    cfg = load_config(out / "medrlvr_config.yaml")
    base, _ = build_tiny(cfg.model)
    model = PeftModel.from_pretrained(base, str(out)).eval()
    torch.testing.assert_close(_logits(model, run.ids), run.expected, atol=1e-5, rtol=0)
    tokenizer = AutoTokenizer.from_pretrained(str(out), local_files_only=True)
    assert tokenizer(run.tokenizer.decode(run.ids[0]))["input_ids"] == run.ids[0].tolist()

    # the exported folder is itself an adapter directory that exports again (its medrlvr_config.yaml rebuilds tiny)
    again = tmp_path / "again"
    result = runner.invoke(app, ["export", str(out), "--out", str(again), "--merge", "16bit"])
    assert result.exit_code == 0, result.output
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(str(again), local_files_only=True)
    torch.testing.assert_close(_logits(merged, run.ids), run.expected, atol=ATOL, rtol=0)

    card = (out / "README.md").read_text()
    assert _front_matter(card)["library_name"] == "peft"
    assert "PeftModel.from_pretrained" in card and "build_tiny" in card
    # no study beside this run: no evaluation table
    assert "## Evaluation" not in card and "this model)" not in card


def test_sft_run_card(run, tmp_path):
    """An SFT run (run.json says kind sft; settings_used; an --lr-grid winner in best.json): the card says SFT,
    shows the direct prompt, no reward table, the settings used and the grid's pick."""
    sft = tmp_path / "study" / "sft"
    shutil.copytree(run.dir / "adapter", sft / "adapter")
    cfg = run.cfg.model_copy(deep=True)
    cfg.sft.output_dir = "elsewhere"  # the method must come from run.json, not from the path
    save_config(cfg, sft / "config.yaml")
    settings = {"learning_rate": 5e-06, "num_train_epochs": 10, "bf16": False, "fp16": None}
    (sft / "run.json").write_text(json.dumps({"kind": "sft", "backend": "cpu", "settings_used": settings}))
    best = {
        "learning_rate": 5e-06,
        "dev_accuracy": 0.41,
        "dev_dataset": "medqa:dev@x.jsonl",
        "grid": {"1e-05": 0.3},
    }
    (sft / "best.json").write_text(json.dumps(best))
    (sft.parent / "results.json").write_text(json.dumps(RESULTS))
    out = tmp_path / "sft-lora"
    result = runner.invoke(app, ["export", str(sft), "--out", str(out)])
    assert result.exit_code == 0, result.output
    card = (out / "README.md").read_text()
    meta = _front_matter(card)
    assert "sft" in meta["tags"] and "rlvr" not in meta["tags"]
    assert "SFT (supervised fine-tuning on the gold answers" in card
    assert DIRECT_TEMPLATE in card and R1_TEMPLATE not in card
    assert "## Reward" in card and "| invalid format" not in card
    assert "| num_train_epochs | 10 |" in card and "| fp16 |" not in card
    assert "Learning rate 5e-06 was picked" in card and "`medqa:dev`" in card and "x.jsonl" not in card
    assert "**SFT (this model)**" in card and "50.03 ± 1.35 (n=40)" in card
    assert json.loads((out / "export.json").read_text())["method"] == "sft"


def test_adapter_dir_input_uses_the_config_beside_it(run, tmp_path):
    out = tmp_path / "from-adapter"
    result = runner.invoke(app, ["export", str(run.dir / "adapter"), "--out", str(out), "--merge", "16bit"])
    assert result.exit_code == 0, result.output
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(out), local_files_only=True)
    torch.testing.assert_close(_logits(model, run.ids), run.expected, atol=ATOL, rtol=0)


def test_push_to_hub_calls_huggingface_hub_with_the_folder_and_never_leaks_the_token(
    run, tmp_path, monkeypatch
):
    from huggingface_hub import HfApi

    calls: list[tuple[str, dict]] = []

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        return SimpleNamespace(url=f"https://huggingface.co/{repo_id}")

    def upload_folder(self, **kwargs):
        present = sorted(p.name for p in Path(kwargs["folder_path"]).iterdir())
        calls.append(("upload_folder", {**kwargs, "present": present}))
        return SimpleNamespace(commit_url="https://huggingface.co/x/commit/1")

    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    out = tmp_path / "push"
    result = runner.invoke(
        app,
        [
            "export",
            str(run.dir),
            "--out",
            str(out),
            "--merge",
            "16bit",
            "--push-to-hub",
            "me/tiny-rlvr",
            "--private",
        ],
    )
    assert result.exit_code == 0, result.output
    assert [name for name, _ in calls] == ["create_repo", "upload_folder"]
    create, upload = calls[0][1], calls[1][1]
    assert create["repo_id"] == "me/tiny-rlvr" and create["private"] is True and create["exist_ok"] is True
    assert upload["repo_id"] == "me/tiny-rlvr"
    assert Path(upload["folder_path"]) == out
    assert upload["commit_message"]
    assert {"README.md", "model.safetensors", "config.json", "tokenizer.json"} <= set(upload["present"])
    assert "https://huggingface.co/me/tiny-rlvr" in _text(result)
    # the card's usage snippet points at the repo
    assert 'from_pretrained("me/tiny-rlvr"' in (out / "README.md").read_text()
    assert SECRET not in result.output
    for path in out.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


@pytest.mark.parametrize("failure", ["no_token", "unauthorized", "network"])
def test_push_failure_says_what_to_do_and_keeps_the_export(run, tmp_path, monkeypatch, failure):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError

    def create_repo(self, repo_id, **kwargs):
        if failure == "no_token":
            raise LocalTokenNotFoundError("Token is required (`token=True`), but no token found.")
        if failure == "unauthorized":
            response = SimpleNamespace(status_code=401, headers={}, request=None)
            raise HfHubHTTPError("401 Client Error: Unauthorized", response=response)
        raise ConnectionError("Failed to resolve 'huggingface.co'")

    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    out = tmp_path / "kept"
    result = runner.invoke(app, ["export", str(run.dir), "--out", str(out), "--push-to-hub", "me/tiny-rlvr"])
    text = _text(result)
    assert result.exit_code == 1, result.output
    assert "push to me/tiny-rlvr failed" in text or "no Hugging Face token found" in text
    if failure == "network":
        assert "network" in text
    else:
        assert "hf auth login" in text and "HF_TOKEN" in text
    assert f"local export is complete in {out}" in text
    assert (out / "adapter_model.safetensors").is_file() and (out / "README.md").is_file()
    assert SECRET not in result.output


def test_merge_4bit_needs_force_and_says_why(run, tmp_path):
    out = tmp_path / "q4"
    result = runner.invoke(app, ["export", str(run.dir), "--out", str(out), "--merge", "4bit"])
    text = _text(result)
    assert result.exit_code == 2
    assert "loses accuracy" in text and "--force" in text and "--merge 16bit" in text
    assert not out.exists()
    if not torch.cuda.is_available():
        result = runner.invoke(app, ["export", str(run.dir), "--out", str(out), "--merge", "4bit", "--force"])
        assert result.exit_code == 2 and "needs a CUDA GPU" in _text(result)
        assert not out.exists()


@pytest.mark.skipif(_has_module("unsloth"), reason="checks the message shown when Unsloth is missing")
def test_gguf_without_unsloth_says_what_to_install(run, tmp_path):
    out = tmp_path / "gguf"
    result = runner.invoke(app, ["export", str(run.dir), "--out", str(out), "--gguf", "q4_k_m"])
    text = _text(result)
    assert result.exit_code == 2
    assert 'pip install "medrlvr-lite[gpu]"' in text and "Unsloth" in text
    assert "Traceback" not in result.output
    assert not out.exists()


def test_refusals(run, tmp_path):
    # a pickled adapter is never loaded
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy2(run.dir / "adapter" / "adapter_config.json", pickled / "adapter_config.json")
    (pickled / "adapter_model.bin").write_bytes(b"not loaded")
    result = runner.invoke(app, ["export", str(pickled), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "safetensors only" in _text(result) and "pickle" in _text(result)
    # adapters without a config.yaml beside them: no base named, or the tiny base (rebuilt from the config only)
    for base, message in [(None, "cannot tell the base model"), ("tiny", "trained on the tiny model")]:
        orphan = tmp_path / f"orphan-{base}"
        shutil.copytree(run.dir / "adapter", orphan)
        adapter_config = json.loads((orphan / "adapter_config.json").read_text())
        adapter_config["base_model_name_or_path"] = base
        (orphan / "adapter_config.json").write_text(json.dumps(adapter_config))
        result = runner.invoke(app, ["export", str(orphan), "--out", str(tmp_path / "y")])
        assert result.exit_code == 2 and message in _text(result) and "config.yaml" in _text(result)
        assert not (tmp_path / "y").exists()
    # a non-empty --out is not written over without --force
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    result = runner.invoke(app, ["export", str(run.dir), "--out", str(busy)])
    assert result.exit_code == 2 and "not empty" in _text(result)
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    # a bad merge mode and a bad repo id
    result = runner.invoke(app, ["export", str(run.dir), "--out", str(tmp_path / "z"), "--merge", "8bit"])
    assert result.exit_code == 2 and "--merge must be one of" in _text(result)
    result = runner.invoke(
        app, ["export", str(run.dir), "--out", str(tmp_path / "z"), "--push-to-hub", "norepo"]
    )
    assert result.exit_code == 2 and "USER/REPO" in _text(result)
    assert not (tmp_path / "z").exists()


def test_adapter_trained_on_4bit_base_is_merged_into_the_16bit_base(run, tmp_path):
    """A non-tiny base (a local directory standing in for a Hub model) trained with model.load_in_4bit on a GPU
    backend: the export reloads the base in bf16 (never 4-bit) and says so in the console and the card."""
    from transformers import AutoModelForCausalLM

    from medrlvr_lite.export import base_16bit_name, resolve_source

    base_dir = tmp_path / "base-model"
    model, tokenizer = build_tiny(run.cfg.model)
    model.save_pretrained(str(base_dir))
    tokenizer.save_pretrained(str(base_dir))
    run_dir = tmp_path / "runs" / "rlvr"
    shutil.copytree(run.dir / "adapter", run_dir / "adapter")
    cfg = run.cfg.model_copy(deep=True)
    cfg.model.name_or_path = str(base_dir)
    cfg.model.backend = "hf"
    cfg.model.load_in_4bit = True
    save_config(cfg, run_dir / "config.yaml")
    source = resolve_source(run_dir)
    assert source.trained_in_4bit and not source.tiny and source.method == "rlvr"
    assert base_16bit_name("unsloth/Qwen2.5-3B-bnb-4bit") == "unsloth/Qwen2.5-3B"

    out = tmp_path / "merged"
    result = runner.invoke(app, ["export", str(run_dir), "--out", str(out), "--merge", "16bit"])
    assert result.exit_code == 0, result.output
    text = _text(result)
    assert "bfloat16" in text and "not into dequantised 4-bit weights" in text
    card = (out / "README.md").read_text()
    assert "trained on a 4-bit (NF4, QLoRA) base" in card and "16-bit base weights (bfloat16)" in card
    assert "qlora" in _front_matter(card)["tags"]
    merged = AutoModelForCausalLM.from_pretrained(str(out), local_files_only=True)
    assert merged.dtype == torch.bfloat16
    assert getattr(merged.config, "quantization_config", None) is None
    # Every saved weight is the fp32 merge rounded to bf16: 8-bit mantissa, two roundings (the base weight, then
    # the sum), so each error is within 2^-7 of the tensor's largest magnitude. Merging into dequantised NF4
    # weights (16 levels per block) would be off by several percent of it.
    from safetensors.torch import load_file

    saved = load_file(str(out / "model.safetensors"))
    assert [k for k in saved if k.endswith("q_proj.weight") or k.endswith("down_proj.weight")]
    for key, tensor in saved.items():
        assert tensor.dtype == torch.bfloat16, key
        want = run.merged_weights[key]
        err = (tensor.float() - want).abs().max().item()
        assert err <= 2**-7 * want.abs().max().item(), (key, err)
    # and the bf16 model's logits sit far nearer base + adapter than the base (bf16 noise compounds over layers)
    logits = _logits(merged, run.ids)
    err = (logits - run.expected).abs().max().item()
    assert err < 0.5 * (run.expected - run.base).abs().max().item(), err


def test_merge_4bit_with_force_merges_in_16bit_then_quantises(run, tmp_path, monkeypatch):
    """The 4-bit path without a GPU: CUDA and the bitsandbytes step are stood in for; what reaches the
    quantiser must be the full-precision merged model, and the card must warn about the accuracy loss."""
    import medrlvr_lite.export as export_mod
    import medrlvr_lite.models as models_mod

    seen: dict = {}

    def fake_quantise(merged_dir: Path, out: Path, dtype: str) -> None:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(str(merged_dir), local_files_only=True)
        seen["dtype"], seen["quantized"] = dtype, getattr(model.config, "quantization_config", None)
        seen["logits"] = _logits(model, run.ids)
        model.save_pretrained(str(out))

    monkeypatch.setattr(models_mod, "_cuda_available", lambda: True)
    real_has_module = models_mod._has_module  # bitsandbytes is a GPU extra, absent from the CPU test install
    monkeypatch.setattr(
        models_mod, "_has_module", lambda name: name == "bitsandbytes" or real_has_module(name)
    )
    monkeypatch.setattr(export_mod, "_quantise_nf4", fake_quantise)
    out = tmp_path / "q4"
    result = runner.invoke(app, ["export", str(run.dir), "--out", str(out), "--merge", "4bit", "--force"])
    assert result.exit_code == 0, result.output
    assert seen["dtype"] == "float32" and seen["quantized"] is None
    torch.testing.assert_close(seen["logits"], run.expected, atol=ATOL, rtol=0)
    card = (out / "README.md").read_text()
    assert "Quantised to 4-bit NF4" in card and "lower accuracy" in card
    assert {"4-bit", "bitsandbytes"} <= set(_front_matter(card)["tags"])
    _assert_safetensors_only(out)
