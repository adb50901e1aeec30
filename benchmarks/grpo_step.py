"""GRPO step benchmark: the same GRPO steps through our fastest backend and through plain TRL + PEFT + bitsandbytes.

Both sides train a LoRA on the same random-weight model (speed and memory depend on shapes and lengths, not on
weight values), with the same batch, generations per prompt and prompt length, and completions of a fixed length
(``min_new_tokens`` = ``max_new_tokens``) so that the work per step is identical. Each side runs in its own
subprocess (Unsloth patches transformers and TRL on import; peak memory must not mix), one after the other, in
one invocation. Prints seconds per step with generation and update apart, tokens per second, peak GPU memory
and the ratio ours / plain; writes the same as JSON.

    python benchmarks/grpo_step.py --shape qwen2.5-3b --memory-cap-gib 24 --out bench_3b.json     # GPU
    python benchmarks/grpo_step.py --shape tiny --steps 2 --out bench_tiny.json                    # CPU, CI

- ``ours``: ``medrlvr_lite.models.load_model`` with backend ``auto`` (unsloth when installed, vLLM generation
  through its fast_inference when vLLM is too; else transformers + bitsandbytes NF4 + PEFT) and the GRPOConfig
  that ``medrlvr-lite train rlvr`` builds (``medrlvr_lite.rlvr.grpo_args``).
- ``plain``: what TRL's documentation shows: ``AutoModelForCausalLM.from_pretrained`` with a 4-bit
  ``BitsAndBytesConfig``, ``GRPOTrainer(peft_config=LoraConfig(...))``, TRL's defaults otherwise.
On CPU (``--shape tiny`` without a GPU) both sides run as cpu variants (fp32, no 4-bit): this tests the harness,
not the speed. ``--shape qwen2.5-3b`` needs a tokenizer with Qwen2.5's vocabulary (``--tokenizer``, default
``../shared/data/qwen2.5_tokenizer`` beside the checkout); without one the tiny tokenizer is used and the
vocabulary shrinks accordingly (said in the JSON).

Step time = ``on_step_begin`` to ``on_step_end`` (CUDA synchronised); generation = time inside the trainer's
generation call (``_generate``); update = the rest (scoring, log-probs, backward, optimizer).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SHAPES = ("tiny", "qwen2.5-3b")
DEFAULTS = {  # prompt length, completion length per shape
    "tiny": {"prompt_length": 64, "completion_length": 16},
    "qwen2.5-3b": {"prompt_length": 256, "completion_length": 256},
}


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", choices=SHAPES, default="tiny", help="Model shape (random weights).")
    p.add_argument("--steps", type=int, default=3, help="Timed GRPO steps per backend (at least 1).")
    p.add_argument(
        "--warmup-steps", type=int, default=1, help="Untimed steps first (CUDA init, compilation)."
    )
    p.add_argument("--backends", default="ours,plain", help="Comma-separated: ours, plain.")
    p.add_argument("--memory-cap-gib", type=float, default=None, help="Cap the process's GPU memory (GiB).")
    p.add_argument("--num-generations", type=int, default=8, help="Completions per prompt.")
    p.add_argument("--prompts-per-step", type=int, default=2, help="Prompts per step (batch = this x gens).")
    p.add_argument("--prompt-length", type=int, default=None, help="Prompt tokens (shape default).")
    p.add_argument(
        "--completion-length", type=int, default=None, help="Completion tokens, fixed (shape default)."
    )
    p.add_argument("--lora-r", type=int, default=32, help="LoRA rank (alpha = 2 r), all linear layers.")
    p.add_argument("--learning-rate", type=float, default=1e-5)
    p.add_argument("--tokenizer", default=None, help="Tokenizer dir for qwen2.5-3b (Qwen2.5 vocabulary).")
    p.add_argument("--out", default="grpo_step_benchmark.json", help="JSON result path.")
    p.add_argument("--variant", default=None, help=argparse.SUPPRESS)  # internal: run one side
    p.add_argument("--model-dir", default=None, help=argparse.SUPPRESS)
    p.add_argument("--variant-out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for key, value in DEFAULTS[args.shape].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


# --------------------------------------------------------------------------------------------------------------
# Parent: build the random model once, run each side in a subprocess, compare


def _default_tokenizer() -> Path | None:
    cand = REPO.parent / "shared" / "data" / "qwen2.5_tokenizer"
    return cand if (cand / "tokenizer_config.json").is_file() else None


def build_model_dir(args: argparse.Namespace, root: Path) -> dict:
    """Save a random-weight model of ``args.shape`` and its tokenizer under ``root``; returns notes."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from medrlvr_lite.config import ModelConfig
    from medrlvr_lite.models import build_tiny, build_tiny_tokenizer, shape_config

    notes: dict = {}
    if args.shape == "tiny":
        model, tok = build_tiny(ModelConfig(name_or_path="tiny"))
    else:
        tok_dir = args.tokenizer or _default_tokenizer()
        if tok_dir:
            tok = AutoTokenizer.from_pretrained(str(tok_dir))
            config = shape_config("qwen2.5-3b")
            notes["tokenizer"] = str(tok_dir)
        else:
            tok = build_tiny_tokenizer(ModelConfig(name_or_path="tiny"))
            config = shape_config("qwen2.5-3b", vocab_size=len(tok))
            notes["tokenizer"] = f"tiny BPE (no Qwen2.5 tokenizer found): vocab {len(tok)} instead of 151936"
        config.eos_token_id = config.pad_token_id = tok.eos_token_id
        dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
        device = "cuda" if torch.cuda.is_available() else "cpu"
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
    model.save_pretrained(str(root / "model"))
    tok.save_pretrained(str(root / "model"))
    notes["params"] = sum(p.numel() for p in model.parameters())
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the sides run in subprocesses: leave them the card
    return notes


