"""Your own intents as --data: CSV / JSONL loading, the stratified split, clear errors, and a package built from them."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from app.package import Manifest, read_manifest
from compression.calibrate import NO_OOS_OBJECTIVE, CalibrateConfig, choose_rule
from compression.cli import main
from compression.data import DataError, load_data, stratified_split
from tests.app.conftest import running_app

# Words of the tiny base model's vocabulary (tests/conftest.py), so that the tiny model can learn them.
WITH_OOS = """text,label,split
what is my balance,balance,train
how much is in my account,balance,train
my account balance please,balance,val
the balance of my account,balance,test
transfer money to me,transfer,train
send the money now,transfer,train
can you send money,transfer,validation
please transfer the money,transfer,test
is it sunny now,weather,train
rain for me now,weather,train
what is the weather,weather,Val
is it sunny,weather,TEST
how is the stock now,out_of_scope,train
the dow,out_of_scope,train
a movie for me,out_of_scope,validation
what is the stock,out_of_scope,test
"""
NO_OOS = """text,label
what is my balance,balance
how much is in my account,balance
my account balance please,balance
the balance of my account,balance
transfer money to me,transfer
send the money now,transfer
can you send money,transfer
please transfer the money,transfer
is it sunny now,weather
rain for me now,weather
what is the weather,weather
is it sunny,weather
"""


def write(path: Path, text: str | bytes) -> Path:
    """Write a data file and return its path."""
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def fail_line(argv: list[str]) -> str:
    """The message a CLI run ends with; it must be one line (no traceback)."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    message = exc.value.code
    assert isinstance(message, str)
    assert "\n" not in message
    return message


# --- loading -------------------------------------------------------------------------------------------------


def test_csv_with_a_split_column(tmp_path: Path) -> None:
    data = load_data(str(write(tmp_path / "mine.csv", WITH_OOS)), oos_label="out_of_scope")
    assert data.train.texts[:2] == ["what is my balance", "how much is in my account"]
    assert (len(data.train), len(data.validation), len(data.test)) == (8, 4, 4)  # val, Val and validation all count
    assert data.test.labels == ["balance", "transfer", "weather", "out_of_scope"]
    assert data.labels == ["balance", "out_of_scope", "transfer", "weather"]
    assert (data.oos_label, data.domains) == ("out_of_scope", {})


def test_jsonl_matches_csv_and_reads_quoted_and_bom_csv(tmp_path: Path) -> None:
    rows = [line.split(",") for line in WITH_OOS.strip().splitlines()[1:]]
    jsonl = "\n".join(json.dumps({"text": t, "label": lab, "split": s}) for t, lab, s in rows) + "\n\n"
    from_jsonl = load_data(str(write(tmp_path / "mine.jsonl", jsonl)), oos_label="out_of_scope")
    from_csv = load_data(str(write(tmp_path / "mine.csv", WITH_OOS)), oos_label="out_of_scope")
    assert (from_jsonl.train, from_jsonl.validation, from_jsonl.test) == (
        from_csv.train,
        from_csv.validation,
        from_csv.test,
    )
    # A spreadsheet export: BOM, capitalised header, a quoted text with a comma and a line break.
    quoted = '\ufeffText , LABEL\n"hi, there\nfriend",a\nb1,b\nb2,b\nb3,b\na2,a\na3,a\n'
    data = load_data(str(write(tmp_path / "sheet.csv", quoted)))
    assert "hi, there\nfriend" in data.train.texts + data.validation.texts + data.test.texts
    assert data.labels == ["a", "b", "oos"]  # no oos rows: the fallback label is still a class


