"""Teachers without a network: answer parsing, replay and local teachers, ordering, limits."""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.teachers import (
    ANSWERED,
    REFUSED,
    UNPARSEABLE,
    Budget,
    Clip,
    LocalTeacher,
    RateLimiter,
    ReplayTeacher,
    RetryPolicy,
    TeacherError,
)
from models.teachers.ordering import priority_order
from models.teachers.parsing import parse_answer
from storage.labels import MER2025_LABELS as LABELS
from tests.models.fake_gemini import answer_text

FULL = {x: 0.1 for x in LABELS} | {"happy": 0.5}


def clip(name: str = "sample_1", **kw) -> Clip:
    return Clip(clip_id=f"ds/{name}", name=name, video_sha256="v" + name, audio_sha256="a" + name,
                text="hello", **kw)


# --- parsing ------------------------------------------------------------------------------

def test_valid_answer_is_parsed():
    a = parse_answer(answer_text("sad"), LABELS)
    assert a.status == ANSWERED and a.label == "sad" and set(a.scores) == set(LABELS)
    assert a.reasoning and a.modality_shares == {"video": 0.5, "audio": 0.3, "text": 0.2}


def test_label_is_normalised_and_fenced_json_accepted():
    text = "```json\n" + json.dumps({"label": " Happy ", "scores": FULL}) + "\n```"
    a = parse_answer(text, LABELS)
    assert a.status == ANSWERED and a.label == "happy"


@pytest.mark.parametrize("text, why", [
    ("not json at all", "not JSON"),
    ('{"label": "happy", "scores": ', "not JSON"),
    ("[1, 2]", "not an object"),
    (json.dumps({"label": "disgust", "scores": FULL}), "not in the label set"),
    (json.dumps({"label": "happy"}), "scores is not an object"),
    (json.dumps({"label": "happy", "scores": {"happy": 1.0}}), "missing scores"),
    (json.dumps({"label": "happy", "scores": FULL | {"disgust": 0.1}}), "unknown label"),
    (json.dumps({"label": "happy", "scores": FULL | {"sad": "high"}}), "not a non-negative number"),
    (json.dumps({"label": "happy", "scores": FULL | {"sad": -1}}), "not a non-negative number"),
    ("", "empty"),
])
def test_bad_answers_are_unparseable_with_raw_text(text, why):
    a = parse_answer(text, LABELS)
    assert a.status == UNPARSEABLE and why in a.error
    assert a.label is None and a.scores == {} and a.raw_text == text


@given(st.text(max_size=200))
def test_parser_never_guesses_on_arbitrary_text(text):
    a = parse_answer(text, LABELS)
    assert a.status in (ANSWERED, UNPARSEABLE)
    if a.status == ANSWERED:                # only a full, valid JSON answer passes
        assert a.label in LABELS and set(a.scores) == set(LABELS)


# --- replay -------------------------------------------------------------------------------

def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_replay_reads_our_format(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [
        {"name": "s1", "model": "fer", "label": "sad", "scores": {"sad": 0.9, "happy": 0.1}, "raw": "r1"},
        {"name": "s2", "model": "fer", "label": None, "scores": {}, "raw": "no face"},
        {"name": "s3", "model": "fer", "label": "bored", "scores": {}, "raw": "r3"},
    ])
    t = ReplayTeacher(path).fit(LABELS)
    assert t.model_ == "fer"
    a = t.ask(clip("s1"))
    assert (a.status, a.label, a.scores, a.raw_text) == (ANSWERED, "sad", {"sad": 0.9, "happy": 0.1}, "r1")
    assert t.ask(clip("s2")).status == REFUSED
    assert t.ask(clip("s3")).status == UNPARSEABLE
    with pytest.raises(TeacherError) as err:
        t.ask(clip("s4"))
    assert not err.value.retryable


