"""Data stage: every medical multiple-choice source read into one record, ``MCQRecord``.

A record is ``id, question, options (ordered letter -> text, A.. up to J), gold letter, source, split, subject``.
Every later stage (prompts, verifier, RLVR, SFT, evaluation) sees only records, never a source's own format.

    from medrlvr_lite.data import load_records
    records = load_records("medqa:test")                                    # from the Hugging Face Hub
    records = load_records("medqa:dev@data/medqa/dev.jsonl")                # from a local file
    records = load_records("mmlu_pro:health@test-00000-of-00001.parquet")
    records = load_records("jsonl@my_questions.jsonl")                      # your own questions

    medrlvr-lite data list                       # the datasets below, their Hub ids and splits
    medrlvr-lite data inspect medqa:test@test.jsonl --none-of-the-above
    medrlvr-lite data export smoke out.jsonl --shuffle-seed 1

Spec syntax: ``NAME[:SUBSET][@PATH]``
    NAME    one of ``DATASETS`` (``medqa``, ``medqa5``, ``mmlu_pro``, ``medmcqa``, ``pubmedqa``, ``jsonl``, ``smoke``).
    SUBSET  the split (``train`` / ``dev`` / ``test``; ``validation`` is an alias of ``dev``), except for
            ``mmlu_pro`` where it is the category (default ``health``; ``all`` keeps every category) and
            ``pubmedqa`` (``test`` = the official 500 PMIDs, ``train`` = the other 500, ``all`` = the 1,000).
    PATH    a local ``.jsonl`` / ``.json`` / ``.csv`` / ``.parquet`` file, or a folder holding ``<split>.jsonl``
            (or ``<split>.json``, ``<split>-*.parquet``...; for ``pubmedqa`` ``ori_pqal.json`` and optionally
            ``test_ground_truth.json``). Without PATH the dataset's default Hub id is read with
            ``datasets.load_dataset``; ``@hf:OWNER/NAME[#CONFIG]`` reads another Hub dataset of the same format.
    A bare file name (``my.jsonl``) means ``jsonl@my.jsonl``.

Sources and their formats:
    medqa     MedQA-USMLE 4-option (jind11 / GBaker format: question, options {A..D}, answer_idx, answer,
              meta_info -> subject ``step1`` / ``step2&3``). Hub: GBaker/MedQA-USMLE-4-options (train, test only;
              give dev as a local file). Ids: ``<split>-<row index, 5 digits>``.
    medqa5    MedQA-USMLE original 5-option version (same format, options A..E). Hub: mathewhe/medqa, config
              ``en`` (the jind11 ``questions/US`` train/dev/test files); if that mirror changes, download the
              jind11 files and pass ``@PATH``.
    mmlu_pro  MMLU-Pro (TIGER-Lab parquet: question_id, options list, answer letter, answer_index, category, src;
              or MedAgentsBench JSONL: realidx, options {A..J}, answer_idx, answer text). Both give the same
              records: id = question_id / realidx, subject = the MMLU source subject (``src`` without
              ``ori_mmlu-``). Hub: TIGER-Lab/MMLU-Pro, split test.
    medmcqa   MedMCQA (opa..opd, cop, subject_name -> subject, id). ``cop`` is 1-based in the official JSON files
              and 0-based in the Hub dataset and its parquet export. Hub: openlifescienceai/medmcqa (its test
              split has no public answers).
    pubmedqa  PubMedQA PQA-L, the 1,000 expert-labelled questions (ori_pqal.json keyed by PMID, or the Hub's
              pubid/question/context/final_decision rows). yes / no / maybe -> A / B / C; the question text is
              the abstract (``LABEL: text`` per section) followed by the question. The official test split is
              the 500 PMIDs of test_ground_truth.json (bundled as assets/pubmedqa_test_pmids.txt).
              Hub: qiaojin/PubMedQA, config pqa_labeled.
    jsonl     Your own questions, one JSON object a line (also .json list, .csv, .parquet with these columns)::

                  {"id": "q1", "question": "Which vitamin deficiency causes scurvy?",
                   "options": ["Vitamin A", "Vitamin C", "Vitamin D", "Vitamin K"],
                   "answer": "B", "subject": "nutrition"}

              ``options``: a list (lettered A, B, ... in order) or a dict {"A": ..., "B": ...} with contiguous
              letters; 2 to 10 options. ``answer``: the gold letter or the exact text of the gold option
              (``gold`` is accepted too). ``id`` (default ``<split>-<row index>``) and ``subject`` are optional;
              ``source`` / ``split`` fields are kept when present, so ``data export`` output reads back as is.
              In CSV files ``options`` is a JSON list/dict, or use one column per letter (A, B, C, ...).
    smoke     The bundled set (assets/smoke_questions.jsonl): 40 simple medical questions written for this project,
              gold letters balanced over A-E. Subsets: ``all`` (default), ``train`` (32), ``test`` (every 5th, 8).

Options (``DataOptions`` in config.py, the ``data`` section; CLI flags of ``data inspect`` / ``data export``):
    add_none_of_the_above  append a final "None of the above" option (the paper's MedQA variant); off by default.
    shuffle_options_seed   shuffle each question's options deterministically (seed + record id); gold follows.
    skip_invalid           skip bad rows instead of failing; the count is in the ``LoadReport`` and logged.
    limit                  keep at most this many records (after subset filtering).

Bad rows (missing answer, gold letter not among the options, duplicate id, empty question or option, fewer than 2 or
more than 10 options, unparseable JSON line) raise ``DataError`` naming the file and line / row. Nothing is dropped
silently: skipped rows are counted in ``LoadReport.skipped`` and logged, rows outside the requested subset in
``LoadReport.filtered``.
"""