def test_stratified_split_is_deterministic_stratified_and_disjoint() -> None:
    counts = {"two": 2, "three": 3, "ten": 10, "many": 25, "hundred": 100}
    labels = [label for label, n in counts.items() for _ in range(n)]
    texts = [f"{label} {i}" for i, label in enumerate(labels)]
    train, val, test = stratified_split(texts, labels)
    again = stratified_split(texts, labels)
    assert (train, val, test) == again
    assert stratified_split(texts, labels, seed=1) != again  # the seed, not the file order, picks the rows
    expected = {"two": (1, 1, 0), "three": (1, 1, 1), "ten": (8, 1, 1), "many": (19, 3, 3), "hundred": (80, 10, 10)}
    for label, shares in expected.items():
        assert tuple(Counter(s.labels)[label] for s in (train, val, test)) == shares, label
    pieces = [set(split.texts) for split in (train, val, test)]
    assert set.union(*pieces) == set(texts)
    assert sum(map(len, pieces)) == len(texts)  # every text in exactly one split
    for split in (train, val, test):  # labels stay with their texts, in file order
        assert all(t.startswith(f"{lab} ") for t, lab in zip(split.texts, split.labels, strict=True))
        assert split.texts == sorted(split.texts, key=texts.index)


def test_csv_without_split_column_uses_the_stratified_split(tmp_path: Path) -> None:
    data = load_data(str(write(tmp_path / "mine.csv", NO_OOS)))
    rows = [line.split(",") for line in NO_OOS.strip().splitlines()[1:]]
    expected = stratified_split([t for t, _ in rows], [lab for _, lab in rows])
    assert (data.train, data.validation, data.test) == expected
    assert [len(s) for s in expected] == [6, 3, 3]


def test_domains_file_is_read_and_checked(tmp_path: Path) -> None:
    csv = str(write(tmp_path / "mine.csv", NO_OOS))
    good = write(tmp_path / "domains.json", json.dumps({"banking": ["balance", "transfer"], "weather": ["weather"]}))
    assert load_data(csv, domains_file=good).domains == {"banking": ["balance", "transfer"], "weather": ["weather"]}
    for content, fragment in [
        (json.dumps({"banking": ["balance", "loans"]}), "not labels of the data: loans"),
        (json.dumps(["balance"]), "must map each domain to a list of intents"),
        ("{not json", "is not valid JSON"),
    ]:
        bad = write(tmp_path / "bad-domains.json", content)
        message = fail_line(["--data", csv, "--domains", str(bad), "finetune"])
        assert fragment in message
        assert "error: --domains: " in message  # the option to fix, not --data
    assert "error: --data: " in fail_line(["--data", str(tmp_path / "none.csv"), "--domains", str(good), "finetune"])


