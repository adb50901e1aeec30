"""The data stage against the real files in ../shared/data, bad files written here, and the `data` CLI."""

from __future__ import annotations

import json
import logging
import sys
import types
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medrlvr_lite import data as data_mod
from medrlvr_lite.cli import app
from medrlvr_lite.config import DataOptions
from medrlvr_lite.data import (
    DATASETS,
    NONE_OF_THE_ABOVE,
    DataError,
    LoadReport,
    MCQRecord,
    describe,
    load_records,
    parse_spec,
    read_pubmedqa_test_pmids,
    save_records,
    shuffle_options,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MMLU_PARQUET = DATA / "mmlu_pro" / "test-00000-of-00001.parquet"
MMLU_JSONL = DATA / "mmlu_pro_health" / "test.jsonl"
WIDE = {"COLUMNS": "400"}  # keep rich from wrapping file names in CLI output


def raw_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.open(encoding="utf-8") if line.strip()]


@pytest.fixture(scope="session")
def mmlu_parquet_records() -> list[MCQRecord]:
    return load_records(f"mmlu_pro:health@{MMLU_PARQUET}")


@pytest.fixture(scope="session")
def medqa_test() -> list[MCQRecord]:
    return load_records(f"medqa:test@{DATA / 'medqa' / 'test.jsonl'}")


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), env=WIDE)


# --- MedQA ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, folder, split, n, n_options",
    [
        ("medqa", "medqa", "test", 1273, 4),
        ("medqa", "medqa", "dev", 1272, 4),
        ("medqa5", "medqa_5options", "test", 1273, 5),
        ("medqa5", "medqa_5options", "dev", 1272, 5),
    ],
)
def test_medqa_files(name, folder, split, n, n_options):
    path = DATA / folder / f"{split}.jsonl"
    records = load_records(f"{name}:{split}@{path}")
    raw = raw_jsonl(path)
    assert len(records) == len(raw) == n
    assert {len(r.options) for r in records} == {n_options}
    assert all(r.letters == list("ABCDE"[:n_options]) for r in records)
    for rec, row in zip(records, raw, strict=True):
        assert rec.gold == row["answer_idx"]
        assert (
            rec.gold_text == row["answer"].strip()
        )  # the gold letter is the option whose text is the answer
        assert rec.question == row["question"].strip()
    assert {r.subject for r in records} == {"step1", "step2&3"}
    assert {r.split for r in records} == {split} and {r.source for r in records} == {name}
    assert len({r.id for r in records}) == n and records[0].id == f"{split}-00000"


def test_medqa_folder_and_split_from_file_name():
    assert len(load_records(f"medqa@{DATA / 'medqa'}")) == 1273  # folder: default split test
    dev = load_records(f"medqa:validation@{DATA / 'medqa'}")  # alias of dev
    assert len(dev) == 1272 and dev[0].split == "dev"
    assert load_records(f"medqa5@{DATA / 'medqa_5options' / 'dev.jsonl'}")[0].split == "dev"


def test_medqa_4_and_5_option_versions_share_questions(medqa_test):
    five = load_records(f"medqa5:test@{DATA / 'medqa_5options'}")
    by_q = {r.question: r for r in five}
    matched = [(r, by_q[r.question]) for r in medqa_test if r.question in by_q]
    assert len(matched) > 1200
    assert sum(a.gold_text == b.gold_text for a, b in matched) / len(matched) > 0.99


def test_none_of_the_above(medqa_test):
    records = load_records(
        f"medqa:test@{DATA / 'medqa' / 'test.jsonl'}", DataOptions(add_none_of_the_above=True)
    )
    assert len(records) == 1273
    for plain, nota in zip(medqa_test, records, strict=True):
        assert nota.letters == ["A", "B", "C", "D", "E"]
        assert nota.options["E"] == NONE_OF_THE_ABOVE
        assert nota.gold == plain.gold and nota.gold_text == plain.gold_text
    assert Counter(r.gold for r in records)["E"] == 0
    five = load_records(
        f"medqa5:dev@{DATA / 'medqa_5options'}", DataOptions(add_none_of_the_above=True, limit=5)
    )
    assert all(r.options["F"] == NONE_OF_THE_ABOVE for r in five)
    assert DataOptions().add_none_of_the_above is False