from __future__ import annotations

import csv
import json
import logging
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from medrlvr_lite.config import DataOptions

__all__ = [
    "DATASETS",
    "LETTERS",
    "NONE_OF_THE_ABOVE",
    "SMOKE_PATH",
    "DataError",
    "DataOptions",
    "DatasetInfo",
    "LoadReport",
    "MCQRecord",
    "Spec",
    "add_none_of_the_above",
    "describe",
    "load_records",
    "parse_spec",
    "read_pubmedqa_test_pmids",
    "save_records",
    "shuffle_options",
    "validate_record",
]

log = logging.getLogger(__name__)

LETTERS = "ABCDEFGHIJ"
MIN_OPTIONS, MAX_OPTIONS = 2, len(LETTERS)
NONE_OF_THE_ABOVE = "None of the above"
ASSETS = Path(__file__).resolve().parent / "assets"
SMOKE_PATH = ASSETS / "smoke_questions.jsonl"
SMOKE_OOD_PATH = ASSETS / "smoke_ood_questions.jsonl"
PUBMEDQA_TEST_PMIDS_PATH = ASSETS / "pubmedqa_test_pmids.txt"
FILE_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".parquet")


class DataError(ValueError):
    """A dataset, file or row the user has to fix; the message names the file and line / row."""


class _RowError(DataError):
    """One bad row (skippable with ``skip_invalid``)."""


# --- the record --------------------------------------------------------------------------------------------------
@dataclass
class MCQRecord:
    """One multiple-choice question, whatever its source."""

    id: str
    question: str
    options: dict[str, str]
    gold: str
    source: str
    split: str
    subject: str | None = None

    @property
    def letters(self) -> list[str]:
        return list(self.options)

    @property
    def gold_text(self) -> str:
        return self.options[self.gold]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MCQRecord:
        missing = [k for k in ("id", "question", "options", "gold") if k not in d]
        if missing:
            raise DataError(f"record is missing {', '.join(missing)}: {str(d)[:200]}")
        record = cls(
            id=str(d["id"]),
            question=str(d["question"]),
            options={str(k): str(v) for k, v in dict(d["options"]).items()},
            gold=str(d["gold"]),
            source=str(d.get("source") or ""),
            split=str(d.get("split") or ""),
            subject=d.get("subject"),
        )
        validate_record(record)
        return record


def validate_record(record: MCQRecord) -> None:
    """Raise ``DataError`` unless the record is well formed (2-10 contiguous options A.., non-empty, gold among them)."""
    if not str(record.id).strip():
        raise _RowError("empty id")
    if not record.question or not record.question.strip():
        raise _RowError("empty question")
    n = len(record.options)
    if n < MIN_OPTIONS:
        raise _RowError(f"{n} option(s); a question needs at least {MIN_OPTIONS}")
    if n > MAX_OPTIONS:
        raise _RowError(f"{n} options; at most {MAX_OPTIONS} (A-J) are supported")
    if list(record.options) != list(LETTERS[:n]):
        raise _RowError(
            f"option letters must be {', '.join(LETTERS[:n])} in order, got {', '.join(record.options)}"
        )
    for letter, text in record.options.items():
        if not isinstance(text, str) or not text.strip():
            raise _RowError(f"option {letter} is empty")
    if not record.gold:
        raise _RowError("missing answer")
    if record.gold not in record.options:
        raise _RowError(f"gold letter {record.gold!r} is not among the options {', '.join(record.options)}")


# --- option transforms -------------------------------------------------------------------------------------------
def shuffle_options(record: MCQRecord, seed: int) -> MCQRecord:
    """Shuffle the options deterministically (same seed and id -> same order); the gold letter follows its text."""
    rng = random.Random(f"{seed}:{record.id}")
    order = list(record.options)
    rng.shuffle(order)
    letters = LETTERS[: len(order)]
    options = {new: record.options[old] for new, old in zip(letters, order, strict=True)}
    return replace(record, options=options, gold=letters[order.index(record.gold)])


def add_none_of_the_above(record: MCQRecord) -> MCQRecord:
    """Append a final 'None of the above' option (unless the last option already says so)."""
    texts = list(record.options.values())
    if _norm(texts[-1]) == _norm(NONE_OF_THE_ABOVE):
        return record
    if len(texts) >= MAX_OPTIONS:
        raise _RowError(f"cannot add '{NONE_OF_THE_ABOVE}': the question already has {MAX_OPTIONS} options")
    return replace(record, options={**record.options, LETTERS[len(texts)]: NONE_OF_THE_ABOVE})