def test_replay_reads_a_batch_job_output(tmp_path):
    def response(text):
        return {"candidates": [{"content": {"parts": [{"text": text}], "role": "model"},
                                "finishReason": "STOP"}],
                "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5},
                "modelVersion": "gemini-2.5-flash"}
    path = write_jsonl(tmp_path / "batch.jsonl", [
        {"key": "s1", "response": response(answer_text("angry"))},
        {"key": "s2", "response": response("I think it is happy")},
        {"key": "s3", "response": {"promptFeedback": {"blockReason": "SAFETY"}}},
        {"key": "s4", "error": {"code": 500, "message": "internal"}},
    ])
    t = ReplayTeacher(path).fit(LABELS)
    a = t.ask(clip("s1"))
    assert a.status == ANSWERED and a.label == "angry" and a.tokens_in == 10 and a.tokens_out == 5
    assert t.ask(clip("s2")).status == UNPARSEABLE
    assert t.ask(clip("s3")).status == REFUSED
    with pytest.raises(TeacherError, match="batch job reported an error"):
        t.ask(clip("s4"))


def test_replay_key_changes_with_the_file(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"name": "s1", "model": "m", "label": "sad", "scores": {}}])
    first = ReplayTeacher(path).fit(LABELS).key(clip("s1"))
    assert ReplayTeacher(path).fit(LABELS).key(clip("s1")) == first
    write_jsonl(path, [{"name": "s1", "model": "m", "label": "happy", "scores": {}}])
    assert ReplayTeacher(path).fit(LABELS).key(clip("s1")) != first


def test_replay_refuses_unknown_lines(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"foo": 1}])
    with pytest.raises(ValueError, match="neither"):
        ReplayTeacher(path).fit(LABELS)


def test_replay_parses_a_line_when_asked_from_the_bytes_it_hashed(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [
        {"name": "s1", "model": "m", "label": "sad", "scores": {"sad": 0.9}},
        {"name": "s2", "model": "m", "label": "happy", "scores": {"happy": 0.8}},
        {"name": "s1", "model": "m", "label": "angry", "scores": {"angry": 0.7}},   # a later line wins
    ])
    t = ReplayTeacher(path).fit(LABELS)
    assert len(t.lines_) == 3
    assert t.ask(clip("s1")).label == "angry"            # the later s1 line
    key = t.key(clip("s1"))
    # A new file renamed over it after fit: the answers stay those of the file the key was made from.
    new = write_jsonl(tmp_path / "b.jsonl", [{"name": "s1", "model": "m", "label": "sad", "scores": {}}])
    os.replace(new, path)
    assert t.ask(clip("s1")).label == "angry" and t.ask(clip("s2")).label == "happy"
    assert t.key(clip("s1")) == key != ReplayTeacher(path).fit(LABELS).key(clip("s1"))
    # Rewritten in place: a line whose bytes changed is refused, never answered under the old key.
    rewritten = ReplayTeacher(path).fit(LABELS)
    path.write_text(path.read_text().replace("sad", "bad"))
    with pytest.raises(TeacherError, match="a.jsonl changed since the teacher read it"):
        rewritten.ask(clip("s1"))
    t.close()
    rewritten.close()


def test_a_pickled_replay_teacher_reopens_its_file_and_answers_alike(tmp_path):
    import pickle

    path = write_jsonl(tmp_path / "a.jsonl", [{"name": "s1", "model": "m", "label": "sad", "scores": {}},
                                             {"name": "s2", "model": "m", "label": "happy", "scores": {}}])
    t = ReplayTeacher(path).fit(LABELS)
    copy = pickle.loads(pickle.dumps(t))
    assert [copy.ask(clip(n)).label for n in ("s1", "s2")] == ["sad", "happy"]
    assert copy.key(clip("s1")) == t.key(clip("s1")) and copy.fd_ != t.fd_
    copy.close()
    t.close()
    with pytest.raises(OSError):                     # closed: no answer from another file
        t.ask(clip("s1"))


def test_replay_finds_each_clips_line_when_every_key_hashes_alike(tmp_path, monkeypatch):
    from models.teachers import replay

    monkeypatch.setattr(replay, "_key_hash", lambda key: 7)      # every key collides
    path = write_jsonl(tmp_path / "a.jsonl", [
        {"name": "s1", "model": "m", "label": "sad", "scores": {"sad": 0.9}},
        {"key": "ds/s2", "response": {"candidates": [{"content": {"parts": [{"text": json.dumps(
            {"label": "happy", "scores": {lab: float(lab == "happy") for lab in LABELS}})}]},
            "finishReason": "STOP"}]}},
        {"name": "s3", "model": "m", "label": "angry", "scores": {"angry": 0.7}},
    ])
    t = ReplayTeacher(path).fit(LABELS)
    assert [t.ask(clip(n)).label for n in ("s1", "s2", "s3")] == ["sad", "happy", "angry"]
    with pytest.raises(TeacherError, match="no answer for s4"):
        t.ask(clip("s4"))


