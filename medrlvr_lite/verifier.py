"""The multiple-choice verifier: one module for training rewards and for evaluation, so that what is
rewarded is exactly what is scored.

``verify(completion, gold, letters, options)`` returns a :class:`Verdict`: whether the format is valid, the
option letter extracted (or None), whether it is correct, the reward, and flags for the hacks the paper saw.

Format (mode ``paper``, the default): exactly one ``<think>...</think>`` followed by exactly one
``<answer>...</answer>``; whitespace is allowed between and around the tags; nothing but whitespace may follow
``</answer>`` (generation usually stops right there). Text before ``<think>`` is allowed (the paper's stage-5
"step-by-step exploit" was rewarded, so its check allowed it) but flagged ``text_before_think``; mode
``strict`` rejects it.

Letter: the answer content reduced to one option letter. ``B``, ``b``, ``(B)``, ``B.``, ``B) text``,
``B. option text``, ``The answer is B`` and the exact text of an option (case and punctuation ignored) all give
B. Two or more different letters (``A or B``, ``A, B, C, D``) give no letter and set ``multiple_letters``:
hedging is never rewarded. A letter that is not among the record's options gives no letter.

Reward: ``format_error`` (-1.0) for an invalid format; else ``correct`` (+1.0) when the letter is the gold one,
``wrong`` (0.0) otherwise.

Flags: ``text_before_think``; ``answer_in_think`` (the think part is little more than the answer itself: it
states an option letter or an option's full text as the answer, with fewer than ``ANSWER_IN_THINK_RESIDUAL``
characters of anything else); ``empty_think``; ``think_chars``; ``multiple_letters``; ``completion_chars``.

The verifier never raises on any string (unicode, megabytes, unbalanced tags): it only uses ``str.find`` and
regular expressions without nested quantifiers, on bounded slices.

    medrlvr-lite score FILE.jsonl   # lines {"completion": ..., "answer": "B", "options": [...] (optional)}
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

LETTERS = "ABCDEFGHIJ"
THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE = "<think>", "</think>", "<answer>", "</answer>"
TAGS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)
#: answer content longer than this is not read for a letter (a letter answer is short).
MAX_ANSWER_CHARS = 4000
#: a think part with fewer characters than this besides the stated answer is "answer in think".
ANSWER_IN_THINK_RESIDUAL = 60

_PUNCT = str.maketrans({c: " " for c in string.punctuation})
_PREFIX = re.compile(
    r"^(?:so\s*,?\s*|thus\s*,?\s*|therefore\s*,?\s*)?(?:the\s+)?(?:final\s+|correct\s+|best\s+|right\s+)?"
    r"(?:answer|option|choice)(?:\s+is|\s*:|\s*-|\s*=)?\s*",
    re.IGNORECASE,
)
_LETTER_ONLY = re.compile(r"\(?\s*([A-Ja-j])\s*\)?\s*[.):,;!]?")
_LETTER_PUNCT_REST = re.compile(r"\(?([A-Ja-j])(?:\)|\)?[.:])\s*(.*)", re.DOTALL)
_LETTER_SPACE_REST = re.compile(r"\(?([A-J])\)?\s+(.*)", re.DOTALL)
_LIST_SPLIT = re.compile(r"\s*(?:,|;|/|&|\band\b|\bor\b|\s)\s*", re.IGNORECASE)
_STATED = re.compile(
    r"(?:answer|option|choice)\s*(?:is|:|would\s+be|must\s+be|should\s+be)?\s*\(?((?-i:[A-J]))\)?(?![A-Za-z])",
    re.IGNORECASE,
)


@dataclass
class Verdict:
    """What the verifier says of one completion."""

    format_ok: bool
    letter: str | None
    correct: bool
    reward: float
    text_before_think: bool = False
    answer_in_think: bool = False
    empty_think: bool = False
    think_chars: int = 0
    multiple_letters: bool = False
    completion_chars: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _norm(text: str) -> str:
    return " ".join(text.lower().translate(_PUNCT).split())


def _letters_and_options(
    letters: Sequence[str] | None, options: Mapping[str, str] | Sequence[str] | None
) -> tuple[list[str], dict[str, str]]:
    opts: dict[str, str] = {}
    if isinstance(options, Mapping):
        opts = {str(k).strip().upper(): str(v) for k, v in options.items()}
    elif options is not None:
        opts = {LETTERS[i]: str(v) for i, v in enumerate(list(options)[: len(LETTERS)])}
    if letters is None:
        letters = list(opts) if opts else list(LETTERS)
    return [str(x).strip().upper() for x in letters], opts


def _letter_list(text: str) -> list[str] | None:
    """``A or B`` / ``A, B, C, D`` / ``(A) and (C)`` -> the letters; None when it is not a bare list."""
    parts = [p for p in _LIST_SPLIT.split(text.strip().rstrip(".")) if p]
    if len(parts) < 2:
        return None
    found = []
    for part in parts:
        m = _LETTER_ONLY.fullmatch(part)
        if not m or not part.strip("()").strip(".):").isupper():
            return None
        found.append(m.group(1).upper())
    return found


def _extract(text: str, letters: list[str], options: dict[str, str]) -> tuple[str | None, bool]:
    """(letter or None, multiple_letters) for an answer text."""
    s = text.strip()
    if not s or len(s) > MAX_ANSWER_CHARS:
        return None, False
    by_text = {}
    for letter, opt in options.items():
        key = _norm(opt)
        if key:
            by_text.setdefault(key, set()).add(letter)

    def text_letter(candidate: str) -> str | None:
        hit = by_text.get(_norm(candidate))
        return next(iter(hit)) if hit and len(hit) == 1 else None

    # 1. the exact text of one option
    hit = text_letter(s)
    if hit:
        return hit, False
    # 2. strip "the answer is" / "answer:" / "option" prefixes
    body, stripped = s, False
    for _ in range(3):
        new = _PREFIX.sub("", body, count=1).strip()
        if new == body:
            break
        body, stripped = new, True
    if not body:
        return None, False
    hit = text_letter(body)
    if hit:
        return hit, False
    # 3. a lone letter: B, b, (B), B.
    m = _LETTER_ONLY.fullmatch(body)
    if m:
        return m.group(1).upper(), False
    # 4. a list of letters: hedging
    many = _letter_list(body)
    if many is not None:
        if len(set(many)) > 1:
            return None, True
        return many[0], False
    # 5. a letter then text: "B) text", "B. option text", "B: text" (and "B text" after an answer prefix)
    m = _LETTER_PUNCT_REST.fullmatch(body) or (_LETTER_SPACE_REST.fullmatch(body) if stripped else None)
    if m:
        letter, rest = m.group(1).upper(), m.group(2).strip()
        other = text_letter(rest) if rest else None
        if other and other != letter:
            return None, True
        more = _letter_list(rest) if rest else None
        if more and any(x != letter for x in more):
            return None, True
        return letter, False
    # 6. "... the answer is C." somewhere in a short sentence
    stated = {x.upper() for x in _STATED.findall(s)}
    if len(stated) == 1:
        return stated.pop(), False
    if len(stated) > 1:
        return None, True
    return None, False


def extract_letter(
    text: str,
    letters: Sequence[str] | None = None,
    options: Mapping[str, str] | Sequence[str] | None = None,
) -> str | None:
    """The one option letter ``text`` gives (the rules in the module docstring), or None."""
    valid, opts = _letters_and_options(letters, options)
    try:
        letter, _ = _extract(text if isinstance(text, str) else str(text), valid, opts)
    except Exception:  # noqa: BLE001 - the verifier never raises on user text
        return None
    return letter if letter in valid else None


def _answer_in_think(think: str, letter: str | None, options: dict[str, str]) -> bool:
    if not think:
        return False
    if len(think) > 4 * ANSWER_IN_THINK_RESIDUAL + sum(len(o) for o in options.values()):
        return False  # a long think part is reasoning, whatever it concludes
    if _LETTER_ONLY.fullmatch(think):
        return True
    raw, stated = think, False
    if _STATED.search(raw):
        raw, stated = _STATED.sub(" ", raw), True
    residual = _norm(raw)
    candidates = [options[letter]] if letter and letter in options else list(options.values())
    for opt in sorted(candidates, key=len, reverse=True):
        key = _norm(opt)
        if key and key in residual:
            residual, stated = residual.replace(key, " "), True
            break
    return stated and len(residual.strip()) < ANSWER_IN_THINK_RESIDUAL


def verify(
    completion: Any,
    gold: str | None,
    letters: Sequence[str] | None = None,
    options: Mapping[str, str] | Sequence[str] | None = None,
    mode: str = "paper",
    rewards: Any = None,
) -> Verdict:
    """Score one completion against the gold letter. ``rewards`` has ``correct``, ``wrong``, ``format_error``."""
    r_correct = getattr(rewards, "correct", 1.0)
    r_wrong = getattr(rewards, "wrong", 0.0)
    r_format = getattr(rewards, "format_error", -1.0)
    text = completion if isinstance(completion, str) else ("" if completion is None else str(completion))
    valid, opts = _letters_and_options(letters, options)
    gold_letter = gold.strip().upper() if isinstance(gold, str) and gold.strip() else None
    verdict = Verdict(
        format_ok=False, letter=None, correct=False, reward=r_format, completion_chars=len(text)
    )
    try:
        counts = [text.count(tag) for tag in TAGS]
        t_open, t_close = text.find(THINK_OPEN), text.find(THINK_CLOSE)
        a_open, a_close = text.find(ANSWER_OPEN), text.find(ANSWER_CLOSE)
        if a_open >= 0 and a_close > a_open:
            answer = text[a_open + len(ANSWER_OPEN) : a_close]
            letter, many = _extract(answer, valid, opts)
            verdict.letter = letter if letter in valid else None
            verdict.multiple_letters = many
        if 0 <= t_open < t_close:
            think = text[t_open + len(THINK_OPEN) : t_close].strip()
            verdict.think_chars = len(think)
            verdict.empty_think = not think.strip(string.punctuation + " \n\t")
            verdict.text_before_think = bool(text[:t_open].strip())
            verdict.answer_in_think = _answer_in_think(think, verdict.letter, opts)
        ordered = all(c == 1 for c in counts) and t_open < t_close < a_open < a_close
        format_ok = (
            ordered
            and not text[t_close + len(THINK_CLOSE) : a_open].strip()
            and not text[a_close + len(ANSWER_CLOSE) :].strip()
            and not (mode == "strict" and verdict.text_before_think)
        )
    except Exception:  # noqa: BLE001 - the verifier never raises on user text
        return Verdict(
            format_ok=False, letter=None, correct=False, reward=r_format, completion_chars=len(text)
        )
    verdict.format_ok = format_ok
    verdict.correct = bool(format_ok and verdict.letter is not None and verdict.letter == gold_letter)
    verdict.reward = float(r_format if not format_ok else (r_correct if verdict.correct else r_wrong))
    return verdict


def verify_record(completion: str, record: Any, mode: str = "paper", rewards: Any = None) -> Verdict:
    """``verify`` with the gold letter, letters and option texts taken from an MCQ record."""
    return verify(completion, record.gold, list(record.options), record.options, mode=mode, rewards=rewards)


def score_lines(rows: Sequence[Mapping[str, Any]], mode: str = "paper", rewards: Any = None) -> list[dict]:
    """Re-score saved predictions: each row has ``completion``, ``answer`` and optional ``options``."""
    out = []
    for row in rows:
        options = row.get("options")
        verdict = verify(
            row.get("completion", ""), row.get("answer"), None, options, mode=mode, rewards=rewards
        )
        out.append(verdict.to_dict())
    return out
