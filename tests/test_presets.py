"""GPU presets: which preset each card gets, the precision rule, what is applied and what is kept, preset.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medrlvr_lite.config import load_config
from medrlvr_lite.presets import (
    HARDWARE_FIELDS,
    PRESET_FILES,
    PresetError,
    apply_preset,
    choose_preset,
    precision_for,
    resolve_preset,
)

ROOT = Path(__file__).resolve().parents[1]


def gpu(name, gib, cc, flash=False):
    return {
        "available": True,
        "name": name,
        "total_memory_gib": gib,
        "compute_capability": list(cc),
        "bf16_supported": cc >= (8, 0),
        "flash_attn_installed": flash,
    }


T4 = gpu("Tesla T4", 14.74, (7, 5))
P100 = gpu("Tesla P100-PCIE-16GB", 15.89, (6, 0))
V100_16 = gpu("Tesla V100-SXM2-16GB", 15.77, (7, 0))
V100_32 = gpu("Tesla V100-SXM2-32GB", 31.74, (7, 0))
A10 = gpu("NVIDIA A10G", 22.07, (8, 6))
RTX4090 = gpu("NVIDIA GeForce RTX 4090", 23.99, (8, 9), flash=True)
A100_40 = gpu("NVIDIA A100-SXM4-40GB", 39.39, (8, 0), flash=True)
H100 = gpu("NVIDIA H100 80GB HBM3", 79.19, (9, 0))
NO_GPU = {"available": False}


def preset_files_present(*names):
    missing = [n for n in names if not (ROOT / "configs" / PRESET_FILES[n]).is_file()]
    if missing:
        pytest.skip(f"preset files not written yet: {missing}")


@pytest.mark.parametrize(
    ("card", "expected"),
    [(T4, "t4"), (P100, "t4"), (V100_16, "t4"), (A10, "24gb"), (RTX4090, "24gb"), (V100_32, "24gb"),
     (A100_40, "80gb"), (H100, "80gb"), (NO_GPU, "none")],
)  # fmt: skip
def test_auto_chooses_by_memory(card, expected):
    preset, reason = choose_preset("auto", load_config(None), gpu=card)
    assert preset == expected
    assert reason.startswith("auto: ")
    if card["available"]:
        assert card["name"] in reason and "GiB" in reason


def test_auto_leaves_cpu_runs_and_the_tiny_model_alone():
    assert choose_preset("auto", load_config(None, ["model.backend=cpu"]), gpu=H100)[0] == "none"
    assert choose_preset("auto", load_config(None, ["model.name_or_path=tiny"]), gpu=H100)[0] == "none"
    assert choose_preset("none", load_config(None), gpu=H100)[0] == "none"
    assert choose_preset("t4", load_config(None), gpu=H100)[0] == "t4"  # explicit wins over the card


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(PresetError, match="unknown preset 'a100'.*auto, t4, 24gb, 80gb, none"):
        choose_preset("a100", gpu=T4)


def test_precision_rule():
    assert precision_for(T4)["dtype"] == "float16" and precision_for(T4)["attn_implementation"] == "sdpa"
    assert precision_for(V100_32)["dtype"] == "float16"
    assert precision_for(A10)["dtype"] == "bfloat16" and precision_for(A10)["attn_implementation"] == "sdpa"
    assert precision_for(A100_40)["attn_implementation"] == "flash_attention_2"
    p100 = precision_for(P100)
    assert p100["dtype"] == "float16" and p100["backend"] == "hf" and p100["fast_inference"] is False
    assert "backend" not in precision_for(T4)


def test_t4_preset_on_a_t4(tmp_path):
    preset_files_present("t4", "24gb")
    cfg = load_config(
        ROOT / "configs" / PRESET_FILES["24gb"],
        ["model.name_or_path=my/model", "rlvr.learning_rate=3e-5", "rlvr.max_steps=7"],
    )
    new, reason = apply_preset(cfg, "auto", gpu=T4, output_dir=tmp_path)
    source = load_config(ROOT / "configs" / PRESET_FILES["t4"])
    assert "preset: t4" in reason and "14.74 GiB <= 20 GiB" in reason and "fp16" in reason
    assert new.model.dtype == "float16" and new.model.attn_implementation == "sdpa"
    for dotted in ("rlvr.num_generations", "rlvr.max_completion_length", "model.lora.r", "rlvr.optim"):
        section, *rest = dotted.split(".")
        value_new, value_src = getattr(new, section), getattr(source, section)
        for key in rest:
            value_new, value_src = getattr(value_new, key), getattr(value_src, key)
        assert value_new == value_src, dotted
    # what is not hardware stays the user's
    assert new.model.name_or_path == "my/model"
    assert new.rlvr.learning_rate == 3e-5 and new.rlvr.max_steps == 7
    assert cfg.rlvr.max_completion_length == 1024, "the input config must not be modified"
    record = json.loads((tmp_path / "preset.json").read_text())
    assert record["requested"] == "auto" and record["preset"] == "t4"
    assert record["gpu"]["name"] == "Tesla T4"
    assert record["precision"]["dtype"] == "float16"
    assert record["changes"]["model.dtype"]["to"] == "float16"
    assert record["changes"]["rlvr.max_completion_length"] == {"from": 1024, "to": 512}


def test_explicit_overrides_are_kept():
    preset_files_present("80gb")
    cfg = load_config(None, ["rlvr.num_generations=4", "model.lora.r=8", "model.lora.alpha=8"])
    new, choice = resolve_preset(cfg, "auto", keep=["rlvr.num_generations", "model.lora"], gpu=H100)
    assert choice.preset == "80gb"
    assert new.rlvr.num_generations == 4 and new.model.lora.r == 8 and new.model.lora.alpha == 8
    assert "rlvr.num_generations" not in choice.changes and "model.lora.r" not in choice.changes
    assert new.model.dtype == "bfloat16"
    assert new.rlvr.max_completion_length == 1024
    assert set(choice.kept) == {"rlvr.num_generations", "model.lora.r", "model.lora.alpha"}


def test_p100_gets_the_hf_backend_without_vllm():
    preset_files_present("t4")
    new, choice = resolve_preset(load_config(None), "auto", gpu=P100)
    assert choice.preset == "t4"
    assert new.model.backend == "hf" and new.model.fast_inference is False and new.model.dtype == "float16"
    new, _ = resolve_preset(load_config(None, ["model.backend=cpu"]), "t4", gpu=P100)
    assert new.model.backend == "cpu", "an explicit cpu backend is never switched to a GPU one"
    # a notebook passes backend="auto" explicitly: auto still means "choose for me"
    new, _ = resolve_preset(
        load_config(None, ["model.backend=auto"]), "auto", keep=["model.backend"], gpu=P100
    )
    assert new.model.backend == "hf"


def test_none_changes_nothing(tmp_path):
    cfg = load_config(None)
    new, reason = apply_preset(cfg, "none", gpu=T4, output_dir=tmp_path)
    assert new == cfg and "preset: none" in reason
    assert json.loads((tmp_path / "preset.json").read_text())["changes"] == {}


@pytest.mark.parametrize("name", list(PRESET_FILES))
def test_preset_files_load_and_say_what_they_trade(name):
    preset_files_present(name)
    path = ROOT / "configs" / PRESET_FILES[name]
    cfg = load_config(path)
    text = path.read_text().lower()
    for word in ("batch", "generations", "completion", "lora rank", "vllm"):
        assert word in text, f"{path.name}: its comments do not say what it trades on {word!r}"
    r = cfg.rlvr
    assert (r.per_device_train_batch_size * r.gradient_accumulation_steps) % r.num_generations == 0, (
        f"{path.name}: completions per step must be a whole number of GRPO groups"
    )
    if r.max_prompt_length is not None:
        assert r.max_prompt_length + r.max_completion_length <= cfg.model.max_seq_length
    for dotted in HARDWARE_FIELDS:  # every field a preset sets exists in the schema
        node = cfg
        for key in dotted.split("."):
            node = getattr(node, key)


def test_presets_grow_with_the_card():
    preset_files_present(*PRESET_FILES)
    t4, mid, big = (load_config(ROOT / "configs" / PRESET_FILES[n]) for n in ("t4", "24gb", "80gb"))
    assert t4.model.dtype == "float16"
    assert t4.rlvr.num_generations <= mid.rlvr.num_generations <= big.rlvr.num_generations
    assert t4.rlvr.max_completion_length <= mid.rlvr.max_completion_length <= big.rlvr.max_completion_length


def test_cli_study_rejects_an_unknown_preset(tmp_path):
    from typer.testing import CliRunner

    from medrlvr_lite.cli import app

    result = CliRunner().invoke(
        app, ["study", "--config", str(ROOT / "configs" / PRESET_FILES["t4"]), "--output-dir", str(tmp_path),
              "--preset", "bogus"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "unknown preset 'bogus'" in result.output