# --- spec and registry -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Spec:
    """A parsed ``NAME[:SUBSET][@PATH]``."""

    name: str
    subset: str | None = None
    path: str | None = None

    def __str__(self) -> str:
        return self.name + (f":{self.subset}" if self.subset else "") + (f"@{self.path}" if self.path else "")


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    description: str
    hub_id: str | None
    hub_config: str | None
    subsets: tuple[
        str, ...
    ]  # accepted SUBSET values (mmlu_pro: example categories; any category is accepted)
    default_subset: str
    hub_splits: dict[str, str] = field(default_factory=dict)  # our split -> the Hub's split name
    subset_is: str = "split"  # what SUBSET means: split | category

    def hub_label(self) -> str:
        if not self.hub_id:
            return "-"
        return self.hub_id + (f" ({self.hub_config})" if self.hub_config else "")


MMLU_PRO_CATEGORIES = [
    "biology",
    "business",
    "chemistry",
    "computer_science",
    "economics",
    "engineering",
    "health",
    "history",
    "law",
    "math",
    "other",
    "philosophy",
    "physics",
    "psychology",
]

DATASETS: dict[str, DatasetInfo] = {
    "medqa": DatasetInfo(
        "medqa",
        "MedQA-USMLE, 4 options (A-D); the paper's in-distribution set. dev only from a local file.",
        "GBaker/MedQA-USMLE-4-options",
        None,
        ("train", "dev", "test"),
        "test",
        {"train": "train", "test": "test"},
    ),
    "medqa5": DatasetInfo(
        "medqa5",
        "MedQA-USMLE, original 5 options (A-E).",
        "mathewhe/medqa",
        "en",
        ("train", "dev", "test"),
        "test",
        {"train": "train", "dev": "dev", "test": "test"},
    ),
    "mmlu_pro": DatasetInfo(
        "mmlu_pro",
        "MMLU-Pro, one category (default health: 818 questions), up to 10 options (A-J); out-of-distribution.",
        "TIGER-Lab/MMLU-Pro",
        None,
        ("health", "all", *[c for c in MMLU_PRO_CATEGORIES if c != "health"]),
        "health",
        {"test": "test", "validation": "validation"},
        subset_is="category",
    ),
    "medmcqa": DatasetInfo(
        "medmcqa",
        "MedMCQA (Indian medical entrance exams), 4 options; dev = 4,183 questions.",
        "openlifescienceai/medmcqa",
        None,
        ("train", "dev", "test"),
        "dev",
        {"train": "train", "dev": "validation", "test": "test"},
    ),
    "pubmedqa": DatasetInfo(
        "pubmedqa",
        "PubMedQA labelled (PQA-L): abstract + question, yes/no/maybe as A/B/C; test = official 500.",
        "qiaojin/PubMedQA",
        "pqa_labeled",
        ("test", "train", "all"),
        "test",
        {"test": "train", "train": "train", "all": "train"},
    ),
    "jsonl": DatasetInfo(
        "jsonl",
        'Your file: {"question", "options": list|dict, "answer": letter|text, "id"?, "subject"?} (needs @PATH).',
        None,
        None,
        ("any split name",),
        "all",
    ),
    "smoke": DatasetInfo(
        "smoke",
        "40 bundled simple medical questions (offline smoke study, tiny tokenizer); train 32 / test 8; "
        "ood: 12 other-format questions (yes/no/maybe, 3 options) for the smoke study's out-of-distribution set.",
        None,
        None,
        ("all", "train", "test", "ood"),
        "all",
    ),
}

_ALIASES = {
    "medqa4": "medqa",
    "medqa_4options": "medqa",
    "medqa-usmle": "medqa",
    "medqa_5options": "medqa5",
    "mmlu-pro": "mmlu_pro",
    "mmlupro": "mmlu_pro",
    "user": "jsonl",
    "file": "jsonl",
}
_SPLIT_ALIASES = {
    "validation": "dev",
    "val": "dev",
    "valid": "dev",
    "dev": "dev",
    "train": "train",
    "test": "test",
}


def parse_spec(spec: str) -> Spec:
    """``NAME[:SUBSET][@PATH]`` -> ``Spec``; unknown names raise ``DataError`` listing the known ones."""
    s = str(spec).strip()
    if not s:
        raise DataError("empty dataset spec; expected NAME[:SUBSET][@PATH], e.g. medqa:test")
    head, at, path = s.partition("@")
    if at and not path.strip():
        raise DataError(
            f"dataset spec {spec!r}: nothing after '@' (expected a file, folder or hf:OWNER/NAME)"
        )
    if not at and head.lower().endswith(FILE_SUFFIXES):
        head, path = "jsonl", head  # a bare file name
    name, _, subset = head.partition(":")
    name = name.strip().lower()
    name = _ALIASES.get(name, name)
    if name not in DATASETS:
        raise DataError(
            f"unknown dataset {name!r} in spec {spec!r}; known datasets: {', '.join(DATASETS)} "
            "(see `medrlvr-lite data list`)"
        )
    return Spec(name, subset.strip() or None, path.strip() or None)