def test_replay_holds_neither_the_files_bytes_nor_a_map_of_its_keys(tmp_path):
    """A fitted replay teacher keeps 28 bytes a line (the line index) and reads a line when asked:
    not the file (~1.5 KB a line for a batch job's output) nor a dict entry per clip."""
    import tracemalloc

    def held(lines: int) -> tuple[int, int]:
        path = write_jsonl(tmp_path / f"{lines}.jsonl", [
            {"name": f"sample_{i:08d}", "model": "m", "label": "sad", "scores": {"sad": 0.9},
             "reasoning": "x" * 400} for i in range(lines)])
        tracemalloc.start()
        t = ReplayTeacher(path).fit(LABELS)
        size, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert t.ask(clip(f"sample_{lines - 1:08d}")).label == "sad"
        t.close()
        return size, path.stat().st_size

    (small, _), (large, file_bytes) = held(2_000), held(20_000)
    assert file_bytes > 9_000_000
    assert large - small < 18_000 * 40          # the index: 28 bytes a line, and some slack


def test_replay_names_the_line_that_is_not_utf8_or_not_an_object(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"name": "s1", "label": "sad", "scores": {}}\n{"name": "s2\xff"}\n')
    with pytest.raises(ValueError, match=r"a.jsonl:2: not UTF-8"):
        ReplayTeacher(path).fit(LABELS)
    path.write_text('{"name": "s1", "label": "sad", "scores": {}}\n[1, 2]\n')
    with pytest.raises(ValueError, match=r"a.jsonl:2: not a JSON object"):
        ReplayTeacher(path).fit(LABELS)


# --- local --------------------------------------------------------------------------------

def predictions(rows: dict[str, dict[str, float]], model: str | None = None) -> pd.DataFrame:
    frame = pd.DataFrame([{"clip_id": c, **{f"p_{x}": p.get(x, 0.0) for x in LABELS}}
                          for c, p in rows.items()])
    if model:
        frame["model"] = model
    return frame


def test_local_teacher_answers_argmax(tmp_path):
    frame = predictions({"ds/s1": {"sad": 0.6, "happy": 0.4}})
    frame.to_parquet(tmp_path / "p.parquet")
    t = LocalTeacher(tmp_path / "p.parquet").fit(LABELS)
    a = t.ask(clip("s1"))
    assert a.status == ANSWERED and a.label == "sad" and a.scores["happy"] == 0.4
    with pytest.raises(TeacherError):
        t.ask(clip("s2"))
    with pytest.raises(ValueError, match="p_surprise"):
        LocalTeacher(frame.drop(columns="p_surprise")).fit(LABELS)


# --- ordering -----------------------------------------------------------------------------

def test_default_order_is_stable_and_independent_of_input_order():
    ids = [f"ds/s{i}" for i in range(50)]
    order = priority_order(ids)
    assert sorted(order) == sorted(ids) and order != ids
    assert priority_order(list(reversed(ids))) == order
    # The hash order is the hex digests' order, as it was when it sorted them as text (runs of
    # one pool keep asking its clips in the same order).
    assert order == sorted(ids, key=lambda c: hashlib.sha256(c.encode()).hexdigest())


def test_margin_entropy_disagreement_and_rare_label_orders():
    sure = {"happy": 0.95, "sad": 0.05}
    torn = {"happy": 0.5, "sad": 0.5}
    preds = predictions({"ds/a": sure, "ds/b": torn, "ds/c": {"worried": 0.9, "sad": 0.1}})
    ids = ["ds/a", "ds/b", "ds/c", "ds/unpredicted"]
    assert priority_order(ids, preds, LABELS, "margin")[0] == "ds/b"
    assert priority_order(ids, preds, LABELS, "entropy")[0] == "ds/b"
    assert priority_order(ids, preds, LABELS, "margin")[-1] == "ds/unpredicted"
    rare = priority_order(ids, preds, LABELS, "rare_label", label_counts={"happy": 50, "worried": 2})
    assert rare[0] == "ds/c"
    two = pd.concat([predictions({"ds/a": sure, "ds/b": sure}, "m1"),
                     predictions({"ds/a": sure, "ds/b": {"sad": 0.9}}, "m2")])
    assert priority_order(["ds/a", "ds/b"], two, LABELS, "auto")[0] == "ds/b"   # disagreement
    with pytest.raises(ValueError):
        priority_order(ids, preds, LABELS, "random")


