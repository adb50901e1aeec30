"""Models: load a base model on the fastest backend present and put a LoRA adapter on it.

Three backends, picked by ``model.backend`` (``auto`` chooses the first that works here):

- ``unsloth`` (CUDA + ``pip install "medrlvr-lite[gpu]"``): Unsloth's ``FastLanguageModel`` in 4-bit, its LoRA
  with Unsloth gradient checkpointing, and vLLM generation through ``fast_inference`` when vLLM is installed;
- ``hf`` (CUDA, no Unsloth): transformers + bitsandbytes NF4 4-bit + PEFT LoRA (QLoRA), SDPA attention, or
  flash-attn 2 when it is installed and the GPU is Ampere or newer;
- ``cpu``: full precision (fp32) + PEFT LoRA, for tests and the offline smoke run.

The model spec ``tiny`` (or ``tiny:<seed>``) builds a small random Qwen2 and a byte-level BPE tokenizer trained
on the fly (deterministically, well under a second) on the bundled smoke questions and the prompt templates: no
download, used by the tests and ``configs/smoke.yaml``.

    from medrlvr_lite.config import load_config
    from medrlvr_lite.models import load_model
    loaded = load_model(load_config("configs/smoke.yaml").model)            # policy with a fresh LoRA
    loaded = load_model(cfg.model, adapter="runs/rlvr/adapter", for_training=False)   # evaluation
    loaded.model, loaded.tokenizer, loaded.backend, loaded.info

Tokenizers come back with a pad token (Qwen: ``<|endoftext|>``) and ``padding_side="left"``, which is what
batched generation needs; training code that pads on the right sets ``tokenizer.padding_side`` itself.

With the ``unsloth`` backend, Unsloth patches transformers / TRL when it is imported: code that trains with
it should call :func:`import_unsloth` before it imports ``trl`` (``load_model`` imports it lazily otherwise).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medrlvr_lite.config import LoraSpec, ModelConfig

if TYPE_CHECKING:  # pragma: no cover
    import torch

logger = logging.getLogger(__name__)

BACKENDS: tuple[str, ...] = ("unsloth", "hf", "cpu")
# What 'all-linear' means for Qwen2 / Llama-style blocks. PEFT resolves 'all-linear' itself (and leaves the
# lm_head out); Unsloth wants the explicit list.
ALL_LINEAR_MODULES: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TAGS: tuple[str, ...] = ("<think>", "</think>", "<answer>", "</answer>")
LETTERS: tuple[str, ...] = tuple("ABCDEFGHIJ")
EOS_TOKEN = "<|endoftext|>"
# Qwen2's pre-tokenizer split (transformers' tokenization_qwen2.PRETOKENIZE_REGEX).
QWEN_PRETOKENIZE_REGEX = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_NO_GPU_HINT = "use `--backend cpu` or set `model.backend: cpu` in the config"
_GPU_EXTRA_HINT = 'pip install "medrlvr-lite[gpu]"'


class BackendError(RuntimeError):
    """The requested backend (or dtype / attention kernel) cannot run here; the message says what to do."""


@dataclass
class Loaded:
    """A loaded model: ``model`` (a PeftModel when a LoRA is attached), ``tokenizer``, ``backend`` and ``info``
    (what was actually used: dtype, device, attention, 4-bit, LoRA, parameter counts, GPU, why this backend)."""

    model: Any
    tokenizer: Any
    backend: str
    info: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------------------
# Detection


def _has_module(name: str) -> bool:
    """Whether ``name`` is importable, without importing it (importing unsloth patches half the ecosystem)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def gpu_info(index: int | None = None) -> dict:
    """The GPU this process runs on: ``available``, ``name``, ``total_memory_gib``, ``compute_capability``
    ([major, minor]), ``bf16_supported`` (Ampere+, cc >= 8.0; T4 / V100 / P100 have none), ``device_count``,
    ``flash_attn_installed``. ``{"available": False}`` without CUDA."""
    if not _cuda_available():
        return {"available": False}
    import torch

    if index is None:
        index = torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    major, minor = props.major, props.minor
    return {
        "available": True,
        "index": index,
        "name": props.name,
        "total_memory_gib": round(props.total_memory / 2**30, 2),
        "compute_capability": [major, minor],
        "bf16_supported": major >= 8,
        "device_count": torch.cuda.device_count(),
        "flash_attn_installed": _has_module("flash_attn"),
    }


