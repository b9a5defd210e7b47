"""The features stage as plain functions: planning, shards, failure isolation, resume, workers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models import extractors as ex_registry
from models.extractors.base import Extractor, FeatureRow
from storage.artifacts import ArtifactStore
from storage.feature_cache import FeatureCache, vectors
from storage.ingest import build_registry, media_paths, probe_with_cache, scan
from storage.labels import MER2025_LABELS
from tasks.features import (
    ExtractorSpec,
    ShardRunner,
    assemble_features,
    clip_inputs,
    extract_shard,
    plan_shards,
)


@pytest.fixture(scope="module")
def registry(synthetic_corpus) -> pd.DataFrame:
    scanned = scan(synthetic_corpus, MER2025_LABELS)
    probes, _ = probe_with_cache(media_paths(scanned), None)
    return build_registry(scanned, "t", probes)


class Flaky(Extractor):
    """Fails on the clips it is told to, like a decoder choking on one file."""

    name = "flaky"
    modality = "visual"

    def __init__(self, fail_on: tuple[str, ...] = ()):
        self.fail_on = fail_on

    def extract(self, clips, media):
        for c in clips:
            if c.clip_id in self.fail_on:
                raise RuntimeError(f"cannot read {c.clip_id}")
        return [FeatureRow(c.clip_id, vector=np.ones(3, np.float32)) for c in clips]


@pytest.fixture
def flaky(monkeypatch):
    monkeypatch.setitem(ex_registry.EXTRACTORS, "flaky", Flaky)


def test_plan_covers_every_usable_clip_once(registry, tmp_path):
    clips = clip_inputs(registry)
    specs = [ExtractorSpec.of("audio_egemaps"), ExtractorSpec.of("text")]
    jobs, cached = plan_shards(clips, specs, FeatureCache(tmp_path), shard_size=5)
    assert cached == {"audio_egemaps": 0, "text": 0}
    assert len(jobs) == 5                                     # 24 clips in shards of 5
    for key in (s.key for s in specs):
        ids = [c.clip_id for j in jobs for c in j.todo[key]]
        assert sorted(ids) == sorted(c.clip_id for c in clips)


def test_error_clip_is_excluded_from_planning(registry):
    bad = registry.copy()
    bad.loc[0, "status"] = "error"
    assert len(clip_inputs(bad)) == len(registry) - 1


def test_one_failing_clip_fails_alone(registry, tmp_path, flaky):
    clips = clip_inputs(registry)
    victim = clips[2].clip_id
    spec = ExtractorSpec.of("flaky", {"fail_on": (victim,)})
    jobs, _ = plan_shards(clips, [spec], FeatureCache(tmp_path), shard_size=100)
    summary = extract_shard(jobs[0], str(tmp_path))
    assert summary["extractors"]["flaky"] == {"clips": 24, "seconds": pytest.approx(0, abs=5),
                                              "ok": 23, "missing": 0, "error": 1}
    table = assemble_features(registry, spec, str(tmp_path), ArtifactStore(tmp_path / "a"), "r").ref
    rows = ArtifactStore(tmp_path / "a").load(table).set_index("clip_id")
    assert rows.loc[victim, "status"] == "error"
    assert rows.loc[victim, "reason"] == f"flaky failed: RuntimeError: cannot read {victim}"
    assert rows.drop(index=victim)["status"].eq("ok").all()


def test_rerun_skips_cached_clips_and_resumes_by_shard(registry, tmp_path, flaky):
    clips = clip_inputs(registry)
    cache = FeatureCache(tmp_path)
    spec = ExtractorSpec.of("flaky")
    jobs, _ = plan_shards(clips, [spec], cache, shard_size=10)
    extract_shard(jobs[0], str(tmp_path))                      # "crash" after the first shard
    jobs2, cached = plan_shards(clips, [spec], cache, shard_size=10)
    assert cached == {"flaky": 10}
    assert sum(j.n_clips for j in jobs2) == 14
    with pytest.raises(RuntimeError, match="have no flaky row in the cache"):
        assemble_features(registry, spec, str(tmp_path), ArtifactStore(tmp_path / "a"), "r")
    for job in jobs2:
        extract_shard(job, str(tmp_path))
    assert plan_shards(clips, [spec], cache, shard_size=10)[0] == []
    fs = assemble_features(registry, spec, str(tmp_path), ArtifactStore(tmp_path / "a"), "r")
    assert fs.counts == {"clips": 24, "ok": 24}


def test_changed_media_is_extracted_again(registry, tmp_path, flaky):
    spec = ExtractorSpec.of("flaky")
    cache = FeatureCache(tmp_path)
    for job in plan_shards(clip_inputs(registry), [spec], cache)[0]:
        extract_shard(job, str(tmp_path))
    changed = registry.copy()
    changed.loc[3, "video_sha256"] = "0" * 64
    jobs, cached = plan_shards(clip_inputs(changed), [spec], cache)
    assert cached == {"flaky": 23}
    assert [c.clip_id for j in jobs for c in j.todo[spec.key]] == [changed.loc[3, "clip_id"]]


def test_two_workers_give_the_same_rows_as_one(registry, tmp_path):
    clips = clip_inputs(registry)[:8]
    specs = [ExtractorSpec.of("audio_handcrafted"), ExtractorSpec.of("visual_face")]
    results = {}
    for workers in (1, 2):
        root = tmp_path / f"w{workers}"
        jobs, _ = plan_shards(clips, specs, FeatureCache(root), shard_size=4)
        with ShardRunner(workers) as runner:
            for job in jobs:
                runner.run(job, str(root))
        sub = registry[registry["clip_id"].isin([c.clip_id for c in clips])]
        results[workers] = [assemble_features(sub, s, str(root), ArtifactStore(root / "a"), "r")
                            for s in specs]
    for one, two in zip(results[1], results[2], strict=True):
        a = ArtifactStore(tmp_path / "w1" / "a").load(one.ref)
        b = ArtifactStore(tmp_path / "w2" / "a").load(two.ref)
        ids_a, va, ok_a = vectors(a)
        ids_b, vb, ok_b = vectors(b)
        assert ids_a == ids_b and (ok_a == ok_b).all()
        np.testing.assert_allclose(va, vb, rtol=1e-5, atol=1e-5)


def test_spec_validates_early():
    with pytest.raises(ValueError, match="unknown extractor"):
        ExtractorSpec.of("nope")
    assert ExtractorSpec.of("text").key == ExtractorSpec.of("text", {}).key


def test_a_worker_whose_flow_process_died_stops_at_its_next_batch(registry, tmp_path, flaky, monkeypatch):
    from tasks import shard_worker

    clips = clip_inputs(registry)
    spec = ExtractorSpec.of("flaky")
    jobs, _ = plan_shards(clips, [spec], FeatureCache(tmp_path), shard_size=100)
    # As in a spawned worker whose parent was SIGKILLed: the parent it remembers is gone.
    monkeypatch.setattr(shard_worker, "_PARENT", -1)
    with pytest.raises(SystemExit, match="the flow process -1 is gone"):
        extract_shard(jobs[0], str(tmp_path), batch_size=4)
    assert FeatureCache(tmp_path).done(spec.key).empty                  # it wrote nothing half-done
    monkeypatch.setattr(shard_worker, "_PARENT", None)                  # the flow's own process
    assert extract_shard(jobs[0], str(tmp_path))["extractors"]["flaky"]["ok"] == 24
