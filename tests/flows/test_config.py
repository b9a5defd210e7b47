"""The pipeline's configuration: YAML, overrides, validation before anything runs."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from flows.config import dump_config, load_config
from flows.params import MineParams
from tests.flows.test_cli import mersemi

CONFIG = """
dataset_dir: /data/mer2025
workspace: /data/ws
stages: [finalize, ingest, mine]
ingest: {dataset: mer25}
teacher: {backend: replay, answers: /data/answers.jsonl}
mine: {rounds: 4, policy: consensus, seeds: [0, 1]}
"""


def test_yaml_then_overrides_then_command_line(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text(CONFIG)
    params = load_config(path, ["mine.rounds=2", "finalize.rules=[]", "features.workers=1"],
                         workspace=tmp_path / "other", dataset_dir=None)
    assert params.stages == ("ingest", "mine", "finalize")              # pipeline order
    mine = params.stage("mine")
    assert isinstance(mine, MineParams) and mine.rounds == 2 and mine.seeds == (0, 1)
    assert mine.policy == "consensus" and mine.dataset == "mer25"        # the dataset follows ingest
    assert mine.workspace == tmp_path / "other"
    assert params.stage("features").workers == 1
    assert str(params.dataset_dir) == "/data/mer2025"
    assert load_config(None, [], **{k: v for k, v in params.model_dump().items()}) == params
    assert "rounds: 2" in dump_config(params)


@pytest.mark.parametrize("overrides, message", [
    (["mine.rounds=0"], "mine: 1 validation error for MineParams\nrounds\n  Input should be greater"),
    (["mine.policy=majority"], "String should match pattern"),
    (["mine.nonsense=1"], "Extra inputs are not permitted"),
    (["mine.workspace=/x"], "mine.workspace: set workspace once, at the top of the config"),
    (["stages=[ingest, sing]"], "unknown stage(s) sing"),
    (["finalize.rules=[flip]"], "unknown rule 'flip'"),
])
def test_bad_settings_are_refused_before_anything_runs(tmp_path, overrides, message):
    with pytest.raises((ValidationError, ValueError)) as err:
        load_config(None, overrides, dataset_dir=tmp_path, workspace=tmp_path / "ws")
    assert message in str(err.value)


def test_bad_files_name_the_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("mine: [unclosed")
    with pytest.raises(ValueError, match=f"config file {bad} is not valid YAML"):
        load_config(bad)
    bad.write_text("- a list")
    with pytest.raises(ValueError, match="expected a mapping at the top, got list"):
        load_config(bad)
    with pytest.raises(ValueError, match="expected SECTION.KEY=VALUE"):
        load_config(None, ["rounds"], dataset_dir=tmp_path, workspace=tmp_path)


def test_run_prints_the_config_and_refuses_bad_ones_with_exit_2(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text(CONFIG)
    code, _, text = mersemi("run", "--config", str(path), "--set", "mine.rounds=7", "--print-config")
    assert code == 0 and "rounds: 7" in text and "policy: consensus" in text
    code, _, text = mersemi("run", "--config", str(path), "--set", "mine.rounds=-1")
    assert code == 2 and "mine: 1 validation error for MineParams\nrounds" in text


def test_serve_validates_its_config_before_serving(tmp_path):
    code, _, text = mersemi("serve", "--config", str(tmp_path / "missing.yaml"))
    assert code == 2 and "does not exist" in text
    path = tmp_path / "x.yaml"
    path.write_text(CONFIG)
    code, _, text = mersemi("serve", "--config", str(path), "--set", "finalize.ensemble=median")
    assert code == 2 and "finalize" in text and "ensemble" in text