def _ampere_or_newer(gpu: dict | None) -> bool:
    return bool(gpu and gpu.get("available", True) and tuple(gpu.get("compute_capability", (0, 0))) >= (8, 0))


def pick_backend_with_reason(requested: str = "auto") -> tuple[str, str]:
    """Like :func:`pick_backend` and also says why, in words."""
    requested = (requested or "auto").lower()
    if requested not in ("auto", *BACKENDS):
        raise BackendError(f"unknown backend {requested!r}; choose one of auto, {', '.join(BACKENDS)}")
    cuda = _cuda_available()
    if requested == "cpu":
        return "cpu", "cpu requested"
    if requested == "auto":
        if not cuda:
            return "cpu", "auto: no CUDA GPU found"
        if _has_module("unsloth"):
            return "unsloth", "auto: CUDA GPU and unsloth installed"
        return "hf", f"auto: CUDA GPU, unsloth not installed ({_GPU_EXTRA_HINT} for the fast path)"
    if not cuda:
        raise BackendError(
            f"backend {requested!r} needs a CUDA GPU, but no CUDA GPU was found (torch.cuda.is_available() is "
            f"False); {_NO_GPU_HINT}, or run on a machine with an NVIDIA GPU"
        )
    if requested == "unsloth" and not _has_module("unsloth"):
        raise BackendError(
            f"backend 'unsloth' requested but unsloth is not installed: {_GPU_EXTRA_HINT} "
            "(or use `--backend hf` for transformers + bitsandbytes)"
        )
    return requested, f"{requested} requested"


def pick_backend(requested: str = "auto") -> str:
    """``auto`` -> ``unsloth`` (CUDA + unsloth importable), else ``hf`` (CUDA), else ``cpu``.

    Forcing ``unsloth`` / ``hf`` without a CUDA GPU, or ``unsloth`` without it installed, raises a
    :class:`BackendError` that says what to do instead."""
    backend, reason = pick_backend_with_reason(requested)
    logger.info("backend: %s (%s)", backend, reason)
    return backend


def resolve_dtype(dtype: str, backend: str, gpu: dict | None = None) -> torch.dtype:
    """The compute dtype. ``auto``: fp32 on the cpu backend, bf16 on Ampere+ GPUs (cc >= 8.0), fp16 on older GPUs
    (T4, V100, P100). An explicit bf16 on a GPU without bf16 is an error (the classic T4 failure)."""
    import torch

    names = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
    dtype = (dtype or "auto").lower()
    if dtype not in ("auto", *names):
        raise BackendError(f"unknown dtype {dtype!r}; choose auto, bfloat16, float16 or float32")
    if backend == "cpu":
        return torch.float32 if dtype == "auto" else names[dtype]
    if gpu is None:
        gpu = gpu_info()
    if dtype == "auto":
        return torch.bfloat16 if _ampere_or_newer(gpu) else torch.float16
    if dtype == "bfloat16" and not _ampere_or_newer(gpu):
        cc = ".".join(str(x) for x in gpu.get("compute_capability", ["?"]))
        raise BackendError(
            f"model.dtype: bfloat16 needs an Ampere or newer GPU (compute capability >= 8.0); "
            f"{gpu.get('name', 'this GPU')} has {cc}. Use model.dtype: float16 or auto."
        )
    return names[dtype]