CSV_ERRORS = [
    ("mine.csv", "sentence,label\nhi,a\n", "has no 'text' column (header: sentence, label)"),
    ("mine.csv", "text,intent\nhi,a\n", "has no 'label' column"),
    ("mine.jsonl", '{"text": "hi", "label": "a"}\n{"text": "yo"}\n', "mine.jsonl:2: no 'label' field"),
    ("mine.csv", "text,label\nhi,a\nyo,\n", "mine.csv:3: empty label"),
    ("mine.csv", "text,label\nhi,a\n  ,a\n", "mine.csv:3: empty text"),
    ("mine.jsonl", '{"text": "hi", "label": ""}\n', "mine.jsonl:1: empty label"),
    ("mine.csv", "text,label\nhi,a\nyo,a\nhey,a\nlonely one,b\n", "single example: b"),
    ("mine.csv", "text,label\nh1,a\nh2,a\ny1,b\ny2,b\n", "the test split has no rows"),
    ("mine.csv", "text,label,split\nhi,a,train\nyo,a,validation\n", "the test split has no rows"),
    ("mine.csv", "text,label,split\nhi,a,train\nyo,a,dev\n", "mine.csv:3: unknown split 'dev'"),
    ("mine.csv", "text,label,split\nhi,a,train\nyo,b,val\nhey,a,test\n", "in validation/test but not in train: b"),
    ("mine.csv", b"text,label\ncaf\xe9,a\n", "it is not UTF-8 text"),
    ("mine.csv", "", "is empty; it needs a header line"),
    ("mine.csv", "text,label\n", "has no data rows"),
    ("mine.jsonl", '{"text": "hi", "label": "a"}\n{"text": "yo", \n', "mine.jsonl:2: not valid JSON"),
    ("mine.csv", "text,label\nh1,oos\nh2,oos\nh3,oos\n", "at least one in-scope intent"),
    ("mine.txt", "text,label\nhi,a\n", "unknown data file extension '.txt'"),
    ("mine.csv", "text,label\nhi,a\na pizza, large,a\n", "mine.csv:3: 3 fields where the header has 2; a text that"),
    ("mine.csv", "text;label\nhi;a\n", "the file seems to be separated by ';': save it comma-separated"),
    ("mine.csv", "text\tlabel\nhi\ta\n", "the file seems to be separated by '\\t'"),
    ("mine.json", "", "mine.json is not valid JSON (Expecting value"),
    (
        "mine.json",
        json.dumps({k: [] for k in ("train", "val", "test", "oos_val", "oos_test")} | {"oos_train": 1}),
        'oos_train[0] is 1; each row of an oos-eval file is a ["text", "label"] pair',
    ),
    (
        "mine.json",
        json.dumps(
            {k: [] for k in ("val", "test", "oos_train", "oos_val", "oos_test")}
            | {"train": [["hi", "a"], {"text": "yo", "intent": "a"}]}
        ),
        'train[1] is {"text": "yo", "intent": "a"}; each row',
    ),
    (
        "mine.json",
        json.dumps({k: [] for k in ("val", "test", "oos_train", "oos_val", "oos_test")} | {"train": [["hello"]]}),
        'train[0] is ["hello"]',
    ),
]


@pytest.mark.parametrize(("name", "content", "fragment"), CSV_ERRORS, ids=[c[2][:40] for c in CSV_ERRORS])
def test_bad_data_files_end_the_cli_with_one_actionable_line(
    tmp_path: Path, name: str, content: str | bytes, fragment: str
) -> None:
    path = write(tmp_path / name, content)
    with pytest.raises(ValueError, match=re.escape(fragment)):  # the library raises; the CLI makes it one line
        load_data(str(path))
    message = fail_line(["--data", str(path), "finetune"])
    assert message.startswith("python -m compression: error: --data: ")
    assert fragment in message


def test_missing_files_and_labels_are_one_line_too(tmp_path: Path, clinc_json: Path) -> None:
    assert "data file not found" in fail_line(["--data", str(tmp_path / "nope.csv"), "finetune"])
    assert "data file not found" in fail_line(["--data", str(tmp_path / "nope.json"), "finetune"])
    assert "has no 'none' rows; its oos_* rows are labelled 'oos'" in fail_line(
        ["--data", str(clinc_json), "--oos-label", "none", "finetune"]
    )
    assert "must not be empty" in fail_line(["--data", str(clinc_json), "--oos-label", " ", "finetune"])
    with pytest.raises(DataError, match="single example"):
        load_data(str(write(tmp_path / "one.csv", "text,label\nhi,a\nyo,b\nhey,b\n")))


OTHER_INTENTS = "text,label\n" + "".join(
    f"{w} {i},{lab}\n"
    for i in range(12)
    for w, lab in [
        ("wake me at", "alarm"),
        ("play some", "music"),
        ("what is my balance", "balance"),
        ("tell me a joke", "oos"),
    ]
)
# Every command that runs a package on --data, with the package in each of its places.
PACKAGE_COMMANDS = [
    ("compression", ["evaluate", "--package", "{pkg}"]),
    ("compression", ["calibrate", "--package", "{pkg}"]),
    ("compression", ["finish", "--package", "{pkg}"]),
    ("compression", ["benchmark", "--packages", "{pkg}", "--output-dir", "{tmp}/reports"]),
    ("compression", ["benchmark", "--artifacts", "{root}", "--output-dir", "{tmp}/reports"]),
    ("compression", ["distill", "--teacher", "{pkg}", "--student", "layers:0,1", "--output-dir", "{tmp}/student"]),
    ("compression", ["prune", "--model", "{pkg}", "--output-dir", "{tmp}/pruned"]),
    ("research", ["frontier", "{pkg}"]),
    ("research", ["feature-scores", "{pkg}"]),
    ("research", ["seeds", "--teacher", "{pkg}", "--output-dir", "{tmp}/seeds"]),
]