def test_shuffle_keeps_gold_text_and_is_deterministic(medqa_test):
    spec = f"medqa:test@{DATA / 'medqa' / 'test.jsonl'}"
    a = load_records(spec, DataOptions(shuffle_options_seed=7))
    b = load_records(spec, DataOptions(shuffle_options_seed=7))
    c = load_records(spec, DataOptions(shuffle_options_seed=8, limit=200))
    assert [r.to_dict() for r in a] == [r.to_dict() for r in b]
    assert sum(x.options != y.options for x, y in zip(a, c, strict=False)) > 150
    moved = 0
    for plain, shuf in zip(medqa_test, a, strict=True):
        assert shuf.gold_text == plain.gold_text
        assert sorted(shuf.options.values()) == sorted(plain.options.values())
        assert shuf.letters == plain.letters
        moved += shuf.gold != plain.gold
    assert moved > 800  # about 3/4 of golds move with 4 options
    balance = Counter(r.gold for r in a)
    assert min(balance.values()) > 250  # shuffling evens out the gold letters
    both = load_records(spec, DataOptions(shuffle_options_seed=7, add_none_of_the_above=True, limit=20))
    assert all(r.options["E"] == NONE_OF_THE_ABOVE and r.gold != "E" for r in both)
    rec = medqa_test[0]
    assert shuffle_options(rec, 3) == shuffle_options(rec, 3)


# --- MMLU-Pro ------------------------------------------------------------------------------------------------------
def test_mmlu_pro_parquet_and_jsonl_give_the_same_records(mmlu_parquet_records):
    from_jsonl = load_records(f"mmlu_pro:health@{MMLU_JSONL}")
    assert len(mmlu_parquet_records) == len(from_jsonl) == 818
    assert [r.to_dict() for r in mmlu_parquet_records] == [r.to_dict() for r in from_jsonl]
    raw = raw_jsonl(MMLU_JSONL)
    for rec, row in zip(from_jsonl, raw, strict=True):
        assert rec.id == str(row["realidx"])
        assert rec.gold == row["answer_idx"] and rec.gold_text == row["answer"].strip()
    counts = Counter(len(r.options) for r in mmlu_parquet_records)
    assert min(counts) == 3 and max(counts) == 10 and counts[10] == 597
    assert {r.letters[-1] for r in mmlu_parquet_records if len(r.options) == 10} == {"J"}
    assert Counter(r.subject for r in mmlu_parquet_records)["professional_medicine"] == 254
    assert {r.split for r in mmlu_parquet_records} == {"test"}


def test_mmlu_pro_parquet_ids_are_question_ids(mmlu_parquet_records):
    import pyarrow.parquet as pq

    table = pq.read_table(MMLU_PARQUET, columns=["question_id", "category", "answer"]).to_pylist()
    health = [row for row in table if row["category"] == "health"]
    assert [r.id for r in mmlu_parquet_records] == [str(row["question_id"]) for row in health]
    assert [r.gold for r in mmlu_parquet_records] == [row["answer"] for row in health]


def test_mmlu_pro_categories_on_the_small_validation_file():
    path = DATA / "mmlu_pro" / "validation-00000-of-00001.parquet"
    report = LoadReport()
    records = load_records(f"mmlu_pro:all@{path}", report=report)
    assert len(records) == 70 and report.filtered == 0 and {r.split for r in records} == {"validation"}
    assert len(load_records(f"mmlu_pro:computer_science@{path}")) == 5
    with pytest.raises(DataError, match="categories present: biology, business"):
        load_records(f"mmlu_pro:surgery@{path}")


# --- MedMCQA -------------------------------------------------------------------------------------------------------
def test_medmcqa_dev():
    path = DATA / "medmcqa" / "dev.jsonl"
    records = load_records(f"medmcqa:dev@{path}")
    raw = raw_jsonl(path)
    assert len(records) == 4183
    for rec, row in zip(records, raw, strict=True):
        assert rec.id == row["id"]
        assert rec.gold == "ABCD"[row["cop"] - 1]  # cop is 1-based in the official files
        assert rec.gold_text == row[["opa", "opb", "opc", "opd"][row["cop"] - 1]].strip()
        assert rec.subject == row["subject_name"]
    assert Counter(r.gold for r in records) == {"A": 1348, "B": 1085, "C": 925, "D": 825}
    assert Counter(r.subject for r in records).most_common(1) == [("Dental", 1318)]
    assert len(load_records(f"medmcqa@{DATA / 'medmcqa'}")) == 4183  # folder, default split dev