def _summary(side: dict) -> dict:
    steps = side.get("steps", [])
    if not steps:
        return side
    n = len(steps)
    mean = {k: sum(s[k] for s in steps) / n for k in ("step_s", "generation_s", "update_s")}
    comp = sum(s["completion_tokens"] for s in steps)
    total = sum(s["completion_tokens"] + s["prompt_tokens"] for s in steps)
    if side.get("generation_timed_at") is None:  # no generation call found to time: say so, do not guess
        mean["generation_s"] = mean["update_s"] = None
    side.update(
        mean_step_s=mean["step_s"],
        mean_generation_s=mean["generation_s"],
        mean_update_s=mean["update_s"],
        generation_tokens_per_s=(
            comp / max(1e-9, sum(s["generation_s"] for s in steps))
            if mean["generation_s"] is not None
            else None
        ),
        tokens_per_s=total / max(1e-9, sum(s["step_s"] for s in steps)),
    )
    return side


def _ratio(a, b):
    return a / b if a is not None and b else None


def compare(result: dict) -> dict:
    ours, plain = result["backends"].get("ours"), result["backends"].get("plain")
    if not (ours and plain and ours.get("ok") and plain.get("ok")):
        return {}
    return {
        "step": _ratio(ours["mean_step_s"], plain["mean_step_s"]),
        "generation": _ratio(ours["mean_generation_s"], plain["mean_generation_s"]),
        "update": _ratio(ours["mean_update_s"], plain["mean_update_s"]),
        "peak_memory": _ratio(ours.get("peak_memory_gib"), plain.get("peak_memory_gib")),
    }


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"GRPO step benchmark: shape {result['shape']} on {result['device']}")
    for col in ("backend", "s/step", "gen s", "update s", "gen tok/s", "tok/s", "peak GiB", "note"):
        table.add_column(col)
    for name, side in result["backends"].items():
        if not side.get("ok"):
            table.add_row(name, "-", "-", "-", "-", "-", "-", f"failed: {side.get('error', '')[:60]}")
            continue
        table.add_row(
            f"{name} ({side.get('backend')})",
            _fmt(side.get("mean_step_s"), ".3f"),
            _fmt(side.get("mean_generation_s"), ".3f"),
            _fmt(side.get("mean_update_s"), ".3f"),
            _fmt(side.get("generation_tokens_per_s"), ".0f"),
            _fmt(side.get("tokens_per_s"), ".0f"),
            _fmt(side.get("peak_memory_gib"), ".2f"),
            side.get("note", ""),
        )
    Console().print(table)
    r = result.get("ratio") or {}
    if r:
        Console().print(
            "ours / plain: "
            + " ".join(f"{k} {v:.2f}" for k, v in r.items() if v is not None)
            + "  (target: step <= 0.5; the 3B config's peak <= 16 GiB)"
        )


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.variant:
        return run_variant(args)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = sorted(set(backends) - {"ours", "plain"})
    if unknown:
        print(f"error: --backends: unknown {', '.join(unknown)} (choose ours, plain)", file=sys.stderr)
        return 2
    import torch

    if args.shape != "tiny" and not torch.cuda.is_available():
        print(f"error: --shape {args.shape} needs a CUDA GPU (use --shape tiny on CPU)", file=sys.stderr)
        return 2
    result: dict = {
        "shape": args.shape,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "memory_cap_gib": args.memory_cap_gib,
        "settings": {
            k: getattr(args, k)
            for k in (
                "steps",
                "warmup_steps",
                "num_generations",
                "prompts_per_step",
                "prompt_length",
                "completion_length",
                "lora_r",
                "learning_rate",
            )
        },  # fmt: skip
        "backends": {},
    }
    with tempfile.TemporaryDirectory(prefix="grpo_bench_") as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        result["model"] = build_model_dir(args, root)
        result["model"]["build_s"] = round(time.perf_counter() - t, 2)
        for name in backends:
            out = root / f"{name}.json"
            cmd = [
                sys.executable,
                str(Path(__file__).resolve()),
                *(argv if argv is not None else sys.argv[1:]),
            ]
            cmd += ["--variant", name, "--model-dir", str(root / "model"), "--variant-out", str(out)]
            proc = subprocess.run(cmd, cwd=str(REPO), capture_output=True, text=True)
            if proc.returncode == 0 and out.is_file():
                result["backends"][name] = _summary(json.loads(out.read_text()))
            else:
                tail = (proc.stderr or proc.stdout)[-2000:]
                result["backends"][name] = {"ok": False, "error": tail}
                print(f"{name} failed (exit {proc.returncode}):\n{tail}", file=sys.stderr)
    result["ratio"] = compare(result)
    from medrlvr_lite.rlvr import _versions

    result["versions"] = _versions()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=str) + "\n")
    print_table(result)
    print(f"wrote {args.out}")
    return 0 if all(b.get("ok") for b in result["backends"].values()) else 1