@pytest.mark.parametrize(
    ("cli", "argv"), PACKAGE_COMMANDS, ids=[" ".join(a[:2]).replace(" {pkg}", "") for _, a in PACKAGE_COMMANDS]
)
def test_a_package_on_data_with_other_intents_ends_with_one_line(
    package_copy: Path, tmp_path: Path, cli: str, argv: list[str]
) -> None:
    from research.cli import main as research_main

    data = write(tmp_path / "mine.csv", OTHER_INTENTS)
    before = {p.name: p.stat().st_mtime_ns for p in package_copy.iterdir()}
    args = [a.format(pkg=package_copy, tmp=tmp_path, root=package_copy.parent) for a in argv]
    with pytest.raises(SystemExit) as exc:
        (main if cli == "compression" else research_main)(["--data", str(data), *args])
    message = exc.value.code
    assert isinstance(message, str)
    assert "\n" not in message
    assert message.startswith(f"python -m {cli}: error: --data {data} has 2 label(s) that ")
    assert "('alarm', 'music')" in message
    assert "its manifest: synthetic" in message  # where the package's own data came from
    # Nothing was trained, written or changed before the command stopped.
    assert {p.name: p.stat().st_mtime_ns for p in package_copy.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.csv", "package"]


def test_the_message_names_the_out_of_scope_labels_when_they_differ(package_copy: Path, tmp_path: Path) -> None:
    known = OTHER_INTENTS.replace(",alarm", ",balance").replace(",music", ",balance")
    data = write(tmp_path / "mine.csv", known.replace(",oos", ",none"))
    message = fail_line(["--data", str(data), "--oos-label", "none", "evaluate", "--package", str(package_copy)])
    assert "has 1 label(s)" in message
    assert "its out-of-scope label is 'oos', the data's 'none'" in message


def test_clinc150_keeps_its_domains_unless_a_file_is_given(clinc_json: Path, tmp_path: Path) -> None:
    assert load_data(str(clinc_json)).domains["banking"] == ["balance", "transfer"]
    mine = write(tmp_path / "domains.json", json.dumps({"money": ["balance", "transfer"]}))
    assert load_data(str(clinc_json), domains_file=mine).domains == {"money": ["balance", "transfer"]}


# --- calibration without oos examples -------------------------------------------------------------------------


def test_calibration_without_oos_keeps_the_in_scope_budget(caplog: pytest.LogCaptureFixture) -> None:
    manifest = Manifest(name="m", labels=["a", "b", "oos"])
    conf = np.arange(40.5, 100, 1.0) / 100  # 60 in-scope rows, all right, msp 0.405 .. 0.995
    probs = np.stack([conf, (1 - conf) / 2, (1 - conf) / 2], axis=1)
    gold = ["a"] * len(conf)
    for objective in ("recall-at-loss", "balanced", "accuracy"):
        cfg = CalibrateConfig(objective=objective, max_in_scope_loss=0.05, scores=("msp", "energy"))
        score, threshold, s, candidates = choose_rule(np.log(probs), gold, manifest, cfg)
        # 3 of 60 rows (5%) may be refused: 0.405, 0.415, 0.425 < 0.43; a 4th (0.44) would cost 6.7%.
        assert (score, threshold) == ("msp", 0.43), objective
        assert s["in_scope_accuracy"] == pytest.approx(57 / 60)
        assert math.isnan(s["oos_recall"])
        assert candidates["energy"]["validation_scores"]["in_scope_accuracy"] >= 0.95 - 1e-9
    cfg = CalibrateConfig(max_in_scope_loss=0.05, scores=("energy", "msp"))
    assert choose_rule(np.log(probs), gold, manifest, cfg)[0] == "energy"  # nothing to compare: the first is kept
    assert "cannot be measured" in caplog.text
    assert NO_OOS_OBJECTIVE in caplog.text


# --- end to end: train on a CSV, serve the package ------------------------------------------------------------

TRAIN = ["--epochs", "40", "--learning-rate", "5e-3", "--batch-size", "4", "--num-threads", "2"]


def refuse_everything(manifest: Manifest) -> float:
    """An INTENT_OOS_THRESHOLD that no query's score reaches, on the package's score's scale."""
    return 1.0 if manifest.oos_score == "msp" else 1e9


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_build_on_a_csv_with_oos_rows_and_serve_it(tiny_base: Path, tmp_path: Path, anyio_backend: str) -> None:
    csv = write(tmp_path / "intents.csv", WITH_OOS)
    domains = write(tmp_path / "domains.json", json.dumps({"banking": ["balance", "transfer"], "weather": ["weather"]}))
    out = tmp_path / "mine"
    argv = ["--data", str(csv), "--oos-label", "out_of_scope", "--domains", str(domains), "build"]
    assert main([*argv, "--base-model", str(tiny_base), "--output-dir", str(out), "--name", "mine", *TRAIN]) == 0
    manifest = read_manifest(out)
    assert manifest.oos_label == "out_of_scope"
    assert manifest.labels == ["balance", "out_of_scope", "transfer", "weather"]
    assert manifest.domains == {"banking": ["balance", "transfer"], "weather": ["weather"]}
    assert manifest.source["calibration"]["objective"] == "recall-at-loss"
    assert manifest.source["calibration"]["validation_oos_queries"] == 1
    async with running_app(out, "onnx-int8") as (client, _):
        answer = (await client.post("/classify", json={"text": "is the weather sunny"})).json()
        info = (await client.get("/v1/model")).json()
    assert (answer["intent"], answer["oos"], answer["fallback"]) == ("weather", False, None)
    assert (info["oos_label"], info["domains"]) == ("out_of_scope", ["banking", "weather"])
    async with running_app(out, "onnx-int8", oos_threshold=refuse_everything(manifest)) as (client, _):
        refused = (await client.post("/classify", json={"text": "is the weather sunny"})).json()
    assert (refused["intent"], refused["oos"]) == ("out_of_scope", True)
    assert refused["fallback"]["message"] == "Sorry, I can't help with that. I can help with banking and weather."


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_finetune_on_a_csv_without_oos_rows_and_serve_it(
    tiny_base: Path, tmp_path: Path, anyio_backend: str, capsys: pytest.CaptureFixture
) -> None:
    csv = str(write(tmp_path / "intents.csv", NO_OOS))
    out = tmp_path / "mine"
    args = ["--base-model", str(tiny_base), "--output-dir", str(out), *TRAIN]
    assert main(["--data", csv, "finetune", *args]) == 0
    assert main(["--data", csv, "calibrate", "--package", str(out)]) == 0
    assert main(["--data", csv, "evaluate", "--package", str(out), "--backends", "torch", "--latency-runs", "3"]) == 0
    assert "| torch | " in capsys.readouterr().out
    manifest = read_manifest(out)
    assert manifest.oos_label == "oos"
    assert manifest.labels == ["balance", "oos", "transfer", "weather"]  # the fallback is a class with no examples
    calibration = manifest.source["calibration"]
    assert (calibration["objective"], calibration["validation_oos_queries"]) == (NO_OOS_OBJECTIVE, 0)
    # Not the no-op rule: a threshold that refuses unsure queries, yet no right validation answer.
    assert (manifest.oos_score, calibration["validation_scores"]["in_scope_accuracy"]) == ("msp", 1.0)
    assert manifest.oos_threshold > 0.5
    assert manifest.metrics["torch"].oos_recall is None  # not available, not 0 or NaN
    assert manifest.metrics["torch"].in_scope_accuracy is not None
    async with running_app(out, "torch") as (client, _):
        answer = (await client.post("/classify", json={"text": "what is my balance now"})).json()
        info = (await client.get("/v1/model")).json()
    assert (answer["intent"], answer["oos"]) == ("balance", False)
    assert info["oos_label"] == "oos"
    assert info["metrics"]["torch"]["oos_recall"] is None
    async with running_app(out, "torch", oos_threshold=refuse_everything(manifest)) as (client, _):
        refused = (await client.post("/classify", json={"text": "what is my balance now"})).json()
    assert (refused["intent"], refused["oos"]) == ("oos", True)
    assert refused["fallback"] == {"message": "Sorry, I can't help with that.", "domains": []}


# --- data that trains but misleads: warnings, and repeats kept once ------------------------------------------


def test_a_trailing_empty_field_is_not_an_extra_column(tmp_path: Path) -> None:
    plain = load_data(str(write(tmp_path / "plain.csv", NO_OOS)))
    trailing = NO_OOS.replace("\n", ",\n").replace("text,label,", "text,label")
    assert load_data(str(write(tmp_path / "trailing.csv", trailing))).train == plain.train


def test_repeated_rows_are_kept_once_so_no_text_is_trained_on_and_tested(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plain = load_data(str(write(tmp_path / "plain.csv", NO_OOS)))
    rows = NO_OOS.strip().splitlines()
    repeated = "\n".join([*rows, *rows[1:], "What is  my BALANCE,balance"]) + "\n"  # every row twice, once re-cased
    with caplog.at_level("WARNING", logger="compression"):
        data = load_data(str(write(tmp_path / "repeated.csv", repeated)))
    assert (data.train, data.validation, data.test) == (plain.train, plain.validation, plain.test)
    assert "13 row(s) repeat an earlier row's text and label" in caplog.text


def test_contradictions_overlaps_and_case_clashes_are_warned(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from compression.data.splits import data_warnings

    rows = WITH_OOS.replace("the dow,out_of_scope,train", "is it sunny now,Weather,train")  # a clash twice over
    rows = rows.replace("is it sunny,weather,TEST", "what is my balance,balance,test")  # a test text seen in train
    with caplog.at_level("WARNING", logger="compression"):
        data = load_data(str(write(tmp_path / "mine.csv", rows)), oos_label="out_of_scope")
    warned = data_warnings(data)
    assert len(warned) == 3, warned
    assert warned[0].startswith("1 row(s) repeat a text with another label, e.g. 'is it sunny now' as 'weather' and")
    assert warned[1] == "1 of 4 test texts also appear in train: test figures will be optimistic"
    assert warned[2] == "labels that differ only in case are different intents: 'Weather' / 'weather'"
    assert all(w in caplog.text for w in warned)
    assert data_warnings(load_data(str(write(tmp_path / "clean.csv", WITH_OOS)), oos_label="out_of_scope")) == []


def test_case_clash_with_the_oos_label_says_which_is_out_of_scope(tmp_path: Path) -> None:
    from compression.data.splits import data_warnings

    data = load_data(str(write(tmp_path / "mine.csv", WITH_OOS.replace(",out_of_scope,", ",OOS,", 1))))
    assert "'OOS' / 'oos'" in data_warnings(data)[-1]
    assert data_warnings(data)[-1].endswith("only 'oos' is out of scope")


def test_an_oos_eval_file_of_your_own_does_not_borrow_clinc150s_domains(
    clinc_json: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import compression.data.clinc as clinc

    # CLINC150 where the default looks for it, domains.json beside it; your own oos-eval file elsewhere.
    monkeypatch.setattr(clinc, "LOCAL_CANDIDATES", (clinc_json,))
    own = {"train": [], "val": [], "test": [], "oos_train": [], "oos_val": [], "oos_test": []}
    for key, n in (("train", 4), ("val", 2), ("test", 2)):
        own[key] = [
            [f"{w} pizza {i}", label] for i in range(n) for w, label in (("order a", "order"), ("track my", "track"))
        ]
    mine = tmp_path / "own" / "pizza.json"
    mine.parent.mkdir()
    mine.write_text(json.dumps(own))
    assert load_data(str(mine)).domains == {}  # not CLINC150's banking, travel, ...
    # A domains.json beside it that names other intents (a copied CLINC150 one) is not used either.
    (mine.parent / "domains.json").write_text((clinc_json.parent / "domains.json").read_text())
    with caplog.at_level("WARNING", logger="compression"):
        assert load_data(str(mine)).domains == {}
    assert "lists intents that are not labels of the data" in caplog.text
    (mine.parent / "domains.json").write_text(json.dumps({"pizza": ["order", "track"]}))
    assert load_data(str(mine)).domains == {"pizza": ["order", "track"]}
    assert load_data(str(clinc_json)).domains["banking"] == ["balance", "transfer"]  # CLINC150 keeps its own


def test_data_options_are_taken_after_the_command_name_too() -> None:
    from compression.cli import build_parser

    parser = build_parser()
    before = parser.parse_args(["--data", "a.csv", "--oos-label", "none", "-v", "evaluate"])
    after = parser.parse_args(["evaluate", "--data", "a.csv", "--oos-label", "none", "-v"])
    for args in (before, after):
        assert (args.data, args.oos_label, args.domains, args.verbose) == ("a.csv", "none", None, True)
    mixed = parser.parse_args(["--data", "a.csv", "evaluate", "--domains", "d.json"])
    assert (mixed.data, mixed.oos_label, str(mixed.domains)) == ("a.csv", "oos", "d.json")
    assert parser.parse_args(["evaluate"]).data is None


def test_without_data_a_command_reads_the_file_the_package_was_built_from(
    package_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from app.package import write_manifest
    from compression.cli import build_parser
    from compression.commands.common import built_from

    write(tmp_path / "mine.csv", NO_OOS)
    manifest = read_manifest(package_copy)
    manifest.source["dataset"] = "mine.csv"  # recorded as given, relative to where the build ran
    write_manifest(package_copy, manifest)
    args = build_parser().parse_args(["evaluate", "--package", str(package_copy)])
    monkeypatch.chdir(tmp_path)
    with caplog.at_level("INFO", logger="compression"):
        assert built_from(args, package_copy) == "mine.csv"
    assert "--data not given: mine.csv, the data" in caplog.text
    assert built_from(build_parser().parse_args(["--data", "x.csv", "evaluate"]), package_copy) == "x.csv"
    monkeypatch.chdir(package_copy)  # where mine.csv is not
    message = fail_line(["evaluate", "--package", str(package_copy)])
    assert message == (
        f"python -m compression: error: {package_copy} was built from mine.csv, which is not there from this "
        "folder; pass --data with that file"
    )
    for recorded in ("data_oos_plus.json", "clinc_oos", "synthetic", "banking77"):  # CLINC150, or a dataset name
        manifest.source["dataset"] = recorded
        write_manifest(package_copy, manifest)
        assert built_from(args, package_copy) is None


def test_packages_built_from_different_data_need_data_named(package_copy: Path, tiny_package: Path) -> None:
    """The benchmark scored every package on the first one's data: a CLINC150 package on 4 queries of a CSV."""
    from app.package import write_manifest
    from compression.cli import build_parser
    from compression.commands.common import built_from

    manifest = read_manifest(package_copy)
    manifest.source["dataset"] = "mine.csv"
    write_manifest(package_copy, manifest)
    args = build_parser().parse_args(["benchmark"])
    with pytest.raises(SystemExit, match=r"built from different data \(.*mine\.csv, .*synthetic\); pass --data"):
        built_from(args, package_copy, tiny_package)
    assert (
        built_from(build_parser().parse_args(["--data", "x.csv", "benchmark"]), package_copy, tiny_package) == "x.csv"
    )
    assert built_from(args, tiny_package, tiny_package) is None  # the same data: as before