def resolve_attn_implementation(requested: str, backend: str, gpu: dict | None = None) -> str:
    """``auto``: ``flash_attention_2`` when flash-attn is installed and the GPU is Ampere+, else ``sdpa``."""
    requested = (requested or "auto").lower()
    if requested not in ("auto", "sdpa", "eager", "flash_attention_2"):
        raise BackendError(
            f"unknown attn_implementation {requested!r}; choose auto, sdpa, eager, flash_attention_2"
        )
    if backend != "cpu" and gpu is None:
        gpu = gpu_info()
    fa2_ok = backend != "cpu" and _ampere_or_newer(gpu) and _has_module("flash_attn")
    if requested == "auto":
        return "flash_attention_2" if fa2_ok else "sdpa"
    if requested == "flash_attention_2" and not fa2_ok:
        why = (
            "flash-attn is not installed (pip install flash-attn)"
            if not _has_module("flash_attn")
            else "it needs a CUDA GPU of the Ampere generation or newer"
        )
        raise BackendError(
            f"model.attn_implementation: flash_attention_2 cannot be used: {why}. Use sdpa or auto."
        )
    return requested


def import_unsloth() -> Any:
    """Import Unsloth (before ``trl`` / ``transformers`` are imported, so its patches apply) and return it."""
    try:
        import unsloth  # noqa: F401

        return unsloth
    except ImportError as exc:
        raise BackendError(f"unsloth could not be imported ({exc}); {_GPU_EXTRA_HINT}") from exc


# --------------------------------------------------------------------------------------------------------------
# The tiny model: a small random Qwen2 + a BPE tokenizer trained on the bundled questions


def is_tiny(name_or_path: str) -> bool:
    return name_or_path == "tiny" or name_or_path.startswith("tiny:")


def _tiny_seed(name_or_path: str, default: int) -> int:
    if ":" not in name_or_path:
        return default
    raw = name_or_path.split(":", 1)[1]
    try:
        return int(raw)
    except ValueError:
        raise BackendError(
            f"model.name_or_path {name_or_path!r}: expected 'tiny' or 'tiny:<integer seed>'"
        ) from None


_FALLBACK_QUESTIONS = [
    "A 45-year-old man presents with crushing chest pain radiating to the left arm and diaphoresis. "
    "Which of the following is the most likely diagnosis?",
    "A 6-year-old girl has fever, sore throat and a sandpaper-like rash. Which organism is most likely responsible?",
    "A 30-year-old woman reports fatigue, weight gain and cold intolerance. Which laboratory test should be "
    "ordered first?",
    "A patient with type 2 diabetes mellitus has an elevated serum creatinine. Which drug should be avoided?",
    "A 70-year-old man has a resting tremor, rigidity and bradykinesia. Which neurotransmitter is deficient?",
    "Which vitamin deficiency causes scurvy, with bleeding gums and poor wound healing?",
    "A newborn has bilious vomiting and a double bubble sign on abdominal x-ray. What is the most likely cause?",
    "Which of the following is the first-line treatment of anaphylaxis?",
]
_FALLBACK_OPTIONS = [
    "Myocardial infarction", "Pneumonia", "Pulmonary embolism", "Aortic dissection", "Pericarditis",
    "Streptococcus pyogenes", "Staphylococcus aureus", "Thyroid stimulating hormone", "Metformin", "Dopamine",
    "Vitamin C", "Duodenal atresia", "Intramuscular epinephrine", "None of the above",
]  # fmt: skip


def _read_smoke_questions() -> list[tuple[str, list[str], str | None]]:
    """(question, option texts, gold letter) from the bundled smoke set; tolerant of any row shape."""
    path = Path(__file__).resolve().parent / "assets" / "smoke_questions.jsonl"
    rows: list[tuple[str, list[str], str | None]] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        lines = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if not isinstance(row, dict) or not isinstance(row.get("question"), str):
            continue
        options = row.get("options")
        if isinstance(options, dict):
            texts = [str(v) for v in options.values()]
        elif isinstance(options, list):
            texts = [str(v) for v in options]
        else:
            texts = []
        gold = row.get("gold", row.get("answer"))
        gold = gold if isinstance(gold, str) and len(gold) == 1 and gold in LETTERS else None
        rows.append((row["question"], texts[: len(LETTERS)], gold))
    if not rows:
        opts = _FALLBACK_OPTIONS
        rows = [(q, opts[i % 5 : i % 5 + 5], LETTERS[i % 5]) for i, q in enumerate(_FALLBACK_QUESTIONS)]
    return rows