# --- PubMedQA ------------------------------------------------------------------------------------------------------
def test_pubmedqa_test_split():
    truth = json.loads((DATA / "pubmedqa" / "test_ground_truth.json").read_text())
    raw = json.loads((DATA / "pubmedqa" / "ori_pqal.json").read_text())
    records = load_records(f"pubmedqa:test@{DATA / 'pubmedqa'}")
    assert len(records) == 500
    assert {r.id for r in records} == set(truth)
    for rec in records:
        assert rec.options == {"A": "yes", "B": "no", "C": "maybe"}
        assert rec.gold_text == truth[rec.id]
        row = raw[rec.id]
        assert rec.question.startswith("Context:\n")
        assert rec.question.endswith("Question: " + row["QUESTION"])
        assert all(ctx.strip() in rec.question for ctx in row["CONTEXTS"])
        assert f"{row['LABELS'][0]}: " in rec.question
    assert Counter(r.gold_text for r in records) == Counter(truth.values())


def test_pubmedqa_all_train_and_bundled_pmids():
    truth = json.loads((DATA / "pubmedqa" / "test_ground_truth.json").read_text())
    assert read_pubmedqa_test_pmids() == list(truth)  # the bundled list is the official split
    every = load_records(f"pubmedqa:all@{DATA / 'pubmedqa'}")
    train = load_records(f"pubmedqa:train@{DATA / 'pubmedqa' / 'ori_pqal.json'}")
    test = load_records(f"pubmedqa:test@{DATA / 'pubmedqa' / 'ori_pqal.json'}")  # bundled PMIDs
    assert len(every) == 1000 and len(train) == 500 and len(test) == 500
    assert {r.id for r in train}.isdisjoint(r.id for r in test)
    assert Counter(r.gold_text for r in every) == {"yes": 552, "no": 338, "maybe": 110}


# --- Hub path (datasets.load_dataset replaced by a fake built from the local files) --------------------------------
class FakeHub:
    def __init__(self, tables: dict[tuple[str, str | None, str], list[dict]]):
        self.tables = tables
        self.calls: list[tuple] = []

    def __call__(self, hub_id, config=None, split=None, **kwargs):
        self.calls.append((hub_id, config, split))
        if (hub_id, config, split) not in self.tables:
            raise ConnectionError(f"Couldn't reach {hub_id!r} on the Hub")
        return self.tables[(hub_id, config, split)]


def test_hub_loaders(monkeypatch):
    medmcqa_raw = raw_jsonl(DATA / "medmcqa" / "dev.jsonl")[:50]
    hub_medmcqa = [{**row, "cop": row["cop"] - 1} for row in medmcqa_raw]  # the Hub's cop is 0-based
    pqal = json.loads((DATA / "pubmedqa" / "ori_pqal.json").read_text())
    hub_pubmedqa = [
        {
            "pubid": int(pmid),
            "question": row["QUESTION"],
            "context": {"contexts": row["CONTEXTS"], "labels": row["LABELS"], "meshes": row["MESHES"]},
            "long_answer": row["LONG_ANSWER"],
            "final_decision": row["final_decision"],
        }
        for pmid, row in pqal.items()
    ]
    medqa_raw = raw_jsonl(DATA / "medqa" / "test.jsonl")[:30]
    fake = FakeHub(
        {
            ("openlifescienceai/medmcqa", None, "validation"): hub_medmcqa,
            ("openlifescienceai/medmcqa", None, "test"): [{**hub_medmcqa[0], "cop": -1}],
            ("qiaojin/PubMedQA", "pqa_labeled", "train"): hub_pubmedqa,
            ("GBaker/MedQA-USMLE-4-options", None, "test"): medqa_raw,
            ("someone/other-medqa", "x", "test"): medqa_raw[:3],
        }
    )
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=fake))  # no real import

    hub = load_records("medmcqa:dev")
    local = load_records(f"medmcqa:dev@{DATA / 'medmcqa' / 'dev.jsonl'}", DataOptions(limit=50))
    assert [r.to_dict() for r in hub] == [r.to_dict() for r in local]
    assert load_records("pubmedqa:test") == load_records(f"pubmedqa:test@{DATA / 'pubmedqa'}")
    assert len(load_records("medqa")) == 30
    assert len(load_records("medqa:test@hf:someone/other-medqa#x")) == 3
    with pytest.raises(DataError, match="no public answers"):
        load_records("medmcqa:test")
    with pytest.raises(DataError, match=r"no 'dev' split on the Hub.*medqa:dev@"):
        load_records("medqa:dev")
    with pytest.raises(DataError, match="Offline.*local path"):
        load_records("mmlu_pro:health")
    assert ("TIGER-Lab/MMLU-Pro", None, "test") in fake.calls
    assert ("qiaojin/PubMedQA", "pqa_labeled", "train") in fake.calls


