"""CLINC150 loading from a local oos-eval JSON and from the HF dataset layout."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from compression.data import load_clinc


def test_local_json(clinc_json: Path) -> None:
    data = load_clinc(str(clinc_json))
    assert (len(data.train), len(data.validation), len(data.test)) == (240, 60, 60)
    assert data.labels == sorted(data.labels)
    assert "oos" in data.labels
    assert data.train.labels.count("oos") == 40  # oos_train is merged into train
    assert data.domains["banking"] == ["balance", "transfer"]


def test_local_json_missing_keys(tmp_path: Path) -> None:
    bad = tmp_path / "data.json"
    bad.write_text(json.dumps({"train": []}))
    with pytest.raises(ValueError, match="missing keys"):
        load_clinc(str(bad))


def test_missing_file_is_actionable(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="pass --data"):
        load_clinc(str(tmp_path / "nope.json"))


def test_hf_dataset_uses_label_names_not_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    names = ["weather", "oos", "balance"]  # deliberately not sorted: ids must be mapped to names

    class FakeSplit(dict):
        features = types.MappingProxyType({"intent": types.SimpleNamespace(names=names)})

    def load_dataset(name: str, config: str) -> dict:
        assert (name, config) == ("clinc_oos", "plus")
        split = FakeSplit(text=["is it sunny", "dow jones", "my balance"], intent=[0, 1, 2])
        return {"train": split, "validation": split, "test": split}

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    data = load_clinc("clinc_oos")
    assert data.labels == ["balance", "oos", "weather"]
    assert data.train.labels == ["weather", "oos", "balance"]
