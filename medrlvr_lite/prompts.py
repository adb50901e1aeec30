"""Prompts: one place that turns an MCQ record into the text a model sees.

Three styles, all from the paper (Med-RLVR, arXiv 2502.19655):

- ``r1``: the R1-Zero template used for RLVR training and its evaluation. Plain text for a base model; the
  assistant turn is *not* forced to start with ``<think>``.
- ``direct``: the base model's direct-answer baseline (and the SFT target style): the letter right away.
- ``cot``: the base model's chain-of-thought baseline: think step by step, then "the answer is X".

``chat=True`` renders the same instruction through the tokenizer's chat template (instruct models); the
default is plain text, as the paper used a base model.

    from medrlvr_lite.prompts import render_prompt
    text = render_prompt(record, style="r1")
"""

from __future__ import annotations

from typing import Any, Literal

PromptStyle = Literal["r1", "cot", "direct"]
STYLES: tuple[str, ...] = ("r1", "cot", "direct")

R1_SYSTEM = (
    "A conversation between User and Assistant. The user asks a question, and the assistant solves it. The "
    "assistant first thinks about the reasoning process in the mind and then provides the user with the answer. "
    "The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags, "
    "respectively, i.e., <think> reasoning process here </think><answer> answer here </answer>."
)
R1_TEMPLATE = R1_SYSTEM + "\nUser: {question}\nAssistant:"

DIRECT_INSTRUCTION = (
    "Answer the following multiple-choice question with the letter of the correct option only."
)
DIRECT_TEMPLATE = DIRECT_INSTRUCTION + "\n\nQuestion: {question}\nAnswer:"

COT_INSTRUCTION = (
    "Answer the following multiple-choice question. Think step by step, then finish with "
    '"Therefore, the answer is X." where X is the letter of the correct option.'
)
COT_TEMPLATE = COT_INSTRUCTION + "\n\nQuestion: {question}\nAnswer: Let's think step by step."

_TEMPLATES = {"r1": R1_TEMPLATE, "direct": DIRECT_TEMPLATE, "cot": COT_TEMPLATE}
_CHAT_INSTRUCTIONS = {"r1": R1_SYSTEM, "direct": DIRECT_INSTRUCTION, "cot": COT_INSTRUCTION}


def format_question(record: Any) -> str:
    """The question followed by its lettered options, one per line: ``A. text``."""
    lines = [record.question.strip()]
    lines += [f"{letter}. {text}" for letter, text in record.options.items()]
    return "\n".join(lines)


def render_prompt(record: Any, style: str = "r1", tokenizer: Any = None, chat: bool = False) -> str:
    """Render ``record`` in ``style`` (r1 | cot | direct); ``chat=True`` uses ``tokenizer``'s chat template."""
    if style not in _TEMPLATES:
        raise ValueError(f"unknown prompt style {style!r}; choose one of {', '.join(STYLES)}")
    question = format_question(record)
    if not chat:
        return _TEMPLATES[style].format(question=question)
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "chat rendering needs a tokenizer with a chat template (set model.chat_template: false)"
        )
    messages = [
        {"role": "system", "content": _CHAT_INSTRUCTIONS[style]},
        {"role": "user", "content": question},
    ]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def sft_target(record: Any, target: str = "answer") -> str:
    """The supervised completion for ``record`` (paper: the answer only, no reasoning).

    ``answer``: `` B. option text``; ``letter``: `` B``. Leading space because prompts end with ``Answer:``.
    """
    if target == "letter":
        return f" {record.gold}"
    if target == "answer":
        return f" {record.gold}. {record.options[record.gold]}"
    raise ValueError(f"unknown SFT target {target!r}; choose answer or letter")