# --- the bundled smoke set -----------------------------------------------------------------------------------------
def test_smoke_set():
    records = load_records("smoke")
    assert len(records) == 40
    assert Counter(r.gold for r in records) == {L: 8 for L in "ABCDE"}
    assert {len(r.options) for r in records} <= {4, 5}
    assert all(r.subject for r in records) and len({r.subject for r in records}) >= 10
    assert len({r.id for r in records}) == 40 and len({r.question for r in records}) == 40
    for r in records:
        assert len(set(r.options.values())) == len(r.options)
    train, test = load_records("smoke:train"), load_records("smoke:test")
    assert len(train) == 32 and len(test) == 8
    assert {r.id for r in train} | {r.id for r in test} == {r.id for r in records}
    assert {r.split for r in test} == {"test"}
    assert data_mod.SMOKE_PATH.is_file()


# --- user files ----------------------------------------------------------------------------------------------------
def write_lines(path: Path, rows: list) -> Path:
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8"
    )
    return path


def test_user_jsonl_formats(tmp_path):
    path = write_lines(
        tmp_path / "mine.jsonl",
        [
            {"id": "q1", "question": "2+2?", "options": ["3", "4", "5"], "answer": "B", "subject": "math"},
            {"question": "Capital of France?", "options": {"A": "Paris", "B": "Rome"}, "answer": "Paris"},
            {"question": "Pick c", "options": {"b": "bee", "a": "ay", "c": "sea"}, "answer": "c"},
            {"question": "Text answer ignoring case", "options": ["Alpha", "Beta"], "answer": "beta"},
        ],
    )
    records = load_records(f"jsonl@{path}")
    assert [r.gold for r in records] == ["B", "A", "C", "B"]
    assert records[0].id == "q1" and records[0].subject == "math" and records[1].subject is None
    assert records[1].id == "all-00001" and records[0].source == "jsonl" and records[0].split == "all"
    assert records[2].options == {"A": "ay", "B": "bee", "C": "sea"}
    assert load_records(str(path)) == records  # a bare file name means jsonl@file
    assert {r.split for r in load_records(f"jsonl:train@{path}")} == {"train"}


def test_user_csv_and_json(tmp_path):
    csv_path = tmp_path / "q.csv"
    csv_path.write_text(
        "question,A,B,C,answer\nWhich is red?,sky,blood,grass,B\nWhich is green?,sky,blood,grass,grass\n"
    )
    assert [r.gold for r in load_records(f"jsonl@{csv_path}")] == ["B", "C"]
    csv2 = tmp_path / "q2.csv"
    csv2.write_text('question,options,answer\nPick one,"[""x"", ""y""]",A\n')
    assert load_records(f"jsonl@{csv2}")[0].options == {"A": "x", "B": "y"}
    json_path = tmp_path / "q.json"
    json_path.write_text(json.dumps([{"question": "q?", "options": ["a", "b"], "answer": "A"}]))
    assert load_records(f"jsonl@{json_path}")[0].gold == "A"


def test_export_round_trip(tmp_path, medqa_test):
    out = tmp_path / "out.jsonl"
    records = medqa_test[:25]
    assert save_records(records, out) == 25
    back = load_records(f"jsonl@{out}")
    assert [r.to_dict() for r in back] == [r.to_dict() for r in records]
    assert MCQRecord.from_dict(records[0].to_dict()) == records[0]