# --------------------------------------------------------------------------------------------------------------
# Child: one side


def _fixed_prompt(tokenizer, length: int) -> str:
    """A prompt of exactly ``length`` tokens (a word that is one token, repeated)."""
    for word in (" the", " a", " of", " and", " is", " patient", " A"):
        text = word * length
        if len(tokenizer(text=text)["input_ids"]) == length:
            return text
    ids = [i for i in range(len(tokenizer)) if i not in set(tokenizer.all_special_ids)][:1] * length
    return tokenizer.decode(ids)


def run_variant(args: argparse.Namespace) -> int:
    import torch

    if args.variant == "ours":
        from medrlvr_lite.models import import_unsloth, pick_backend

        backend = pick_backend("auto")
        if backend == "unsloth":
            import_unsloth()  # before trl
    else:
        backend = "hf" if torch.cuda.is_available() else "cpu"
    cuda = torch.cuda.is_available()
    if cuda and args.memory_cap_gib:
        total = torch.cuda.get_device_properties(0).total_memory / 2**30
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.memory_cap_gib / total), 0)
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from medrlvr_lite.verifier import verify

    model_dir = args.model_dir
    gens, length = args.num_generations, args.completion_length
    batch = args.prompts_per_step * gens
    max_steps = args.warmup_steps + args.steps
    out: dict = {"ok": False, "backend": backend, "variant": args.variant}
    t0 = time.perf_counter()
    if args.variant == "ours":
        from medrlvr_lite.config import load_config
        from medrlvr_lite.models import load_model
        from medrlvr_lite.rlvr import grpo_args

        cfg = load_config(
            None,
            [
                f"model.name_or_path={model_dir}",
                "model.backend=auto",
                f"model.lora.r={args.lora_r}",
                f"model.lora.alpha={2 * args.lora_r}",
                f"model.max_seq_length={args.prompt_length + length + 8}",
                f"rlvr.num_generations={gens}",
                f"rlvr.per_device_train_batch_size={batch}",
                "rlvr.gradient_accumulation_steps=1",
                f"rlvr.max_completion_length={length}",
                f"rlvr.learning_rate={args.learning_rate}",
                f"rlvr.max_steps={max_steps}",
                "rlvr.save_steps=100000",
            ],
        )
        if cuda and args.memory_cap_gib:  # vLLM sizes its cache from the whole card: keep it inside the cap
            total = torch.cuda.get_device_properties(0).total_memory / 2**30
            cfg.model.gpu_memory_utilization = round(0.5 * args.memory_cap_gib / total, 3)
        loaded = load_model(cfg.model, for_training=True, verbose=False)
        model, tok, backend = loaded.model, loaded.tokenizer, loaded.backend
        out.update(backend=backend, info={k: v for k, v in loaded.info.items() if k != "lora"})
        with tempfile.TemporaryDirectory() as tmp:
            targs = grpo_args(cfg, Path(tmp), backend, loaded.info)
        use_vllm = bool(targs.use_vllm)
        # vLLM: TRL already sets max_tokens = max_completion_length; HF generate: both ends fixed
        targs.generation_kwargs = (
            {"min_tokens": length} if use_vllm else {"min_new_tokens": length, "max_new_tokens": length}
        )
        targs.save_strategy = "no"
        peft_config = None
    else:
        from peft import LoraConfig
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model_dir)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        kwargs: dict = {}
        bf16 = cuda and torch.cuda.is_bf16_supported()
        if cuda:
            from transformers import BitsAndBytesConfig

            dtype = torch.bfloat16 if bf16 else torch.float16
            kwargs = {
                "dtype": dtype,
                "device_map": {"": 0},
                "quantization_config": BitsAndBytesConfig(
                    load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype
                ),
            }
        model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
        peft_config = LoraConfig(
            r=args.lora_r, lora_alpha=2 * args.lora_r, target_modules="all-linear", task_type="CAUSAL_LM"
        )
        targs = GRPOConfig(
            output_dir=tempfile.mkdtemp(),
            num_generations=gens,
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=1,
            max_completion_length=length,
            learning_rate=args.learning_rate,
            max_steps=max_steps,
            logging_steps=1,
            save_strategy="no",
            report_to=[],
            disable_tqdm=True,
            bf16=bf16,
            fp16=cuda and not bf16,
            use_cpu=not cuda,
            generation_kwargs={"min_new_tokens": length, "max_new_tokens": length},
        )
        out["note"] = "" if cuda else "cpu variant: fp32, no bitsandbytes"
    out["load_s"] = round(time.perf_counter() - t0, 2)
    if not cuda:
        torch.set_num_threads(1)

    prompt = _fixed_prompt(tok, args.prompt_length)
    n_rows = batch * max_steps
    data = Dataset.from_list([{"prompt": prompt, "gold": "A"} for _ in range(n_rows)])

    def reward(prompts, completions, gold, **kwargs):
        return [
            verify(c if isinstance(c, str) else str(c), g).reward
            for c, g in zip(completions, gold, strict=True)
        ]

    def sync():
        if cuda:
            torch.cuda.synchronize()

    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[reward],
        args=targs,
        train_dataset=data,
        processing_class=tok,
        peft_config=peft_config,
    )
    gen_time = {"s": 0.0}
    # Unsloth's trainer is generated from TRL's: look for the generation call by the names TRL has used
    name = next((n for n in ("_generate", "_generate_single_turn") if hasattr(trainer, n)), None)
    out["generation_timed_at"] = name
    if name is not None:
        original = getattr(trainer, name)

        def timed(*a, **k):
            sync()
            t = time.perf_counter()
            try:
                return original(*a, **k)
            finally:
                sync()
                gen_time["s"] += time.perf_counter() - t

        setattr(trainer, name, timed)
    steps: list[dict] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            sync()
            gen_time["s"] = 0.0
            self.t = time.perf_counter()
            self.tokens = state.num_input_tokens_seen

        def on_step_end(self, a, state, control, **kw):
            sync()
            step_s = time.perf_counter() - self.t
            seen = state.num_input_tokens_seen - self.tokens
            if state.global_step > args.warmup_steps:
                steps.append(
                    {
                        "step_s": step_s,
                        "generation_s": gen_time["s"],
                        "update_s": step_s - gen_time["s"],
                        "completion_tokens": batch * length,
                        "prompt_tokens": max(0, seen - batch * length),
                    }
                )

    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(Timer())
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    out.update(ok=True, steps=steps, use_vllm=bool(getattr(trainer.args, "use_vllm", False)))
    out["gradient_checkpointing"] = bool(trainer.args.gradient_checkpointing)
    if cuda:
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        out["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
        free, total = torch.cuda.mem_get_info()
        out["device_used_gib_at_end"] = (total - free) / 2**30  # includes vLLM's pool, outside torch's count
    else:
        out["peak_memory_gib"] = None
    Path(args.variant_out).write_text(json.dumps(out, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