def _tiny_corpus() -> list[str]:
    """Training text for the tiny tokenizer: questions rendered with every prompt template, plus completions in
    the R1 tag format for every letter, so ' A' .. ' J' and the tag surroundings get their own merges."""
    from types import SimpleNamespace

    rows = _read_smoke_questions()
    try:
        from medrlvr_lite.prompts import STYLES, render_prompt
    except Exception:  # the tokenizer must build even if prompts is broken
        STYLES, render_prompt = (), None
    texts: list[str] = []
    for i, (question, options, gold) in enumerate(rows):
        record = SimpleNamespace(question=question, options=dict(zip(LETTERS, options, strict=False)))
        rendered = False
        if render_prompt is not None:
            for style in STYLES:
                try:
                    texts.append(render_prompt(record, style=style))
                    rendered = True
                except Exception:
                    pass
        if not rendered:
            texts.append(
                "A conversation between User and Assistant. The reasoning process and answer are enclosed within "
                "<think> </think> and <answer> </answer> tags, respectively.\nUser: "
                + "\n".join([question] + [f"{k}. {v}" for k, v in record.options.items()])
                + "\nAssistant:"
            )
        letter = gold or LETTERS[i % len(LETTERS)]
        texts.append(f" <think> {question} </think><answer> {letter} </answer>")
    for letter in LETTERS:
        texts += [f"<answer> {letter} </answer>", f"The answer is {letter}."] * 20
    return texts


@functools.lru_cache(maxsize=8)
def _tiny_tokenizer_json(vocab_size: int) -> str:
    """Train the byte-level BPE once per process and vocab size; returns the serialized tokenizer."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )

    if vocab_size < 300:
        raise BackendError(
            f"model.tiny_vocab_size is {vocab_size}; it must be at least 300 (256 byte symbols + merges)"
        )
    # The same pipeline as Qwen2's tokenizer (NFC, Qwen's split regex, byte-level), so that the saved tokenizer
    # behaves identically whether it is reloaded as a generic fast tokenizer or as Qwen2Tokenizer.
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN, "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_tiny_corpus(), trainer=trainer)
    tok = _ensure_letter_tokens(tok)
    # The tags are ordinary added tokens (not special): always one token each, and kept by
    # decode(skip_special_tokens=True), which generation / evaluation code uses.
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in TAGS])
    return tok.to_str()


def _ensure_letter_tokens(tok: Any) -> Any:
    """Make each answer letter with its leading space (' A' .. ' J') one token, as in real BPE vocabularies, by
    appending the missing merges last (lowest priority: every learned merge still applies first)."""
    from tokenizers import Tokenizer

    data = json.loads(tok.to_str())
    vocab, merges = data["model"]["vocab"], data["model"]["merges"]
    space = "\u0120"  # byte-level 'Ġ'
    for letter in LETTERS:
        if space + letter not in vocab:
            vocab[space + letter] = len(vocab)
            merges.append([space, letter] if merges and isinstance(merges[0], list) else f"{space} {letter}")
    return Tokenizer.from_str(json.dumps(data))


def build_tiny_tokenizer(cfg: ModelConfig) -> Any:
    """The tiny model's tokenizer (a fresh ``PreTrainedTokenizerFast`` each call; training is cached)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_str(_tiny_tokenizer_json(cfg.tiny_vocab_size))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        padding_side="left",
        model_max_length=max(cfg.max_seq_length, 4096),  # = the tiny model's max_position_embeddings
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    return tokenizer


