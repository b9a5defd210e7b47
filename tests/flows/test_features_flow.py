"""`mersemi features` end to end through Prefect: artifacts, catalog, cached re-run."""

from __future__ import annotations

import pandas as pd

from storage.catalog import Catalog
from tests.flows.test_cli import mersemi


def test_features_extracts_then_reuses_everything(corpus_copy, tmp_path):
    ws = str(tmp_path / "ws")
    assert mersemi("ingest", str(corpus_copy), "-w", ws, "--json")[0] == 0
    code, first, text = mersemi("features", "-w", ws, "--json", "--workers", "1", "--shard-size", "10",
                                "--extractors", "audio_egemaps,text,au")
    assert code == 0, text
    assert set(first["extractors"]) == {"audio_egemaps", "text", "au"}
    for name, e in first["extractors"].items():
        assert e["clips"] == 24 and e["extracted"] == 24 and e["cached"] == 0, name
        assert e["ok"] + e["missing"] + e["error"] == 24
    assert first["extractors"]["text"]["ok"] == 24 and first["extractors"]["text"]["dim"] == 384
    assert first["shards"] == 3
    code, again, _ = mersemi("features", "-w", ws, "--json", "--extractors", "audio_egemaps,text,au")
    assert code == 0
    assert all(e["cached"] == 24 and e["extracted"] == 0 for e in again["extractors"].values())
    catalog = Catalog(tmp_path / "ws" / "catalog.duckdb")
    assert catalog.failed_checks() == {}
    with catalog.reader() as s:
        sets = s.query("SELECT run_id, extractor, n_clips, n_ok, dim FROM feature_sets ORDER BY ALL")
        lineage = s.query("SELECT count(*) AS n FROM artifact_inputs")["n"][0]
        runs = s.query("SELECT command, status FROM runs ORDER BY started_at")
    assert len(sets) == 6 and set(sets["run_id"]) == {first["run_id"], again["run_id"]}
    assert lineage == 6                                     # every feature set <- the registry
    assert runs.values.tolist() == [["ingest", "completed"], ["features", "completed"],
                                    ["features", "completed"]]
    art = pd.read_parquet(tmp_path / "ws" / "artifacts" / again["extractors"]["text"]["artifact"])
    assert len(art) == 24 and art["extractor"].eq("text").all()


def test_features_setting_and_bad_extractor(corpus_copy, tmp_path):
    ws = str(tmp_path / "ws")
    mersemi("ingest", str(corpus_copy), "-w", ws, "--json")
    code, _, text = mersemi("features", "-w", ws, "--extractors", "nope")
    assert code == 2 and "unknown extractor(s) nope" in text
    code, _, text = mersemi("features", "-w", ws, "--set", "visual_face")
    assert code == 2 and "expected EXTRACTOR.PARAM=VALUE" in text
    code, summary, text = mersemi("features", "-w", ws, "--json", "--workers", "1",
                                  "--extractors", "visual_face", "--set", "visual_face.fps=1")
    assert code == 0, text
    assert summary["extractors"]["visual_face"]["clips"] == 24


def test_features_without_a_dataset_is_a_clear_error(tmp_path):
    code, _, text = mersemi("features", "-w", str(tmp_path / "ws"))
    assert code == 2 and "no dataset is ingested" in text