# --- bad rows ------------------------------------------------------------------------------------------------------
GOOD = {"question": "Which?", "options": ["a", "b", "c"], "answer": "A"}
BAD_ROWS = [
    ({"question": "Which?", "options": ["a", "b"]}, "missing answer"),
    (
        {"question": "Which?", "options": ["a", "b"], "answer": "D"},
        "gold letter 'D' is not among the options A, B",
    ),
    ({"question": "  ", "options": ["a", "b"], "answer": "A"}, "empty question"),
    ({"question": "Which?", "options": ["a"], "answer": "A"}, "1 option"),
    ({"question": "Which?", "options": [str(i) for i in range(11)], "answer": "A"}, "11 options"),
    ({"question": "Which?", "options": ["a", ""], "answer": "A"}, "option B is empty"),
    ({"question": "Which?", "options": {"A": "a", "C": "c"}, "answer": "A"}, "contiguous"),
    ({"question": "Which?", "options": ["a", "b"], "answer": "zebra"}, "neither an option letter"),
    ('{"question": "Which?", "options": ["a", "b"], "answer": ', "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
]


@pytest.mark.parametrize("bad, message", BAD_ROWS)
def test_bad_row_names_file_and_line(tmp_path, bad, message):
    path = write_lines(tmp_path / "bad.jsonl", [GOOD, GOOD | {"id": "x"}, bad, GOOD])
    with pytest.raises(DataError) as info:
        load_records(f"jsonl@{path}")
    text = str(info.value)
    assert f"{path}: line 3: " in text and message in text and "--skip-invalid" in text
    report = LoadReport()
    records = load_records(f"jsonl@{path}", DataOptions(skip_invalid=True), report=report)
    assert len(records) == 3 and report.n_skipped == 1 and report.skipped[0][0] == f"{path}: line 3"


def test_duplicate_ids(tmp_path, caplog):
    path = write_lines(
        tmp_path / "dup.jsonl",
        [
            GOOD | {"id": "a"},
            GOOD | {"id": "b"},
            "",
            GOOD | {"id": "a"},
            GOOD | {"id": "b"},
            GOOD | {"id": "c"},
        ],
    )
    with pytest.raises(DataError, match=r"dup.jsonl: line 4: duplicate id 'a' \(first seen at line 1\)"):
        load_records(f"jsonl@{path}")
    report = LoadReport()
    with caplog.at_level(logging.WARNING, logger="medrlvr_lite.data"):
        records = load_records(f"jsonl@{path}", DataOptions(skip_invalid=True), report=report)
    assert [r.id for r in records] == ["a", "b", "c"]
    assert report.n_skipped == 2 and report.rows_read == 5 and report.records == 3
    assert "skipped 2 invalid row(s)" in caplog.text


def test_bad_rows_in_real_formats(tmp_path):
    rows = raw_jsonl(DATA / "medqa" / "test.jsonl")[:4]
    rows[1] = {**rows[1], "answer_idx": "E"}
    rows[2] = {**rows[2], "answer": "something else entirely"}
    path = write_lines(tmp_path / "medqa_bad.jsonl", rows)
    with pytest.raises(
        DataError, match=r"medqa_bad.jsonl: line 2: gold letter 'E' is not among the options A, B, C, D"
    ):
        load_records(f"medqa:test@{path}")
    report = LoadReport()
    assert len(load_records(f"medqa:test@{path}", DataOptions(skip_invalid=True), report=report)) == 2
    assert "disagrees" not in report.skipped[1][1] and "answer text is" in report.skipped[1][1]
    mcq = raw_jsonl(DATA / "medmcqa" / "dev.jsonl")[:3]
    mcq[2] = {**mcq[2], "cop": 5}
    path = write_lines(tmp_path / "medmcqa.jsonl", mcq)
    with pytest.raises(DataError, match=r"medmcqa.jsonl: line 3: cop 5 is out of range 1..4"):
        load_records(f"medmcqa:dev@{path}")
    pq = {"1": {"QUESTION": "q?", "CONTEXTS": ["c"], "LABELS": ["L"], "final_decision": "perhaps"}}
    path = tmp_path / "ori_pqal.json"
    path.write_text(json.dumps(pq))
    with pytest.raises(DataError, match=r"ori_pqal.json: key '1': final_decision 'perhaps'"):
        load_records(f"pubmedqa:all@{path}")


def test_all_rows_invalid_and_empty_file(tmp_path):
    path = write_lines(tmp_path / "allbad.jsonl", [{"question": "q"}, {"question": "r"}])
    with pytest.raises(DataError, match="all 2 rows were invalid"):
        load_records(f"jsonl@{path}", DataOptions(skip_invalid=True))
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="the source is empty"):
        load_records(f"jsonl@{tmp_path / 'empty.jsonl'}")


def test_nota_on_ten_options_is_a_row_error(tmp_path):
    path = write_lines(
        tmp_path / "ten.jsonl", [{"question": "q", "options": list("abcdefghij"), "answer": "A"}]
    )
    with pytest.raises(DataError, match="ten.jsonl: line 1: cannot add 'None of the above'"):
        load_records(f"jsonl@{path}", DataOptions(add_none_of_the_above=True))