def shape_config(shape: str, cfg: ModelConfig | None = None, vocab_size: int | None = None) -> Any:
    """A ``Qwen2Config`` of a named shape: ``qwen2.5-3b`` (Qwen2.5-3B: hidden 2048, 36 layers, 16 heads, 2 KV heads,
    intermediate 11008, vocab 151936, tied embeddings, rope theta 1e6) or ``tiny`` (from ``cfg``'s tiny_* fields).
    Benchmarks build random-weight models from it: speed and memory depend on shapes, not on weight values."""
    from transformers import Qwen2Config

    shape = shape.lower()
    if shape in ("qwen2.5-3b", "qwen2.5_3b", "qwen2.5-3b-instruct"):
        return Qwen2Config(
            vocab_size=vocab_size or 151936,
            hidden_size=2048,
            intermediate_size=11008,
            num_hidden_layers=36,
            num_attention_heads=16,
            num_key_value_heads=2,
            hidden_act="silu",
            max_position_embeddings=32768,
            initializer_range=0.02,
            rms_norm_eps=1e-6,
            tie_word_embeddings=True,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
            use_sliding_window=False,
            sliding_window=None,
            max_window_layers=36,
            bos_token_id=151643,
            eos_token_id=151643,
            pad_token_id=151643,
        )
    if shape == "tiny":
        cfg = cfg or ModelConfig(name_or_path="tiny")
        hidden = cfg.tiny_hidden_size
        if hidden % 4:
            raise BackendError(
                f"model.tiny_hidden_size is {hidden}; it must be a multiple of 4 (4 attention heads)"
            )
        return Qwen2Config(
            vocab_size=vocab_size or cfg.tiny_vocab_size,
            hidden_size=hidden,
            intermediate_size=4 * hidden,
            num_hidden_layers=cfg.tiny_layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            hidden_act="silu",
            max_position_embeddings=max(cfg.max_seq_length, 4096),
            initializer_range=cfg.tiny_initializer_range,
            rms_norm_eps=1e-6,
            tie_word_embeddings=True,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
            use_sliding_window=False,
            sliding_window=None,
            max_window_layers=cfg.tiny_layers,
        )
    raise BackendError(f"unknown model shape {shape!r}; choose qwen2.5-3b or tiny")


tiny_config_like = shape_config