# --- load report -------------------------------------------------------------------------------------------------
@dataclass
class LoadReport:
    """What ``load_records`` read: where from, how many rows, records, filtered-out and skipped rows."""

    spec: str = ""
    origin: str = ""
    rows_read: int = 0
    records: int = 0
    filtered: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)

    def summary(self) -> str:
        text = f"{self.records} records from {self.origin} ({self.rows_read} rows read"
        if self.filtered:
            text += f", {self.filtered} outside the requested subset"
        text += f", {self.n_skipped} invalid skipped)"
        return text


# --- readers: (location, row) pairs ------------------------------------------------------------------------------
@dataclass
class _Bad:
    reason: str


Rows = Iterable[tuple[str, Any]]


def _read_jsonl(path: Path) -> Iterator[tuple[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                yield f"line {lineno}", json.loads(line)
            except json.JSONDecodeError as exc:
                yield f"line {lineno}", _Bad(f"not valid JSON ({exc.msg} at column {exc.colno})")


def _read_json(path: Path) -> Iterator[tuple[str, Any]]:
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        first = text.lstrip().split("\n", 1)[0]
        try:
            json.loads(first)
        except json.JSONDecodeError:
            raise DataError(
                f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
            ) from None
        yield from _read_jsonl(path)  # JSON lines despite the .json name (MedMCQA's dev.json)
        return
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if isinstance(data, list):
        for i, row in enumerate(data, start=1):
            yield f"item {i}", row
    elif isinstance(data, dict) and all(isinstance(v, dict) for v in data.values()):
        for key, row in data.items():  # keyed by id (PubMedQA's ori_pqal.json)
            yield f"key {key!r}", {"_key": key, **row}
    else:
        raise DataError(f"{path}: expected a JSON list of rows or an object of rows keyed by id")


def _read_csv(path: Path) -> Iterator[tuple[str, Any]]:
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        for row in reader:
            yield f"line {reader.line_num}", {k: v for k, v in row.items() if k is not None}


def _read_parquet(path: Path, only: tuple[str, str] | None = None) -> Iterator[tuple[str, Any]]:
    """Rows of a parquet file. ``only=(column, value)``: rows whose column differs (case-insensitive) come as
    stubs ``{column: value}`` so they are still counted, without converting their other columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types
        raise DataError(f"{path}: cannot read parquet ({exc})") from None
    if only is None or only[0] not in table.column_names:
        for i, row in enumerate(table.to_pylist(), start=1):
            yield f"row {i}", row
        return
    column, value = only
    keys = table.column(column).to_pylist()
    wanted = [i for i, key in enumerate(keys) if _clean(key).lower() == value]
    full = iter(table.take(pa.array(wanted, type=pa.int64())).to_pylist())
    wanted_set = set(wanted)
    for i, key in enumerate(keys):
        yield f"row {i + 1}", next(full) if i in wanted_set else {column: key}


def _read_file(path: Path) -> Rows:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return _read_jsonl(path)
    if suffix == ".json":
        return _read_json(path)
    if suffix == ".csv":
        return _read_csv(path)
    if suffix == ".parquet":
        return _read_parquet(path)
    raise DataError(
        f"{path}: unsupported file type {suffix or '(none)'!r}; use .jsonl, .json, .csv or .parquet"
    )


def _read_hub(hub_id: str, config: str | None, split: str) -> Rows:
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - datasets is a core dependency
        raise DataError(f"reading {hub_id} needs the `datasets` package ({exc})") from None
    try:
        ds = datasets.load_dataset(hub_id, config, split=split)
    except Exception as exc:  # network, missing split, auth: all end the same way for the user
        where = hub_id + (f" ({config})" if config else "")
        raise DataError(
            f"could not load {where} split {split!r} from the Hugging Face Hub: {type(exc).__name__}: {exc}. "
            "Offline or behind a firewall? Download the files and give a local path: NAME:SUBSET@PATH"
        ) from None
    return ((f"row {i}", row) for i, row in enumerate(ds, start=1))


# --- helpers for row builders ------------------------------------------------------------------------------------
def _norm(text: Any) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", str(text).lower()).split())


def _clean(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value != value:  # NaN from pandas / csv
        return ""
    return str(value).strip()


def _present(value: Any) -> bool:
    return _clean(value) != ""


def _options(value: Any, row: dict | None = None) -> dict[str, str]:
    """Options from a list, a {letter: text} dict, a list of {key, value} dicts, a JSON string or A.. columns."""
    if isinstance(value, str) and value.strip():
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise _RowError("'options' is a string but not a JSON list or object") from None
    if value is None or (isinstance(value, str) and not value.strip()):
        if row is not None and _present(row.get("A")):
            letters = [L for L in LETTERS if _present(row.get(L))]
            return _options({L: row.get(L) for L in letters})
        raise _RowError("no options")
    if isinstance(value, dict):
        items = [(str(k).strip().upper(), v) for k, v in value.items()]
        items.sort(key=lambda kv: (LETTERS.find(kv[0]) if kv[0] in LETTERS else 99, kv[0]))
        while items and items[-1][1] is None:  # Hub structs pad absent trailing options with None
            items.pop()
        keys = [k for k, _ in items]
        if keys != list(LETTERS[: len(keys)]):
            raise _RowError(f"option letters must be contiguous from A, got {', '.join(keys)}")
        return {k: _clean(v) for k, v in items}
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, dict) and "value" in v for v in value):
            return _options(
                {
                    v.get("key", LETTERS[i] if i < len(LETTERS) else str(i)): v["value"]
                    for i, v in enumerate(value)
                }
            )
        if len(value) > MAX_OPTIONS:
            raise _RowError(f"{len(value)} options; at most {MAX_OPTIONS} (A-J) are supported")
        return {LETTERS[i]: _clean(v) for i, v in enumerate(value)}
    raise _RowError(f"'options' must be a list or an object, not {type(value).__name__}")


def _letter_for_text(text: str, options: dict[str, str]) -> str:
    exact = [k for k, v in options.items() if v == text.strip()]
    hits = exact or [k for k, v in options.items() if _norm(v) == _norm(text)]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise _RowError(f"answer {text[:80]!r} is neither an option letter nor the text of an option")
    raise _RowError(f"answer text {text[:80]!r} matches several options ({', '.join(hits)})")


def _gold_from_letter(letter: Any, options: dict[str, str], answer_text: Any = None) -> str:
    gold = _clean(letter).upper()
    if gold not in options:
        raise _RowError(f"gold letter {_clean(letter)!r} is not among the options {', '.join(options)}")
    if _present(answer_text) and _norm(answer_text) != _norm(options[gold]):
        raise _RowError(
            f"gold letter {gold} is {options[gold][:60]!r} but the answer text is {_clean(answer_text)[:60]!r}"
        )
    return gold


def _row_id(row: dict, keys: tuple[str, ...], split: str, index: int) -> str:
    for key in keys:
        if _present(row.get(key)):
            return _clean(row[key])
    return f"{split}-{index:05d}"


def _split_from_name(path: Path, allowed: Iterable[str], default: str) -> str:
    words = re.split(r"[^a-z]+", path.name.lower())
    for word in words:
        split = _SPLIT_ALIASES.get(word, word)
        if split in allowed:
            return split
    return default


def _resolve_path(raw: str, split: str | None, what: str) -> Path:
    path = Path(raw).expanduser()
    if not path.exists():
        raise DataError(f"{what}: file or folder not found: {path}")
    if path.is_file():
        return path
    names = [split] + [k for k, v in _SPLIT_ALIASES.items() if v == split and k != split] if split else []
    patterns = []
    for name in names:
        patterns += [f"{name}.jsonl", f"{name}.json", f"{name}.csv", f"{name}.parquet", f"{name}-*.parquet"]
        patterns += [f"*_{name}.jsonl", f"*-{name}.jsonl"]
    for pattern in patterns:
        found = sorted(path.glob(pattern))
        if found:
            return found[0]
    files = sorted(p.name for p in path.iterdir() if p.suffix.lower() in FILE_SUFFIXES)
    if not split and len(files) == 1:
        return path / files[0]
    raise DataError(
        f"{what}: no file for split {split!r} in folder {path} (looked for {', '.join(patterns[:5]) or 'a split name'}; "
        f"found {', '.join(files) or 'no data files'}); give the file itself after '@'"
    )


def _parse_hf(raw: str) -> tuple[str, str | None]:
    hub, _, config = raw[len("hf:") :].partition("#")
    return hub.strip().strip("/"), (config.strip() or None)


def _split_hint(spec: Spec, info: DatasetInfo) -> str | None:
    """The split to look for in a folder: the one asked for, else the default one (a file needs no hint)."""
    if spec.subset:
        return _canon_split(spec.subset, info)
    return info.default_subset if spec.path and Path(spec.path).expanduser().is_dir() else None


def _canon_split(subset: str | None, info: DatasetInfo) -> str:
    split = _SPLIT_ALIASES.get(
        (subset or info.default_subset).lower(), (subset or info.default_subset).lower()
    )
    if split not in info.subsets:
        raise DataError(f"{info.name}: unknown split {subset!r}; choose one of {', '.join(info.subsets)}")
    return split


# --- one source = rows + a row builder -----------------------------------------------------------------------------
@dataclass
class _Source:
    rows: Rows
    make: Callable[[dict, int], MCQRecord | None]  # None: row outside the requested subset
    origin: str
    empty_hint: Callable[[], str] = lambda: ""


def _hub_rows(info: DatasetInfo, spec: Spec, split: str) -> tuple[Rows, str]:
    if spec.path and spec.path.startswith("hf:"):
        hub_id, config = _parse_hf(spec.path)
    else:
        hub_id, config = info.hub_id, info.hub_config
    hub_split = info.hub_splits.get(split)
    if hub_split is None:
        raise DataError(
            f"{info.name}: {hub_id} has no {split!r} split on the Hub (it has {', '.join(info.hub_splits)}); "
            f"give a local file: {info.name}:{split}@path/to/{split}.jsonl"
        )
    return _read_hub(hub_id, config, hub_split), f"{hub_id}{f' ({config})' if config else ''} [{hub_split}]"


def _local(spec: Spec) -> bool:
    return bool(spec.path) and not spec.path.startswith("hf:")


def _source_medqa(spec: Spec, info: DatasetInfo) -> _Source:
    if _local(spec):
        path = _resolve_path(spec.path, _split_hint(spec, info), info.name)
        split = (
            _canon_split(spec.subset, info) if spec.subset else _split_from_name(path, info.subsets, "test")
        )
        rows, origin = _read_file(path), str(path)
    else:
        split = _canon_split(spec.subset, info)
        rows, origin = _hub_rows(info, spec, split)

    def make(row: dict, index: int) -> MCQRecord:
        options = _options(row.get("options"))
        if _present(row.get("answer_idx")):
            gold = _gold_from_letter(row["answer_idx"], options, row.get("answer"))
        elif _present(row.get("answer")):
            answer = _clean(row["answer"])
            gold = answer.upper() if answer.upper() in options else _letter_for_text(answer, options)
        else:
            raise _RowError("missing answer (no answer_idx or answer)")
        return MCQRecord(
            id=_row_id(row, ("id",), split, index),
            question=_clean(row.get("question")),
            options=options,
            gold=gold,
            source=info.name,
            split=split,
            subject=_clean(row.get("meta_info")) or None,
        )

    return _Source(rows, make, origin)


def _source_mmlu_pro(spec: Spec, info: DatasetInfo) -> _Source:
    category = (spec.subset or info.default_subset).lower().replace("_", " ")
    if _local(spec):
        path = _resolve_path(spec.path, "test", info.name)
        split = "validation" if "validation" in path.name.lower() else "test"
        if path.suffix.lower() == ".parquet" and category != "all":
            rows = _read_parquet(path, ("category", category))  # converts only the category's rows
        else:
            rows = _read_file(path)
        origin = str(path)
    else:
        split = "test"
        rows, origin = _hub_rows(info, spec, split)
    seen_categories: Counter[str] = Counter()

    def make(row: dict, index: int) -> MCQRecord | None:
        cat = _clean(row.get("category")).lower()
        seen_categories[cat] += 1
        if category != "all" and cat != category:
            return None
        options = _options(row.get("options"))
        if _present(row.get("answer_idx")):  # MedAgentsBench JSONL: answer_idx letter + answer text
            gold = _gold_from_letter(row["answer_idx"], options, row.get("answer"))
        elif _present(row.get("answer")):  # TIGER-Lab parquet: answer letter + answer_index
            # the letter is what MMLU-Pro's own evaluation scores against; answer_index disagrees with it in one
            # chemistry row (question_id 3983), so it is only a fallback
            gold = _gold_from_letter(row["answer"], options)
        elif _present(row.get("answer_index")):
            idx = int(row["answer_index"])
            if not 0 <= idx < len(options):
                raise _RowError(f"answer_index {idx} is out of range for {len(options)} options")
            gold = LETTERS[idx]
        else:
            raise _RowError("missing answer")
        src = _clean(row.get("src"))
        return MCQRecord(
            id=_row_id(row, ("question_id", "realidx", "id"), split, index),
            question=_clean(row.get("question")),
            options=options,
            gold=gold,
            source=info.name,
            split=split,
            subject=(src.removeprefix("ori_mmlu-") if src else cat) or None,
        )

    def hint() -> str:
        cats = ", ".join(sorted(c.replace(" ", "_") for c in seen_categories if c))
        return f"no rows with category {category!r}; categories present: {cats or 'none'}"

    return _Source(rows, make, origin, hint)


def _source_medmcqa(spec: Spec, info: DatasetInfo) -> _Source:
    if _local(spec):
        path = _resolve_path(spec.path, _split_hint(spec, info), info.name)
        split = (
            _canon_split(spec.subset, info) if spec.subset else _split_from_name(path, info.subsets, "dev")
        )
        rows, origin = _read_file(path), str(path)
        base = (
            0 if path.suffix.lower() == ".parquet" else 1
        )  # official JSON: 1-based; HF parquet export: 0-based
    else:
        split = _canon_split(spec.subset, info)
        rows, origin = _hub_rows(info, spec, split)
        base = 0

    def make(row: dict, index: int) -> MCQRecord:
        options = {L: _clean(row.get(k)) for L, k in zip("ABCD", ("opa", "opb", "opc", "opd"), strict=True)}
        cop = row.get("cop")
        if not _present(cop):
            raise _RowError("missing answer (no cop)")
        try:
            k = int(cop)
        except (TypeError, ValueError):
            cop_s = _clean(cop).upper()
            if cop_s not in options:
                raise _RowError(f"cop {cop!r} is not an option number or letter") from None
            k = "ABCD".index(cop_s) + base
        if k == -1:
            raise _RowError("no answer (cop = -1; MedMCQA's test split has no public answers)")
        if not base <= k < base + 4:
            raise _RowError(
                f"cop {k} is out of range {base}..{base + 3} ({'1' if base else '0'}-based in this file)"
            )
        return MCQRecord(
            id=_row_id(row, ("id",), split, index),
            question=_clean(row.get("question")),
            options=options,
            gold="ABCD"[k - base],
            source=info.name,
            split=split,
            subject=_clean(row.get("subject_name")) or None,
        )

    return _Source(rows, make, origin)


def read_pubmedqa_test_pmids(path: str | Path | None = None) -> list[str]:
    """The 500 PMIDs of PubMedQA's official test split (bundled; or the keys of a test_ground_truth.json)."""
    if path is not None:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return [str(k) for k in data]
    lines = PUBMEDQA_TEST_PMIDS_PATH.read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


_PUBMEDQA_LABELS = {"yes": "A", "no": "B", "maybe": "C"}


def _source_pubmedqa(spec: Spec, info: DatasetInfo) -> _Source:
    subset = (spec.subset or info.default_subset).lower()
    if subset not in info.subsets:
        raise DataError(f"pubmedqa: unknown subset {subset!r}; choose one of {', '.join(info.subsets)}")
    truth_path = None
    if _local(spec):
        path = Path(spec.path).expanduser()
        if path.is_dir():
            if (path / "test_ground_truth.json").is_file():
                truth_path = path / "test_ground_truth.json"
            path = path / "ori_pqal.json"
            if not path.is_file():
                raise DataError(
                    f"pubmedqa: {path} not found (the folder needs ori_pqal.json from pubmedqa/pubmedqa)"
                )
        path = _resolve_path(str(path), None, info.name)
        rows, origin = _read_file(path), str(path)
    else:
        rows, origin = _hub_rows(info, spec, subset)
    test_ids = set(read_pubmedqa_test_pmids(truth_path))

    def make(row: dict, index: int) -> MCQRecord | None:
        pmid = _clean(row.get("_key") or row.get("pubid") or row.get("PMID") or row.get("id"))
        if not pmid:
            raise _RowError("missing PMID (pubid)")
        if (subset == "test" and pmid not in test_ids) or (subset == "train" and pmid in test_ids):
            return None
        question = _clean(row.get("QUESTION", row.get("question")))
        if not question:
            raise _RowError("empty question")
        context = row.get("context") if isinstance(row.get("context"), dict) else {}
        contexts = row.get("CONTEXTS", context.get("contexts")) or []
        labels = row.get("LABELS", context.get("labels")) or []
        if isinstance(contexts, str):
            contexts = [contexts]
        parts = []
        for i, text in enumerate(contexts):
            label = _clean(labels[i]) if i < len(labels) else ""
            parts.append(f"{label}: {_clean(text)}" if label else _clean(text))
        decision = _clean(row.get("final_decision")).lower()
        if not decision:
            raise _RowError("missing answer (final_decision)")
        if decision not in _PUBMEDQA_LABELS:
            raise _RowError(f"final_decision {decision!r} is not yes, no or maybe")
        text = ("Context:\n" + "\n".join(parts) + "\n\nQuestion: " + question) if parts else question
        return MCQRecord(
            id=pmid,
            question=text,
            options={"A": "yes", "B": "no", "C": "maybe"},
            gold=_PUBMEDQA_LABELS[decision],
            source=info.name,
            split=subset,
            subject=None,
        )

    return _Source(rows, make, origin)


def _user_make(source: str, split: str | None, keep: Callable[[int], bool] | None = None):
    def make(row: dict, index: int) -> MCQRecord | None:
        if keep is not None and not keep(index):
            return None
        row_split = split or _clean(row.get("split")) or "all"
        options = _options(row.get("options"), row)
        answer = row.get("answer", row.get("gold"))
        if not _present(answer):
            raise _RowError("missing answer")
        if isinstance(answer, (int, float)) and not isinstance(answer, bool):
            raise _RowError(f"answer {answer!r} must be a letter or the text of an option, not a number")
        answer = _clean(answer)
        if len(answer) == 1 and answer.upper() in LETTERS:
            gold = _gold_from_letter(answer, options)
        else:
            gold = _letter_for_text(answer, options)
        return MCQRecord(
            id=_row_id(row, ("id",), row_split, index),
            question=_clean(row.get("question")),
            options=options,
            gold=gold,
            source=_clean(row.get("source")) or source,
            split=row_split,
            subject=_clean(row.get("subject")) or None,
        )

    return make


def _source_jsonl(spec: Spec, info: DatasetInfo) -> _Source:
    if not spec.path:
        raise DataError("jsonl needs a file: jsonl@path/to/questions.jsonl (or jsonl:SPLIT@path)")
    if spec.path.startswith("hf:"):
        hub_id, config = _parse_hf(spec.path)
        split = spec.subset or "train"
        return _Source(_read_hub(hub_id, config, split), _user_make("jsonl", split), f"{hub_id} [{split}]")
    path = _resolve_path(spec.path, spec.subset, "jsonl")
    return _Source(_read_file(path), _user_make("jsonl", spec.subset), str(path))


def _source_smoke(spec: Spec, info: DatasetInfo) -> _Source:
    subset = (spec.subset or info.default_subset).lower()
    if subset not in info.subsets:
        raise DataError(f"smoke: unknown subset {subset!r}; choose one of {', '.join(info.subsets)}")
    default = SMOKE_OOD_PATH if subset == "ood" else SMOKE_PATH
    path = Path(spec.path).expanduser() if _local(spec) else default
    keep = {"all": None, "ood": None, "train": lambda i: i % 5 != 4, "test": lambda i: i % 5 == 4}[subset]
    return _Source(
        _read_file(_resolve_path(str(path), None, "smoke")), _user_make("smoke", subset, keep), str(path)
    )


_SOURCES: dict[str, Callable[[Spec, DatasetInfo], _Source]] = {
    "medqa": _source_medqa,
    "medqa5": _source_medqa,
    "mmlu_pro": _source_mmlu_pro,
    "medmcqa": _source_medmcqa,
    "pubmedqa": _source_pubmedqa,
    "jsonl": _source_jsonl,
    "smoke": _source_smoke,
}


# --- the entry point ---------------------------------------------------------------------------------------------
def load_records(
    spec: str, options: DataOptions | None = None, *, report: LoadReport | None = None
) -> list[MCQRecord]:
    """Read a dataset spec (``NAME[:SUBSET][@PATH]``) into validated ``MCQRecord``s.

    Bad rows raise ``DataError`` naming the file and line/row, unless ``options.skip_invalid`` (then they are
    counted in ``report.skipped`` and logged). Pass a ``LoadReport`` to learn what was read.
    """
    opts = options if options is not None else DataOptions()
    rep = report if report is not None else LoadReport()
    rep.spec = str(spec)
    parsed = parse_spec(spec)
    info = DATASETS[parsed.name]
    source = _SOURCES[parsed.name](parsed, info)
    rep.origin = source.origin
    records: list[MCQRecord] = []
    seen: dict[str, str] = {}
    if opts.limit is not None and opts.limit <= 0:
        return records
    for index, (loc, row) in enumerate(source.rows):
        rep.rows_read += 1
        try:
            if isinstance(row, _Bad):
                raise _RowError(row.reason)
            if not isinstance(row, dict):
                raise _RowError(f"expected a JSON object, got {type(row).__name__}")
            try:
                record = source.make(row, index)
            except DataError:
                raise
            except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
                raise _RowError(f"malformed row ({type(exc).__name__}: {exc})") from None
            if record is None:
                rep.filtered += 1
                continue
            validate_record(record)
            if opts.shuffle_options_seed is not None:
                record = shuffle_options(record, opts.shuffle_options_seed)
            if opts.add_none_of_the_above:
                record = add_none_of_the_above(record)
            if record.id in seen:
                raise _RowError(f"duplicate id {record.id!r} (first seen at {seen[record.id]})")
        except _RowError as exc:
            where = f"{source.origin}: {loc}"
            if not opts.skip_invalid:
                raise DataError(
                    f"{where}: {exc} (use --skip-invalid / data.skip_invalid to skip bad rows)"
                ) from None
            rep.skipped.append((where, str(exc)))
            continue
        seen[record.id] = loc
        records.append(record)
        if opts.limit is not None and len(records) >= opts.limit:
            break
    rep.records = len(records)
    if rep.skipped:
        where, why = rep.skipped[0]
        log.warning("%s: skipped %d invalid row(s); first: %s: %s", spec, rep.n_skipped, where, why)
    if not records:
        hint = source.empty_hint()
        detail = hint or (f"all {rep.n_skipped} rows were invalid" if rep.skipped else "the source is empty")
        raise DataError(f"{source.origin}: no records for {spec!r}: {detail}")
    return records


# --- output and summaries ----------------------------------------------------------------------------------------
def save_records(records: Iterable[MCQRecord], path: str | Path) -> int:
    """Write records as JSON lines (``MCQRecord.to_dict``); ``jsonl@PATH`` reads them back unchanged."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record.to_dict(), ensure_ascii=False) + "\n")
            n += 1
    return n


def describe(records: list[MCQRecord]) -> dict[str, Any]:
    """Counts for ``data inspect``: records, option-count histogram, gold-letter balance, subjects, splits."""
    return {
        "records": len(records),
        "sources": dict(Counter(r.source for r in records)),
        "splits": dict(Counter(r.split for r in records)),
        "option_counts": dict(sorted(Counter(len(r.options) for r in records).items())),
        "gold_letters": dict(sorted(Counter(r.gold for r in records).items())),
        "subjects": dict(Counter(r.subject or "(none)" for r in records).most_common()),
        "mean_question_chars": (sum(len(r.question) for r in records) / len(records)) if records else 0.0,
    }
