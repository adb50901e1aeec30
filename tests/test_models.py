"""Model backends: backend choice, dtype / attention resolution, the tiny model, LoRA, adapters, shapes."""

from __future__ import annotations

import pytest
import torch

from medrlvr_lite import models
from medrlvr_lite.config import ModelConfig
from medrlvr_lite.models import BackendError, build_tiny, load_model, pick_backend

T4 = {"available": True, "name": "Tesla T4", "compute_capability": [7, 5], "total_memory_gib": 15.0}
A100 = {"available": True, "name": "NVIDIA A100", "compute_capability": [8, 0], "total_memory_gib": 40.0}


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def tiny_cfg() -> ModelConfig:
    return ModelConfig(name_or_path="tiny", lora={"r": 4, "alpha": 8})


def _modules(monkeypatch, present: set[str]) -> None:
    monkeypatch.setattr(models, "_has_module", lambda name: name in present)


# ---------------------------------------------------------------------------------------------------- backends


def test_auto_is_cpu_without_cuda(no_cuda):
    assert pick_backend("auto") == "cpu"
    assert pick_backend("cpu") == "cpu"


@pytest.mark.parametrize("forced", ["hf", "unsloth"])
def test_forcing_a_gpu_backend_without_cuda_says_what_to_do(no_cuda, forced):
    with pytest.raises(BackendError) as err:
        pick_backend(forced)
    msg = str(err.value)
    assert "no CUDA GPU was found" in msg
    assert "--backend cpu" in msg and "model.backend: cpu" in msg
    assert isinstance(err.value, RuntimeError)


def test_auto_branches_with_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    _modules(monkeypatch, {"unsloth"})
    assert pick_backend("auto") == "unsloth"
    assert pick_backend("hf") == "hf"
    _modules(monkeypatch, set())
    assert pick_backend("auto") == "hf"
    with pytest.raises(BackendError, match=r'pip install "medrlvr-lite\[gpu\]"'):
        pick_backend("unsloth")


def test_unknown_backend_is_rejected():
    with pytest.raises(BackendError, match="unknown backend 'tpu'"):
        pick_backend("tpu")


def test_dtype_follows_the_gpu_generation():
    assert models.resolve_dtype("auto", "cpu") is torch.float32
    assert models.resolve_dtype("auto", "hf", A100) is torch.bfloat16
    assert models.resolve_dtype("auto", "unsloth", T4) is torch.float16
    assert models.resolve_dtype("float32", "hf", T4) is torch.float32
    with pytest.raises(BackendError, match=r"Tesla T4 has 7\.5.*float16"):
        models.resolve_dtype("bfloat16", "hf", T4)


def test_attention_auto_uses_flash_attn_only_on_ampere_with_it_installed(monkeypatch):
    _modules(monkeypatch, {"flash_attn"})
    assert models.resolve_attn_implementation("auto", "hf", A100) == "flash_attention_2"
    assert models.resolve_attn_implementation("auto", "hf", T4) == "sdpa"
    assert models.resolve_attn_implementation("auto", "cpu") == "sdpa"
    _modules(monkeypatch, set())
    assert models.resolve_attn_implementation("auto", "hf", A100) == "sdpa"
    with pytest.raises(BackendError, match="flash-attn is not installed"):
        models.resolve_attn_implementation("flash_attention_2", "hf", A100)
    assert models.resolve_attn_implementation("eager", "hf", T4) == "eager"


def test_gpu_info_without_cuda(no_cuda):
    assert models.gpu_info() == {"available": False}


# ---------------------------------------------------------------------------------------------------- tiny model


def test_tiny_model_is_deterministic(tiny_cfg):
    m1, t1 = build_tiny(tiny_cfg)
    models._tiny_tokenizer_json.cache_clear()  # retrain the tokenizer from scratch
    m2, t2 = build_tiny(tiny_cfg)
    assert t1.backend_tokenizer.to_str() == t2.backend_tokenizer.to_str()
    text = "A 45-year-old man has chest pain.\nA. Myocardial infarction\nB. Pneumonia\nAssistant:"
    assert t1(text).input_ids == t2(text).input_ids
    s1, s2 = m1.state_dict(), m2.state_dict()
    assert s1.keys() == s2.keys()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    other, _ = build_tiny(tiny_cfg.model_copy(update={"name_or_path": "tiny:1"}))
    assert not torch.equal(other.model.embed_tokens.weight, m1.model.embed_tokens.weight)


def test_tiny_model_shape(tiny_cfg):
    model, tok = build_tiny(tiny_cfg)
    c = model.config
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads) == (64, 2, 4, 2)
    assert c.intermediate_size == 256 and c.tie_word_embeddings
    assert c.max_position_embeddings >= tiny_cfg.max_seq_length
    assert c.vocab_size == len(tok) and len(tok) >= tiny_cfg.tiny_vocab_size
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert model.dtype == torch.float32


def test_tags_are_single_tokens_and_survive_decoding(tiny_cfg):
    _, tok = build_tiny(tiny_cfg)
    for tag in models.TAGS:
        ids = tok(tag, add_special_tokens=False).input_ids
        assert len(ids) == 1, tag
    for letter in "ABCDEFGHIJ":
        assert len(tok(f" {letter}", add_special_tokens=False).input_ids) == 1, letter
    completion = "<think> The rash and fever suggest scarlet fever. </think><answer> B </answer>"
    ids = tok(completion + tok.eos_token).input_ids
    assert tok.decode(ids, skip_special_tokens=True) == completion
    assert tok.eos_token == tok.pad_token == "<|endoftext|>"
    assert tok.padding_side == "left"