# --- limits -------------------------------------------------------------------------------

def test_backoff_grows_and_is_capped():
    policy, rng = RetryPolicy(attempts=5, initial_delay_s=1, max_delay_s=4), random.Random(0)
    for retry in range(6):
        assert 0 <= policy.delay(retry, rng) <= min(4, 2 ** retry)


def test_rate_limiter_waits_for_the_window():
    now, slept = [0.0], []

    def sleep(s):
        slept.append(s)
        now[0] += s
    limiter = RateLimiter(2, clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        limiter.acquire()
    assert slept and sum(slept) == pytest.approx(60.0)


def test_budget_counts_requests_and_cost():
    b = Budget(max_requests=3, max_cost_usd=1.0)
    assert b.reserve(0.4) and b.reserve(0.4)
    b.settle(0.4, 0.5)
    assert not b.reserve(0.6) and "cost budget" in b.exhausted     # 0.5 spent + 0.4 held + 0.6
    b.settle(0.4, 0.1)
    assert b.reserve(0.3) and not b.reserve(0.0)                    # third request, then none
    assert b.requests == 3


def test_a_fast_teacher_records_in_few_batches_and_loses_none(tmp_path):
    from models.teachers.runner import ask_pool

    names = [f"s{i}" for i in range(400)]
    path = write_jsonl(tmp_path / "a.jsonl", [{"name": n, "model": "fer", "label": "sad",
                                               "scores": {"sad": 0.9}, "raw": "r"} for n in names])
    batches = []
    report = ask_pool(ReplayTeacher(path).fit(LABELS), [clip(n) for n in names], {},
                      sink=batches.append, flush_every=50, flush_interval_s=3600)
    # Well under a second for 400 replayed answers: one batch at the end, not eight of 50.
    assert [len(b) for b in batches] == [400]
    assert sorted(a.clip.name for a in batches[0]) == sorted(names) and report.requests == 400
    batches.clear()
    ask_pool(ReplayTeacher(path).fit(LABELS), [clip(n) for n in names], {}, sink=batches.append,
             flush_every=50, flush_interval_s=0)                        # no interval: every 50
    assert [len(b) for b in batches] == [50] * 8
    batches.clear()
    report = ask_pool(ReplayTeacher(path).fit(LABELS), [clip(n) for n in names], {}, sink=batches.append,
                      flush_every=50, flush_interval_s=3600, flush_max=150)   # no batch over 150
    assert [len(b) for b in batches] == [150, 150, 100] and report.requests == 400


def test_requests_in_flight_are_a_window_not_the_whole_pool(tmp_path, monkeypatch):
    from models.teachers import runner

    names = [f"s{i}" for i in range(400)]
    path = write_jsonl(tmp_path / "a.jsonl", [{"name": n, "model": "fer", "label": "sad",
                                               "scores": {"sad": 0.9}, "raw": "r"} for n in names])
    lock, count = threading.Lock(), {"now": 0, "peak": 0}

    class Counting(runner.ThreadPoolExecutor):
        def submit(self, fn, *args, **kwargs):
            with lock:
                count["now"] += 1
                count["peak"] = max(count["peak"], count["now"])
            future = super().submit(fn, *args, **kwargs)
            future.add_done_callback(finished)
            return future

    def finished(_future) -> None:
        with lock:
            count["now"] -= 1

    monkeypatch.setattr(runner, "ThreadPoolExecutor", Counting)
    report = runner.ask_pool(ReplayTeacher(path).fit(LABELS), [clip(n) for n in names], {}, concurrency=2)
    assert report.requests == 400 and report.counts == {"answered": 400}
    assert [a.clip.name for a in report.asked] == names                 # in the pool's order
    assert 2 <= count["peak"] <= runner.IN_FLIGHT_PER_WORKER * 2
