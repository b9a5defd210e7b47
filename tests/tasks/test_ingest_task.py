"""The ingest stage as a plain function (no Prefect run needed)."""

from __future__ import annotations

from storage.artifacts import ArtifactStore
from storage.labels import MER2025_LABELS
from storage.records import DatasetState
from tasks.ingest import dataset_name, register_clips, register_clips_task


def test_register_saves_then_recognises_an_unchanged_registry(synthetic_corpus, tmp_path):
    store = ArtifactStore(tmp_path)
    first = register_clips(synthetic_corpus, store, "run-1", MER2025_LABELS)
    assert first.changed and store.exists(first.ref)
    assert first.ref.sha256 == first.registry_sha256
    assert len(first.probe_rows) == 48                  # 24 mp4 + 24 wav, all probed
    prior = DatasetState(first.dataset, first.root, first.layout, MER2025_LABELS,
                         first.ref.artifact_id, first.ref.sha256)
    second = register_clips(synthetic_corpus, store, "run-2", MER2025_LABELS,
                            probe_cache=first.probe_rows, prior=prior)
    assert not second.changed and second.ref is None
    assert len(second.probe_rows) == 0                  # every probe came from the cache
    assert not (tmp_path / "run-2").exists()            # nothing written
    relabelled = register_clips(synthetic_corpus, store, "run-3", ("happy", "sad"),
                                probe_cache=first.probe_rows, prior=prior)
    assert relabelled.changed


def test_the_task_wraps_the_plain_function(synthetic_corpus, tmp_path):
    assert register_clips_task.fn is register_clips
    result = register_clips_task.fn(synthetic_corpus, ArtifactStore(tmp_path), "r",
                                    MER2025_LABELS)
    assert result.summary["registered"] == 24


def test_dataset_name_is_file_name_safe(tmp_path):
    (tmp_path / "My Corpus (v2)").mkdir()
    assert dataset_name(tmp_path / "My Corpus (v2)") == "My_Corpus_v2"
    (tmp_path / "m.csv").write_text("name\n")
    assert dataset_name(tmp_path / "m.csv") == tmp_path.name
