"""The teacher stage's plain functions: pool -> answers, the cache round trip, the key."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from models.teachers import Budget, RetryPolicy
from storage.artifacts import ArtifactStore
from storage.catalog import Catalog
from storage.labels import MER2025_LABELS as LABELS
from storage.teacher_store import cached_answers, record_answers
from tasks.teacher import PoolSource, make_teacher, query_teacher, resolve_api_key
from tests.models.conftest import KEY
from tests.models.fake_gemini import FakeGeminiServer, ok

FAST = RetryPolicy(attempts=2, initial_delay_s=0.001, max_delay_s=0.001)


def pool(n: int, tmp_path=None) -> pd.DataFrame:
    rows = []
    for i in range(n):
        video = None
        if tmp_path is not None:
            video = tmp_path / f"s{i}.mp4"
            video.write_bytes(b"x" * 32)
        rows.append({"clip_id": f"ds/s{i}", "name": f"s{i}", "video_path": str(video) if video else None,
                     "audio_path": None, "text": f"text {i}", "video_sha256": f"v{i}",
                     "audio_sha256": None, "duration_s": 2.0})
    return pd.DataFrame(rows)


def answers_file(tmp_path, n: int):
    path = tmp_path / "answers.jsonl"
    path.write_text("".join(json.dumps({"name": f"s{i}", "model": "fer", "label": LABELS[i % 6],
                                        "scores": {LABELS[i % 6]: 0.8}, "raw": "r"}) + "\n"
                            for i in range(n)))
    return path


def test_replay_answers_are_recorded_then_served_from_the_cache(tmp_path):
    catalog, store = Catalog(tmp_path / "catalog.duckdb"), ArtifactStore(tmp_path / "artifacts")
    teacher = make_teacher("replay", LABELS, answers=answers_file(tmp_path, 5))
    recorded = []

    def record(rows):
        recorded.append(len(rows))
        record_answers(catalog, rows)

    first = query_teacher(teacher, pool(6), None, store, "run-1", Budget(), record=record)
    assert first.summary["requests"] == 6 and first.summary["answered"] == 5
    assert first.summary["failed"] == 1 and first.summary["cache_hits"] == 0     # s5 is not in the file
    saved = store.load(first.ref)
    assert len(saved) == 6 and set(saved["outcome"]) == {"answered", "failed"}
    assert sum(recorded) == 6
    cached = cached_answers(catalog, "replay")
    assert len(cached) == 5                                 # failed rows are not cache entries
    # A label answer's raw text is recorded, and not read back into the cache.
    with catalog.reader() as s:
        assert s.con.execute("SELECT count(raw_text) FROM teacher_answers").fetchone()[0] == 5
    assert cached["raw_text"].isna().all()
    second = query_teacher(teacher, pool(6), cached, store, "run-2", Budget(), record=record)
    assert second.summary["requests"] == 1 and second.summary["cache_hits"] == 5
    row = store.load(second.ref).set_index("clip_id").loc["ds/s1"]
    assert row["label"] == "angry" and json.loads(row["scores"]) == {"angry": 0.8}


def test_budget_leaves_clips_not_asked_in_the_artifact(tmp_path):
    store = ArtifactStore(tmp_path / "artifacts")
    teacher = make_teacher("replay", LABELS, answers=answers_file(tmp_path, 10))
    result = query_teacher(teacher, pool(10), None, store, "run-1", Budget(max_requests=3))
    s = result.summary
    assert (s["requests"], s["answered"], s["not_asked"]) == (3, 3, 7)
    assert "request budget" in s["budget_exhausted"] and len(s["not_asked_sample"]) == 7
    assert (store.load(result.ref)["outcome"] == "not_asked").sum() == 7


def test_local_teacher_and_prediction_order(tmp_path):
    preds = pd.DataFrame({"clip_id": [f"ds/s{i}" for i in range(4)],
                          **{f"p_{x}": [0.0] * 4 for x in LABELS}})
    preds["p_happy"] = [0.9, 0.55, 0.6, 0.99]
    preds["p_sad"] = [0.1, 0.45, 0.4, 0.01]
    path = tmp_path / "preds.parquet"
    preds.to_parquet(path)
    teacher = make_teacher("local", LABELS, predictions=path)
    result = query_teacher(teacher, pool(4), None, ArtifactStore(tmp_path / "a"), "run-1",
                           Budget(max_requests=1), predictions=path, order="margin")
    asked = ArtifactStore(tmp_path / "a").load(result.outcomes).set_index("clip_id")["outcome"]
    assert asked["ds/s1"] == "answered" and (asked.drop("ds/s1") == "not_asked").all()


def test_enrichment_saves_the_rewritten_text(tmp_path, monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    with FakeGeminiServer() as fake:
        fake.default = ok("(smiling) text")
        teacher = make_teacher("gemini", LABELS, gemini={"base_url": fake.base_url, "timeout_s": 5})
        store = ArtifactStore(tmp_path / "a")
        catalog = Catalog(tmp_path / "catalog.duckdb")
        # A chunk of one clip at a time: the text artifact gathers every chunk's answers.
        result = query_teacher(teacher, pool(2, tmp_path), None, store, "run-1", Budget(),
                               question="enrich", retry=FAST, chunk_size=1,
                               record=lambda rows: record_answers(catalog, rows))
        # Served from the cache the next time: the rewritten text is the cached answer's raw text.
        again = query_teacher(teacher, pool(2, tmp_path), cached_answers(catalog, "gemini", "enrich"), store,
                              "run-2", Budget(), question="enrich", retry=FAST)
    assert result.ref.artifact_id == "run-1/teacher/enriched_text"
    assert [r.artifact_id for r in result.refs] == ["run-1/teacher/enrich_answers",
                                                    "run-1/teacher/enriched_text"]
    assert (store.load(result.outcomes)["text"] == "(smiling) text").all()
    texts = store.load(result.ref)
    assert list(texts.columns) == ["clip_id", "text"] and set(texts["text"]) == {"(smiling) text"}
    assert KEY.encode() not in store.path(result.ref).read_bytes()
    assert again.summary["cache_hits"] == 2 and again.summary["requests"] == 0
    pd.testing.assert_frame_equal(store.load(again.ref), texts)


def twin_pool(n: int) -> pd.DataFrame:
    """`n` clips where clip 2k+1 shows the same media as clip 2k (one cache key for both)."""
    frame = pool(n)
    frame["video_sha256"] = [f"v{i // 2}" for i in range(n)]
    frame["text"] = [f"text {i // 2}" for i in range(n)]
    return frame


def test_a_pool_asked_a_chunk_at_a_time_ends_as_asked_at_once(tmp_path):
    """Chunks of 3 clips: twins of one media fall in different chunks, a budget runs out in the
    middle, some clips fail (not in the answers file). Outcomes, artifact and figures equal
    those of the whole pool asked in one go; a twin of an answered clip is served by the cache
    its chunk reads, a twin of a failed one takes the failure (no second request)."""
    n, runs, frame = 24, {}, twin_pool(24)
    for chunk in (3, 100):
        store = ArtifactStore(tmp_path / f"a{chunk}")
        catalog = Catalog(tmp_path / f"c{chunk}.duckdb")
        with catalog.writer():                      # an empty catalog: the cache is read first
            pass
        reads, keys = [], []

        def rows(ids, reads=reads):
            reads.append(len(ids))
            return frame[frame["clip_id"].isin(ids)]

        def cached(wanted, catalog=catalog, keys=keys):
            keys.append(len(wanted))
            return cached_answers(catalog, "replay", keys=wanted)

        teacher = make_teacher("replay", LABELS, answers=answers_file(tmp_path, 16))   # s16.. fail
        result = query_teacher(teacher, PoolSource([f"ds/s{i}" for i in range(n)], rows), cached, store,
                               "run-1", Budget(max_requests=9), chunk_size=chunk,
                               record=lambda frame, catalog=catalog: record_answers(catalog, frame))
        runs[chunk] = store.load(result.outcomes), result.summary, reads, keys
    chunked, whole = runs[3], runs[100]
    assert chunked[2] == [3] * 8 and chunked[3] == [3] * 8 and whole[2] == [n] == whole[3]
    pd.testing.assert_frame_equal(chunked[0], whole[0])
    drop = ("wall_s",)
    assert {k: v for k, v in chunked[1].items() if k not in drop} == {
        k: v for k, v in whole[1].items() if k not in drop}
    s = chunked[1]
    assert s["requests"] == 9 and s["not_asked"] > 0 and s["failed"] > 0 and s["cache_hits"] > 0
    outcomes = chunked[0].set_index("clip_id")
    for k in range(n // 2):
        first, twin = outcomes.loc[f"ds/s{2 * k}"], outcomes.loc[f"ds/s{2 * k + 1}"]
        assert first["cache_key"] == twin["cache_key"] and first["outcome"] == twin["outcome"]
        assert first["label"] == twin["label"] or (pd.isna(first["label"]) and pd.isna(twin["label"]))


def test_a_pool_row_the_catalog_does_not_have_is_named(tmp_path):
    teacher = make_teacher("replay", LABELS, answers=answers_file(tmp_path, 3))
    source = PoolSource(["ds/s0", "ds/s1", "ds/gone"], lambda ids: pool(2))
    with pytest.raises(ValueError, match=r"pool clip 'ds/gone' has no row to show the teacher"):
        query_teacher(teacher, source, None, ArtifactStore(tmp_path / "a"), "run-1", Budget())


def test_api_key_comes_from_the_environment_in_order(monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    assert resolve_api_key() is None
    monkeypatch.setenv("GOOGLE_API_KEY", "google")
    assert resolve_api_key().get_secret_value() == "google"
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    key = resolve_api_key()
    assert key.get_secret_value() == KEY and KEY not in repr(key) and KEY not in str(key)


def test_backends_say_what_they_need(tmp_path, monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    with pytest.raises(ValueError, match="--answers"):
        make_teacher("replay", LABELS)
    with pytest.raises(ValueError, match="--predictions"):
        make_teacher("local", LABELS)
    with pytest.raises(ValueError, match="GEMINI_API_KEY"):
        make_teacher("gemini", LABELS)
    with pytest.raises(ValueError, match="unknown teacher"):
        make_teacher("oracle", LABELS)


def test_a_budget_that_runs_out_is_warned_about_once_for_the_pool(tmp_path, caplog):
    teacher = make_teacher("replay", LABELS, answers=answers_file(tmp_path, 10))
    with caplog.at_level("WARNING", logger="mersemi.teacher"):
        query_teacher(teacher, pool(10), None, ArtifactStore(tmp_path / "a"), "run-1",
                      Budget(max_requests=2), chunk_size=3)
    warned = [r.getMessage() for r in caplog.records if "budget exhausted" in r.getMessage()]
    assert warned == ["teacher budget exhausted (request budget of 2 spent): 8 clips not asked (label)"]
