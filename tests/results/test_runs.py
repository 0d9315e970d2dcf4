"""Variant labels stay short, methods print under one set of display names, and a folder of
several results folders is read one comparable group at a time."""

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from gainbench.methods import METHODS
from gainbench.results.runs import (DISPLAY_NAMES, Run, compact_number, display_variant,
                                    label_variants, load_studies)

GOLDEN = Path(__file__).parent / "golden" / "runs"


def _run(method="lora", **config) -> Run:
    base = {"model": {"name": "m"}, "method": {"name": method}, "seed": 0,
            "sequence": {"name": "s", "order": ["a", "b"]}, "train": {}}
    for key, value in config.items():   # "train.lr": 1e-3 -> base["train"]["lr"]
        section, name = key.split(".")
        base[section] = {**base[section], name: value}
    return Run(Path(method), {"config": base}, pd.DataFrame())


def test_every_registered_method_has_a_display_name():
    assert set(METHODS) <= set(DISPLAY_NAMES)
    assert display_variant("gain_ffn") == "GAIN-FFN"
    assert display_variant("ia3 (lr=0.003)") == "(IA)³ (lr=0.003)"
    assert display_variant("my_method (x=1)") == "my_method (x=1)"   # unknown: unchanged


def test_compact_numbers():
    assert compact_number(3 * 1e-4) == "0.0003"      # 0.00030000000000000003 in JSON
    assert compact_number(2e-05) == "2e-5" and compact_number(1e6) == "1e6"
    assert compact_number(0.003) == "0.003" and compact_number(8192) == "8192"


def test_a_run_made_in_memory_is_named_by_its_recorded_id():
    assert Run(None, {"config": {}, "run_id": "r-1"}, pd.DataFrame()).run_id == "r-1"
    assert Run(Path("runs/r-2"), {"config": {}}, pd.DataFrame()).run_id == "r-2"   # no id recorded
    with pytest.raises(ValueError, match="run_id"):
        Run(None, {"config": {}}, pd.DataFrame()).run_id


DOMAINS = [f"domain_{c}" for c in "abcdefgh"]


def test_labels_name_only_the_differing_keys_shortly():
    runs = [_run(**{"train.lr": 2e-5, "sequence.order": DOMAINS[:3]}),
            _run(**{"train.lr": 3 * 1e-4, "sequence.order": DOMAINS}),
            _run(method="gain", **{"train.lr": 1e-3})]
    label_variants(runs)
    assert [r.variant for r in runs] == ["lora (lr=2e-5, order=3 domains)",
                                         "lora (lr=0.0003, order=8 domains)", "gain"]
    assert runs[1].variant_keys == {"lr": "0.0003", "order": "8 domains"}
    assert runs[1].label == "LoRA (lr=0.0003, order=8 domains)"


def test_orders_of_one_length_are_told_apart_by_a_hash():
    runs = [_run(**{"sequence.order": order}) for order in (DOMAINS, DOMAINS[::-1], DOMAINS[:2])]
    label_variants(runs)
    first, second, short = (r.variant_keys["order"] for r in runs)
    assert first.startswith("8 domains #") and second.startswith("8 domains #") and first != second
    assert short == "2 domains"   # one form per key
    assert all(len(r.variant) < 40 for r in runs)
    spelled = [_run(**{"sequence.order": order}) for order in (["a", "b"], ["b", "a"])]
    label_variants(spelled)
    assert [r.variant for r in spelled] == ["lora (order=[a,b])", "lora (order=[b,a])"]


def _copy_golden(root: Path, names: dict[str, list[str]]) -> None:
    runs = sorted(GOLDEN.iterdir())
    for folder, picks in names.items():
        for run in runs:
            if any(p in run.name for p in picks):
                shutil.copytree(run, root / folder / run.name)


def test_a_folder_of_results_folders_is_read_one_folder_at_a_time(tmp_path):
    _copy_golden(tmp_path, {"miniature": ["gain_ffn"], "sweep": ["lora"]})
    studies = load_studies([tmp_path])
    assert [s.slug for s in studies] == ["miniature", "sweep"]
    assert studies[0].title.startswith(f"{tmp_path / 'miniature'}: golden3 (3 domains: d1, d2, d3)")
    assert {r.method for r in studies[0].runs} == {"gain_ffn"}
    # named together, the folders are read together (an lr sweep beside an l2 sweep)
    together, = load_studies([tmp_path / "miniature", tmp_path / "sweep"])
    assert len(together.runs) == 5


def test_runs_of_different_sequences_never_share_a_group(tmp_path):
    _copy_golden(tmp_path, {"runs": ["gain_ffn"]})
    record = next((tmp_path / "runs").glob("*seed1*")) / "run.json"
    meta = json.loads(record.read_text())
    meta["config"]["sequence"]["order"] = ["d3", "d2", "d1"]
    record.write_text(json.dumps(meta))
    first, second = load_studies([tmp_path / "runs"])
    assert [r.domains for r in first.runs + second.runs] == [["d1", "d2", "d3"], ["d3", "d2", "d1"]]
    assert first.slug != second.slug and "d3, d2, d1" in second.title
    with pytest.raises(FileNotFoundError):
        load_studies([tmp_path / "nothing-here"])
