"""The verifier: every rule of the issue as a table of cases, plus property-based tests."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medrlvr_lite.config import RewardConfig
from medrlvr_lite.verifier import extract_letter, verify

OPTS = {"A": "Gentamicin", "B": "Ketotifen eye drops", "C": "Ceftriaxone", "D": "Trimethoprim"}
L = list(OPTS)


def v(completion, gold="B", **kw):
    return verify(completion, gold, L, OPTS, **kw)


# --- format -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "completion, ok",
    [
        ("<think>reason</think><answer>B</answer>", True),
        ("  <think> reason </think>\n\n<answer> B </answer>  \n", True),  # whitespace around and between tags
        ("<think>reason</think><answer>B</answer><|endoftext|>", False),  # text after </answer>
        ("<think>reason</think><answer>B</answer> and more", False),
        ("<think>reason</think> so <answer>B</answer>", False),  # text between the parts
        ("<think>reason<answer>B</answer>", False),  # no </think>
        ("<think>reason</think>", False),  # no answer
        ("<answer>B</answer>", False),  # no think
        ("<answer>B</answer><think>x</think>", False),  # wrong order
        ("<think>a</think><think>b</think><answer>B</answer>", False),  # two thinks
        ("<think>a</think><answer>B</answer><answer>C</answer>", False),  # two answers
        ("<think>a <answer>B</answer></think><answer>B</answer>", False),  # nested answer
        ("B", False),
        ("", False),
        (
            "Let's go step by step. <think>x</think><answer>B</answer>",
            True,
        ),  # text before think: paper allows
    ],
)
def test_format_rules(completion, ok):
    assert v(completion).format_ok is ok


def test_text_before_think_flagged_and_strict_mode_rejects_it():
    c = "Let's go through each option step by step ... the most likely cause is <think>B</think><answer>B</answer>"
    paper, strict = v(c), v(c, mode="strict")
    assert paper.format_ok and paper.text_before_think and paper.reward == 1.0
    assert not strict.format_ok and strict.reward == -1.0
    assert not v("<think>x</think><answer>B</answer>").text_before_think


# --- letters ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        "B",
        "b",
        "(B)",
        "B.",
        "B)",
        "B) Ketotifen eye drops",
        "B. Ketotifen eye drops",
        "B: whatever text",
        "The answer is B",
        "The answer is B.",
        "the answer is (B)",
        "Answer: B",
        "Final answer: B",
        "Ketotifen eye drops",
        "ketotifen eye-drops!",
        "  KETOTIFEN EYE DROPS.  ",
        "Option B",
    ],
)
def test_answer_forms_give_b(answer):
    verdict = v(f"<think>r</think><answer>{answer}</answer>")
    assert verdict.letter == "B", answer
    assert verdict.correct and verdict.reward == 1.0


@pytest.mark.parametrize("answer", ["A or B", "A, B, C, D", "A and C", "B/C", "(A) or (B)", "B. Ceftriaxone"])
def test_hedging_gives_no_letter(answer):
    verdict = v(f"<think>r</think><answer>{answer}</answer>")
    assert verdict.letter is None and verdict.multiple_letters
    assert verdict.format_ok and verdict.reward == 0.0 and not verdict.correct


def test_same_letter_twice_is_not_hedging():
    assert v("<think>r</think><answer>B, B</answer>").letter == "B"


@pytest.mark.parametrize("answer", ["F", "J", "(E)", "The answer is G"])
def test_letter_outside_the_options_gives_none(answer):
    verdict = v(f"<think>r</think><answer>{answer}</answer>")
    assert verdict.letter is None and verdict.reward == 0.0


@pytest.mark.parametrize(
    "answer", ["", "  ", "I am not sure", "none of these", "the answer is a bit unclear"]
)
def test_no_letter(answer):
    verdict = v(f"<think>r</think><answer>{answer}</answer>")
    assert verdict.letter is None and verdict.format_ok and verdict.reward == 0.0


def test_extract_letter_for_direct_prompts():
    assert extract_letter(" C", L, OPTS) == "C"
    assert extract_letter(" C. Ceftriaxone", L, OPTS) == "C"
    assert extract_letter("Ceftriaxone", L, OPTS) == "C"
    assert extract_letter("A or C", L, OPTS) is None
    assert extract_letter("E", L, OPTS) is None
    assert extract_letter("E", list("ABCDE")) == "E"
    assert extract_letter("yes", options=["yes", "no", "maybe"]) == "A"


# --- rewards ------------------------------------------------------------------------------------------------


def test_reward_values_paper_and_configurable():
    assert v("<think>r</think><answer>B</answer>").reward == 1.0
    assert v("<think>r</think><answer>C</answer>").reward == 0.0
    assert v("no tags at all").reward == -1.0
    custom = RewardConfig(correct=2.0, wrong=-0.5, format_error=-3.0)
    assert v("<think>r</think><answer>B</answer>", rewards=custom).reward == 2.0
    assert v("<think>r</think><answer>A</answer>", rewards=custom).reward == -0.5
    assert v("<answer>B</answer>", rewards=custom).reward == -3.0


def test_invalid_format_is_never_correct_even_with_the_gold_letter():
    verdict = v("<think>r</think><answer>B</answer> trailing")
    assert verdict.letter == "B" and not verdict.correct and verdict.reward == -1.0


# --- flags --------------------------------------------------------------------------------------------------


def test_answer_in_think_the_papers_direct_answer_hacker():
    c = "<think> The best treatment here is ketotifen eye drops. </think><answer> B </answer>"
    verdict = v(c)
    assert verdict.answer_in_think and verdict.correct
    assert v("<think>The answer is B.</think><answer>B</answer>").answer_in_think
    assert v("<think>B</think><answer>B</answer>").answer_in_think


def test_real_reasoning_is_not_answer_in_think():
    c = (
        "<think>Itching and watery eyes after exposure to pollen point to allergic conjunctivitis. "
        "A mast cell stabiliser with antihistamine action treats it topically; antibiotics do not help. "
        "So the answer is B.</think><answer>B</answer>"
    )
    verdict = v(c)
    assert not verdict.answer_in_think and verdict.correct


def test_empty_think_and_think_chars():
    e = v("<think>   </think><answer>B</answer>")
    assert e.empty_think and e.think_chars == 0 and e.format_ok
    full = v("<think> abc </think><answer>B</answer>")
    assert not full.empty_think and full.think_chars == 3
    assert full.completion_chars == len("<think> abc </think><answer>B</answer>")


def test_options_as_list_and_record_letters():
    verdict = verify("<think>x</think><answer>Ceftriaxone</answer>", "C", None, list(OPTS.values()))
    assert verdict.letter == "C" and verdict.correct


def test_ten_options_up_to_j():
    opts = {c: f"option {c.lower()}x" for c in "ABCDEFGHIJ"}
    verdict = verify("<think>x</think><answer>(J)</answer>", "J", list(opts), opts)
    assert verdict.correct


# --- robustness ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "completion",
    [
        "<think>" * 1000,
        "</answer><answer>" * 500,
        "<think>\u202e\U0001f600 ünïcödé</think><answer>\x00B\ufeff</answer>",
        "<think>" + "x" * 1_000_000 + "</think><answer>B</answer>",
        "<answer>" + "A or B " * 100_000 + "</answer>",
        None,
        12345,
    ],
)
def test_never_raises_on_hostile_strings(completion):
    verdict = v(completion)
    assert verdict.reward in (-1.0, 0.0, 1.0)


def test_megabyte_completion_is_scored():
    big = "<think>" + "x" * 1_000_000 + "</think><answer>B</answer>"
    verdict = v(big)
    assert verdict.format_ok and verdict.correct and verdict.think_chars == 1_000_000


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_property_never_raises(text):
    verdict = verify(text, "B", L, OPTS)
    assert verdict.reward in (-1.0, 0.0, 1.0)
    assert verdict.correct == (verdict.reward == 1.0)
    json.dumps(verdict.to_dict())


@settings(max_examples=300, deadline=None)
@given(
    think=st.text(alphabet=st.characters(blacklist_characters="<>"), max_size=200),
    letter=st.sampled_from(list("ABCDEFGHIJ")),
    gold=st.sampled_from(list("ABCD")),
)
def test_property_plus_one_exactly_when_letter_is_gold(think, letter, gold):
    verdict = verify(f"<think>{think}</think><answer>{letter}</answer>", gold, L, OPTS)
    assert verdict.format_ok
    assert (verdict.reward == 1.0) == (letter == gold)
    assert verdict.reward in (0.0, 1.0)
