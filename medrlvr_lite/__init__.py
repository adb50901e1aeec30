"""medrlvr-lite: the Med-RLVR study (RLVR with GRPO vs SFT on medical multiple-choice QA) on one GPU."""

__version__ = "0.1.0"