# --- specs ---------------------------------------------------------------------------------------------------------
def test_specs_and_unknown_dataset(tmp_path):
    assert parse_spec("medqa:dev@x/y.jsonl") == data_mod.Spec("medqa", "dev", "x/y.jsonl")
    assert parse_spec("MMLU-Pro") == data_mod.Spec("mmlu_pro")
    assert parse_spec("my.jsonl") == data_mod.Spec("jsonl", None, "my.jsonl")
    with pytest.raises(DataError, match="unknown dataset 'medqb'.*known datasets: medqa, medqa5, mmlu_pro"):
        load_records("medqb:test")
    with pytest.raises(DataError, match="nothing after '@'"):
        parse_spec("medqa@")
    with pytest.raises(DataError, match="jsonl needs a file"):
        load_records("jsonl")
    with pytest.raises(DataError, match="file or folder not found"):
        load_records(f"medqa:test@{tmp_path / 'missing.jsonl'}")
    with pytest.raises(DataError, match="unknown split 'holdout'"):
        load_records(f"medqa:holdout@{DATA / 'medqa'}")
    with pytest.raises(DataError, match="no file for split 'train'"):
        load_records(f"medqa:train@{DATA / 'medqa'}")
    assert set(DATASETS) == {"medqa", "medqa5", "mmlu_pro", "medmcqa", "pubmedqa", "jsonl", "smoke"}


def test_limit_and_describe(medqa_test):
    records = load_records(f"medqa:test@{DATA / 'medqa'}", DataOptions(limit=10))
    assert [r.id for r in records] == [r.id for r in medqa_test[:10]]
    stats = describe(medqa_test)
    assert stats["records"] == 1273 and stats["option_counts"] == {4: 1273}
    assert stats["gold_letters"] == {"A": 353, "B": 309, "C": 346, "D": 265}
    assert stats["subjects"] == {"step1": 679, "step2&3": 594}


# --- CLI -----------------------------------------------------------------------------------------------------------
def test_cli_list():
    result = invoke("data", "list")
    assert result.exit_code == 0, result.output
    for name, info in DATASETS.items():
        assert name in result.output
        if info.hub_id:
            assert info.hub_id in result.output


def test_cli_inspect():
    result = invoke("data", "inspect", f"medqa:test@{DATA / 'medqa' / 'test.jsonl'}", "--none-of-the-above")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "1273" in out and "step2&3" in out and "594" in out
    assert "None of the above" in out and "<- gold" in out and "sample: id test-00000" in out
    result = invoke("data", "inspect", "smoke", "--shuffle-seed", "1", "--limit", "5", "--sample", "2")
    assert result.exit_code == 0 and "sample: id smoke-003" in result.output


def test_cli_inspect_skip_invalid_and_errors(tmp_path):
    path = write_lines(
        tmp_path / "bad.jsonl", [GOOD, {"question": "q", "options": ["a", "b"]}, GOOD, "{oops"]
    )
    result = invoke("data", "inspect", f"jsonl@{path}")
    assert result.exit_code == 1
    assert f"{path}: line 2: missing answer" in result.output
    result = invoke("data", "inspect", f"jsonl@{path}", "--skip-invalid")
    assert result.exit_code == 0, result.output
    assert "skipped 2 invalid row(s)" in result.output and f"{path}: line 4: not valid JSON" in result.output
    result = invoke("data", "inspect", "nosuchset")
    assert result.exit_code == 1 and "known datasets: medqa" in result.output


def test_cli_export_round_trip(tmp_path):
    out = tmp_path / "smoke.jsonl"
    result = invoke("data", "export", "smoke", str(out), "--shuffle-seed", "5", "--none-of-the-above")
    assert result.exit_code == 0, result.output
    assert f"wrote 40 records to {out}" in result.output
    lines = raw_jsonl(out)
    assert len(lines) == 40 and set(lines[0]) == {
        "id",
        "question",
        "options",
        "gold",
        "source",
        "split",
        "subject",
    }
    expected = load_records("smoke", DataOptions(shuffle_options_seed=5, add_none_of_the_above=True))
    assert load_records(f"jsonl@{out}") == expected
    assert all(r.source == "smoke" and r.options[r.letters[-1]] == NONE_OF_THE_ABOVE for r in expected)


def test_bundled_smoke_ood_set_is_a_different_format():
    from medrlvr_lite.data import load_records

    ood = load_records("smoke:ood")
    assert len(ood) == 12 and all(len(r.options) == 3 for r in ood)
    assert {r.gold for r in ood} == {"A", "B", "C"}
    assert not {r.id for r in ood} & {r.id for r in load_records("smoke")}