def count_params(config: Any) -> int:
    """Parameters of a causal LM built from ``config`` (tied weights counted once), without allocating memory."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def build_tiny(cfg: ModelConfig) -> tuple[Any, Any]:
    """A small random Qwen2ForCausalLM and its tokenizer for ``cfg.name_or_path`` 'tiny' / 'tiny:<seed>'.

    Deterministic: the same cfg gives the same token ids and the same weights (seeded with ``cfg.seed``, or the
    seed in the name). fp32 on CPU; ``save_pretrained`` of both round-trips through ``AutoModelForCausalLM`` /
    ``AutoTokenizer``."""
    import torch
    from transformers import Qwen2ForCausalLM

    seed = _tiny_seed(cfg.name_or_path, cfg.seed) if is_tiny(cfg.name_or_path) else cfg.seed
    tokenizer = build_tiny_tokenizer(cfg)
    config = shape_config("tiny", cfg, vocab_size=len(tokenizer))
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    config.bos_token_id = None
    config.dtype = torch.float32
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
        # pad == EOS here, and Qwen2 zeroes the padding_idx row of the (tied) embedding: the EOS logit would be
        # pinned at 0 and a LoRA (which cannot touch the tied lm_head) could never learn to stop. Give EOS a row.
        emb = model.get_input_embeddings()
        with torch.no_grad():
            emb.weight[tokenizer.pad_token_id].normal_(0.0, config.initializer_range)
        emb.padding_idx = None
    model.to(torch.float32)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    return model, tokenizer


# --------------------------------------------------------------------------------------------------------------
# Loading


def lora_target_modules(spec: LoraSpec, backend: str) -> str | list[str]:
    """PEFT accepts 'all-linear' (it leaves the lm_head out); Unsloth wants an explicit module list."""
    targets = spec.target_modules
    if isinstance(targets, str):
        if targets == "all-linear":
            return list(ALL_LINEAR_MODULES) if backend == "unsloth" else "all-linear"
        return [t.strip() for t in targets.split(",") if t.strip()]
    return list(targets)


def make_lora_config(spec: LoraSpec, backend: str = "cpu") -> Any:
    """The ``peft.LoraConfig`` of ``spec`` (also usable as TRL's ``peft_config``)."""
    from peft import LoraConfig

    return LoraConfig(
        r=spec.r,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=lora_target_modules(spec, backend),
        bias="none",
        task_type="CAUSAL_LM",
    )


def prepare_tokenizer(tokenizer: Any) -> Any:
    """Pad token (Qwen: ``<|endoftext|>``, else eos) and left padding, for batched generation."""
    if getattr(tokenizer, "pad_token", None) is None:
        vocab = tokenizer.get_vocab()
        if EOS_TOKEN in vocab:
            tokenizer.pad_token = EOS_TOKEN
        elif tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        else:
            raise BackendError("the tokenizer has neither a pad nor an eos token; cannot batch prompts")
    tokenizer.padding_side = "left"
    return tokenizer


def _check_adapter(adapter: str) -> None:
    """A local adapter directory must hold adapter_config.json; 'owner/name' may be a Hub id."""
    path = Path(adapter).expanduser()
    if path.exists():
        if not (path.is_dir() and (path / "adapter_config.json").is_file()):
            raise BackendError(
                f"adapter {adapter}: no adapter_config.json there (expected the adapter/ or checkpoint-N/ folder "
                "a training run wrote)"
            )
        return
    looks_like_hub_id = adapter.count("/") == 1 and not adapter.startswith((".", "/", "~"))
    if not looks_like_hub_id:
        raise BackendError(f"adapter not found: {adapter} (no such directory)")


def _check_model_path(name: str) -> None:
    if not Path(name).expanduser().exists() and name.startswith((".", "/", "~")):
        raise BackendError(f"model.name_or_path: {name} does not exist (a local model directory or a Hub id)")


def _hub_error(name: str, exc: Exception) -> BackendError:
    return BackendError(
        f"could not load model {name!r}: {exc}. It is neither a local model directory nor reachable on the "
        "Hugging Face Hub (check the id, log in with `hf auth login` for gated models, or use a local path; "
        "'tiny' needs no download)"
    )


def _count_params(model: Any) -> tuple[int, int]:
    if hasattr(model, "get_nb_trainable_parameters"):
        trainable, total = model.get_nb_trainable_parameters()
        return int(trainable), int(total)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


def _lora_modules(model: Any) -> list[str]:
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:  # pragma: no cover
        return []
    return sorted(
        {name.rsplit(".", 1)[-1] for name, mod in model.named_modules() if isinstance(mod, LoraLayer)}
    )


def _attach_lora(model: Any, cfg: ModelConfig, backend: str, adapter: str | None, for_training: bool) -> Any:
    """PEFT paths (hf, cpu): a fresh LoRA, a saved one to keep training, a saved one for inference, or none."""
    from peft import PeftModel, get_peft_model

    if adapter is not None:
        try:
            model = PeftModel.from_pretrained(model, adapter, is_trainable=for_training)
        except (OSError, ValueError, RuntimeError) as exc:
            raise BackendError(
                f"could not load the adapter {adapter} onto {cfg.name_or_path}: {exc}"
            ) from exc
    elif for_training:
        model = get_peft_model(model, make_lora_config(cfg.lora, backend))
    if not for_training:
        model.eval()
        model.requires_grad_(False)
    return model


def _load_tiny(
    cfg: ModelConfig, backend: str, adapter: str | None, for_training: bool
) -> tuple[Any, Any, dict]:
    import torch

    model, tokenizer = build_tiny(cfg)
    device = "cuda" if backend != "cpu" else "cpu"
    if device == "cuda":
        model.to(device)
    model = _attach_lora(model, cfg, backend, adapter, for_training)
    notes = ["tiny model: random weights, full precision (fp32), no 4-bit"]
    if backend == "unsloth":
        notes.append("Unsloth cannot load an in-memory model; the tiny model runs through PEFT")
    return (
        model,
        tokenizer,
        {
            "dtype": torch.float32,
            "device": device,
            "attn_implementation": model.config._attn_implementation or "sdpa",
            "load_in_4bit": False,
            "fast_inference": False,
            "gradient_checkpointing": False,
            "notes": notes,
        },
    )


def _load_hf_or_cpu(
    cfg: ModelConfig, backend: str, adapter: str | None, for_training: bool, gpu: dict
) -> tuple[Any, Any, dict]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    notes: list[str] = []
    dtype = resolve_dtype(cfg.dtype, backend, gpu)
    attn = resolve_attn_implementation(cfg.attn_implementation, backend, gpu)
    kwargs: dict[str, Any] = {"dtype": dtype, "attn_implementation": attn}
    load_in_4bit = bool(cfg.load_in_4bit and backend == "hf")
    if backend == "hf":
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", gpu.get("index", 0)))}
        device = f"cuda:{kwargs['device_map']['']}"
        if load_in_4bit:
            if not _has_module("bitsandbytes"):
                raise BackendError(
                    f"model.load_in_4bit needs bitsandbytes: {_GPU_EXTRA_HINT} (or set model.load_in_4bit: false)"
                )
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_compute_dtype=dtype,
                bnb_4bit_use_double_quant=True,
            )
    else:
        device = "cpu"
        if cfg.load_in_4bit:
            notes.append("load_in_4bit ignored on the cpu backend (full precision)")
    _check_model_path(cfg.name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(cfg.name_or_path)
        model = AutoModelForCausalLM.from_pretrained(cfg.name_or_path, **kwargs)
    except OSError as exc:
        raise _hub_error(cfg.name_or_path, exc) from exc

    checkpointing = bool(for_training and cfg.gradient_checkpointing and backend == "hf")
    if for_training and backend == "hf":
        if load_in_4bit:
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(
                model,
                use_gradient_checkpointing=checkpointing,
                gradient_checkpointing_kwargs={"use_reentrant": False},
            )
        elif checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()
    model = _attach_lora(model, cfg, backend, adapter, for_training)
    return (
        model,
        tokenizer,
        {
            "dtype": dtype,
            "device": device,
            "attn_implementation": attn,
            "load_in_4bit": load_in_4bit,
            "fast_inference": False,
            "gradient_checkpointing": checkpointing,
            "notes": notes,
        },
    )


def _load_unsloth(
    cfg: ModelConfig, adapter: str | None, for_training: bool, gpu: dict
) -> tuple[Any, Any, dict]:
    import_unsloth()
    from unsloth import FastLanguageModel

    notes: list[str] = []
    dtype = resolve_dtype(cfg.dtype, "unsloth", gpu)
    fast = bool(cfg.fast_inference and _has_module("vllm"))
    if cfg.fast_inference and not fast:
        notes.append("fast_inference requested but vLLM is not installed: generation uses HF generate")
    kwargs: dict[str, Any] = {
        # A LoRA directory loads its base model (from adapter_config.json) with the adapter attached.
        "model_name": adapter or cfg.name_or_path,
        "max_seq_length": cfg.max_seq_length,
        "dtype": dtype,
        "load_in_4bit": cfg.load_in_4bit,
    }
    if fast:
        kwargs.update(
            fast_inference=True, gpu_memory_utilization=cfg.gpu_memory_utilization, max_lora_rank=cfg.lora.r
        )
    _check_model_path(kwargs["model_name"])
    try:
        model, tokenizer = FastLanguageModel.from_pretrained(**kwargs)
    except OSError as exc:
        raise _hub_error(kwargs["model_name"], exc) from exc
    checkpointing = bool(for_training and cfg.gradient_checkpointing)
    if for_training and adapter is None:
        model = FastLanguageModel.get_peft_model(
            model,
            r=cfg.lora.r,
            target_modules=lora_target_modules(cfg.lora, "unsloth"),
            lora_alpha=cfg.lora.alpha,
            lora_dropout=cfg.lora.dropout,
            bias="none",
            use_gradient_checkpointing="unsloth" if checkpointing else False,
            random_state=cfg.seed,
            max_seq_length=cfg.max_seq_length,
        )
    elif for_training:
        # Continue training a saved adapter: make sure its LoRA weights are trainable.
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.requires_grad_(True)
        FastLanguageModel.for_training(model)
    else:
        FastLanguageModel.for_inference(model)
    return (
        model,
        tokenizer,
        {
            "dtype": dtype,
            "device": str(getattr(model, "device", "cuda")),
            "attn_implementation": "unsloth-managed",
            "load_in_4bit": cfg.load_in_4bit,
            "fast_inference": fast,
            "gradient_checkpointing": "unsloth" if checkpointing else False,
            "notes": notes,
        },
    )


def load_model(
    cfg: ModelConfig, *, adapter: str | None = None, for_training: bool = True, verbose: bool = True
) -> Loaded:
    """Load ``cfg.name_or_path`` on the backend ``cfg.backend`` resolves to, with a LoRA adapter.

    - ``for_training=True``: a fresh LoRA (``cfg.lora``), or, with ``adapter``, that saved adapter made trainable
      (to continue training it);
    - ``for_training=False``: with ``adapter``, the base plus that adapter in eval mode; without, the plain base.
    ``info`` records what was actually used (dtype, device, attention, 4-bit, LoRA modules, parameter counts,
    GPU, why this backend)."""
    import torch

    start = time.perf_counter()
    if adapter is not None:
        adapter = str(adapter)
        _check_adapter(adapter)
    backend, reason = pick_backend_with_reason(cfg.backend)
    tiny = is_tiny(cfg.name_or_path)
    if tiny and cfg.backend == "auto":
        backend, reason = "cpu", reason + "; tiny model: cpu backend"
    gpu = gpu_info() if backend != "cpu" else {"available": _cuda_available()}
    logger.info("backend: %s (%s)", backend, reason)

    if tiny:
        peft_backend = "hf" if backend == "unsloth" else backend
        model, tokenizer, used = _load_tiny(cfg, peft_backend, adapter, for_training)
        backend = peft_backend
    elif backend == "unsloth":
        model, tokenizer, used = _load_unsloth(cfg, adapter, for_training, gpu)
    else:
        model, tokenizer, used = _load_hf_or_cpu(cfg, backend, adapter, for_training, gpu)

    tokenizer = prepare_tokenizer(tokenizer)
    gen = getattr(model, "generation_config", None)
    if gen is not None and gen.pad_token_id is None:
        gen.pad_token_id = tokenizer.pad_token_id
    trainable, total = _count_params(model)
    dtype = used.pop("dtype")
    info: dict[str, Any] = {
        "backend": backend,
        "backend_reason": reason,
        "model": cfg.name_or_path,
        "adapter": adapter,
        "for_training": for_training,
        "dtype": str(dtype).replace("torch.", "") if isinstance(dtype, torch.dtype) else str(dtype),
        **used,
        "lora": {
            "r": cfg.lora.r,
            "alpha": cfg.lora.alpha,
            "dropout": cfg.lora.dropout,
            "target_modules": cfg.lora.target_modules,
            "modules": _lora_modules(model),
        },
        "trainable_params": trainable,
        "total_params": total,
        "trainable_pct": round(100.0 * trainable / total, 4) if total else 0.0,
        "gpu_name": gpu.get("name"),
        "gpu_memory_gib": gpu.get("total_memory_gib"),
        "gpu_compute_capability": gpu.get("compute_capability"),
        "load_seconds": round(time.perf_counter() - start, 2),
    }
    if verbose:
        _print_summary(info)
    return Loaded(model=model, tokenizer=tokenizer, backend=backend, info=info)


def _print_summary(info: dict) -> None:
    from rich.console import Console

    lora = info["lora"]
    lora_text = (
        f"LoRA r={lora['r']} alpha={lora['alpha']} on {','.join(lora['modules'])}"
        if lora["modules"]
        else "no LoRA"
    )
    gpu = f" on {info['gpu_name']} ({info['gpu_memory_gib']} GiB)" if info.get("gpu_name") else ""
    console = Console(stderr=True, soft_wrap=True)
    console.print(
        f"[bold]model[/] {info['model']}: backend [bold]{info['backend']}[/] ({info['backend_reason']}){gpu}; "
        f"{info['dtype']}, {'4-bit NF4, ' if info['load_in_4bit'] else ''}attention {info['attn_implementation']}; "
        f"{lora_text}; trainable {info['trainable_params']:,} / {info['total_params']:,} params",
        highlight=False,
    )
    for note in info.get("notes", []):
        console.print(f"  note: {note}", highlight=False)