def test_tiny_save_pretrained_round_trips(tiny_cfg, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tok = build_tiny(tiny_cfg)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    model2 = AutoModelForCausalLM.from_pretrained(tmp_path)
    tok2 = AutoTokenizer.from_pretrained(tmp_path)
    text = "User: Which drug? (A) 12 mg\nAssistant: <think> 3.5 x's </think><answer> C </answer>"
    assert tok2(text).input_ids == tok(text).input_ids
    assert (tok2.pad_token, tok2.eos_token, tok2.padding_side) == (tok.pad_token, tok.eos_token, "left")
    x = torch.tensor([tok(text).input_ids])
    with torch.no_grad():
        assert torch.equal(model(x).logits, model2(x).logits)


def test_local_model_directory_loads_on_the_cpu_backend(no_cuda, tiny_cfg, tmp_path):
    model, tok = build_tiny(tiny_cfg)
    model.save_pretrained(tmp_path)
    tok.pad_token = None  # load_model must set one
    tok.save_pretrained(tmp_path)
    loaded = load_model(ModelConfig(name_or_path=str(tmp_path)), for_training=False, verbose=False)
    assert loaded.backend == "cpu" and loaded.info["dtype"] == "float32"
    assert "load_in_4bit ignored on the cpu backend (full precision)" in loaded.info["notes"]
    assert (loaded.tokenizer.pad_token, loaded.tokenizer.padding_side) == ("<|endoftext|>", "left")
    x = torch.tensor([tok("<think> a </think>").input_ids])
    with torch.no_grad():
        assert torch.equal(loaded.model(x).logits, model(x).logits)
    with pytest.raises(BackendError, match="does not exist"):
        load_model(ModelConfig(name_or_path=str(tmp_path / "nope")), verbose=False)


# ---------------------------------------------------------------------------------------------------- LoRA


def test_load_model_tiny_puts_lora_on_every_linear_layer_but_the_head(no_cuda, tiny_cfg):
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    loaded = load_model(tiny_cfg, verbose=False)
    assert loaded.backend == "cpu" and isinstance(loaded.model, PeftModel)
    base = loaded.model.get_base_model()
    for layer in base.model.layers:
        for name in models.ALL_LINEAR_MODULES:
            parent = layer.self_attn if name.endswith(("q_proj", "k_proj", "v_proj", "o_proj")) else layer.mlp
            assert isinstance(getattr(parent, name), LoraLayer), name
    assert not isinstance(base.lm_head, LoraLayer)
    assert not isinstance(base.model.embed_tokens, LoraLayer)
    info = loaded.info
    assert info["lora"]["modules"] == sorted(models.ALL_LINEAR_MODULES)
    assert 0 < info["trainable_params"] < info["total_params"]
    trainable = [n for n, p in loaded.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert (info["dtype"], info["device"], info["load_in_4bit"]) == ("float32", "cpu", False)
    assert "no CUDA GPU" in info["backend_reason"]


def test_saved_adapter_reloads_with_the_same_logits(no_cuda, tiny_cfg, tmp_path):
    from peft import PeftModel

    trained = load_model(tiny_cfg, verbose=False)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # lora_B starts at zero: make the adapter do something
        for name, p in trained.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    trained.model.save_pretrained(tmp_path / "adapter")
    trained.model.eval()

    x = torch.tensor([trained.tokenizer("<think> x </think><answer> A </answer>").input_ids])
    evaluated = load_model(tiny_cfg, adapter=str(tmp_path / "adapter"), for_training=False, verbose=False)
    base = load_model(tiny_cfg, for_training=False, verbose=False)
    assert isinstance(evaluated.model, PeftModel) and not evaluated.model.training
    assert not isinstance(base.model, PeftModel) and base.info["trainable_params"] == 0
    with torch.no_grad():
        want, got, plain = (m(x).logits for m in (trained.model, evaluated.model, base.model))
    torch.testing.assert_close(got, want)
    assert not torch.allclose(plain, want, atol=1e-3)
    assert evaluated.info["trainable_params"] == 0

    resumed = load_model(tiny_cfg, adapter=str(tmp_path / "adapter"), for_training=True, verbose=False)
    assert resumed.info["trainable_params"] == trained.info["trainable_params"] > 0


def test_bad_adapter_paths_are_named(no_cuda, tiny_cfg, tmp_path):
    with pytest.raises(BackendError, match="adapter not found"):
        load_model(tiny_cfg, adapter=str(tmp_path / "missing"), verbose=False)
    with pytest.raises(BackendError, match="no adapter_config.json"):
        load_model(tiny_cfg, adapter=str(tmp_path), verbose=False)


def test_tiny_on_a_forced_gpu_backend_without_gpu_fails_clearly(no_cuda, tiny_cfg):
    with pytest.raises(BackendError, match="--backend cpu"):
        load_model(tiny_cfg.model_copy(update={"backend": "hf"}), verbose=False)


# ---------------------------------------------------------------------------------------------------- shapes


def test_qwen25_3b_shape_and_parameter_count():
    c = models.shape_config("qwen2.5-3b")
    assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads) == (
        2048,
        36,
        16,
        2,
    )
    assert (c.intermediate_size, c.vocab_size, c.max_position_embeddings) == (11008, 151936, 32768)
    assert c.tie_word_embeddings
    assert c.rope_parameters["rope_theta"] == 1e6
    n = models.count_params(c)  # built on the meta device: no memory allocated
    assert 3.08e9 < n < 3.10e9, n
    assert models.count_params(models.shape_config("tiny")) < 1e6
    with pytest.raises(BackendError, match="unknown model shape"):
        models.shape_config("gpt-5")
