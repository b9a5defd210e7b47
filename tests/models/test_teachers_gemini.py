"""The Gemini teacher through the real google-genai client, against a fake server on 127.0.0.1."""

from __future__ import annotations

import base64
import logging

import pytest

from models.teachers import (
    ANSWERED,
    ENRICH,
    FAILED,
    NOT_ASKED,
    REFUSED,
    UNPARSEABLE,
    Budget,
    Clip,
    GeminiTeacher,
    RetryPolicy,
    TeacherError,
)
from models.teachers.runner import ask_pool
from storage.labels import MER2025_LABELS as LABELS
from tests.models.conftest import KEY
from tests.models.fake_gemini import answer_text, blocked, error, ok, slow

FAST = RetryPolicy(attempts=3, initial_delay_s=0.001, max_delay_s=0.005)


def make_clips(tmp_path, n: int = 1, size: int = 64) -> list[Clip]:
    clips = []
    for i in range(n):
        video = tmp_path / f"s{i}.mp4"
        video.write_bytes(bytes([i % 256]) * size)
        clips.append(Clip(clip_id=f"ds/s{i}", name=f"s{i}", video_path=str(video), text=f"line {i}",
                          video_sha256=f"v{i}", duration_s=3.0))
    return clips


def teacher(fake, **kw) -> GeminiTeacher:
    return GeminiTeacher(api_key=KEY, base_url=fake.base_url, **({"timeout_s": 5.0} | kw)).fit(LABELS)


def run(fake, clips, budget=None, **kw):
    return ask_pool(teacher(fake, **kw), clips, {}, budget=budget, retry=FAST, concurrency=2)


def test_success_sends_inline_mp4_schema_and_key_header(fake_gemini, tmp_path):
    clips = make_clips(tmp_path)
    report = run(fake_gemini, clips)
    (asked,) = report.asked
    assert asked.outcome == ANSWERED and asked.answer.label == "happy"
    assert asked.answer.tokens_in == 1000 and asked.answer.tokens_out == 80
    assert asked.answer.cost_usd == pytest.approx((1000 * 0.30 + 80 * 2.50) / 1e6)
    (call,) = fake_gemini.generate_calls()
    assert call.path == "/v1/models/gemini-2.5-flash:generateContent"
    assert call.headers["x-goog-api-key"] == KEY
    parts = call.body["contents"][0]["parts"]
    inline = parts[0]["inlineData"]
    assert base64.b64decode(inline["data"]) == (tmp_path / "s0.mp4").read_bytes()
    assert inline.get("mime_type", inline.get("mimeType")) == "video/mp4"
    assert "line 0" in parts[1]["text"] and "worried" in parts[1]["text"]
    config = call.body["generationConfig"]
    assert config["responseMimeType"] == "application/json" and config["temperature"] == 0.0
    assert config["responseSchema"]["properties"]["label"]["enum"] == list(LABELS)


def test_429_twice_then_success_is_retried(fake_gemini, tmp_path):
    fake_gemini.script.extend([error(429, "RESOURCE_EXHAUSTED"), error(429, "RESOURCE_EXHAUSTED")])
    report = run(fake_gemini, make_clips(tmp_path))
    assert report.asked[0].outcome == ANSWERED and report.asked[0].attempts == 3
    assert report.requests == 3 and len(fake_gemini.generate_calls()) == 3


def test_persistent_500_fails_after_the_attempts(fake_gemini, tmp_path):
    fake_gemini.default = error(500, "INTERNAL")
    report = run(fake_gemini, make_clips(tmp_path))
    asked = report.asked[0]
    assert asked.outcome == FAILED and "HTTP 500" in asked.answer.error and asked.attempts == 3
    assert len(fake_gemini.generate_calls()) == 3


@pytest.mark.parametrize("code, status", [(400, "INVALID_ARGUMENT"), (403, "PERMISSION_DENIED"),
                                          (404, "NOT_FOUND")])
def test_client_errors_are_not_retried(fake_gemini, tmp_path, code, status):
    fake_gemini.default = error(code, status)
    report = run(fake_gemini, make_clips(tmp_path))
    assert report.asked[0].outcome == FAILED and f"HTTP {code}" in report.asked[0].answer.error
    assert len(fake_gemini.generate_calls()) == 1


def test_slow_answer_times_out_and_is_retried(fake_gemini, tmp_path):
    fake_gemini.script.append(slow(1.5))
    report = run(fake_gemini, make_clips(tmp_path), timeout_s=0.3)
    assert report.asked[0].outcome == ANSWERED and report.asked[0].attempts == 2


def test_timeouts_every_time_end_as_failed(fake_gemini, tmp_path):
    fake_gemini.default = slow(1.0)
    report = ask_pool(teacher(fake_gemini, timeout_s=0.2), make_clips(tmp_path), {},
                      retry=RetryPolicy(attempts=2, initial_delay_s=0.001, max_delay_s=0.001))
    assert report.asked[0].outcome == FAILED and "timed out" in report.asked[0].answer.error


def test_malformed_json_is_unparseable_with_raw_text(fake_gemini, tmp_path):
    fake_gemini.default = ok('{"label": "happy", "scores": {"happy": 0.9')
    answer = run(fake_gemini, make_clips(tmp_path)).asked[0].answer
    assert answer.status == UNPARSEABLE and answer.raw_text.startswith('{"label"') and answer.label is None
    assert answer.tokens_in == 1000                   # paid for, so the cost is kept


def test_invalid_label_is_unparseable(fake_gemini, tmp_path):
    fake_gemini.default = ok(answer_text("happy").replace('"label": "happy"', '"label": "disgust"'))
    answer = run(fake_gemini, make_clips(tmp_path)).asked[0].answer
    assert answer.status == UNPARSEABLE and "disgust" in answer.error


def test_safety_block_is_refused(fake_gemini, tmp_path):
    fake_gemini.default = blocked()
    answer = run(fake_gemini, make_clips(tmp_path)).asked[0].answer
    assert answer.status == REFUSED and "SAFETY" in answer.error and answer.label is None
    assert len(fake_gemini.generate_calls()) == 1


def test_large_video_goes_through_the_file_api(fake_gemini, tmp_path):
    clips = make_clips(tmp_path, size=5000)
    report = run(fake_gemini, clips, inline_max_bytes=1000)
    assert report.asked[0].outcome == ANSWERED
    start = next(r for r in fake_gemini.requests if r.path == "/upload/v1/files")
    assert start.headers["X-Goog-Upload-Protocol"] == "resumable"
    assert start.headers["X-Goog-Upload-Command"] == "start"
    assert any(r.path.startswith("/upload-session/") and r.body == 5000 for r in fake_gemini.requests)
    part = fake_gemini.generate_calls()[0].body["contents"][0]["parts"][0]
    data = part.get("fileData") or part["file_data"]
    assert (data.get("fileUri") or data["file_uri"]).endswith("/v1/files/f1")


def test_budget_stops_querying_at_its_limit(fake_gemini, tmp_path):
    clips = make_clips(tmp_path, n=10)
    report = run(fake_gemini, clips, budget=Budget(max_requests=4))
    outcomes = [a.outcome for a in report.asked]
    assert outcomes[:4] == [ANSWERED] * 4 and outcomes[4:] == [NOT_ASKED] * 6   # in priority order
    assert report.requests == 4 and len(fake_gemini.generate_calls()) == 4
    assert "request budget of 4" in report.budget_exhausted


def test_cost_budget_stops_before_an_unaffordable_request(fake_gemini, tmp_path):
    clips = make_clips(tmp_path, n=5)
    one = teacher(fake_gemini).estimate_cost(clips[0])
    # The fake answer costs about half the estimate: after one answer, spent + the next
    # estimate exceeds 1.2 estimates, so the second request is never sent.
    report = ask_pool(teacher(fake_gemini), clips, {}, budget=Budget(max_cost_usd=one * 1.2),
                      retry=FAST, concurrency=1)
    assert report.counts == {ANSWERED: 1, NOT_ASKED: 4} and report.cost_usd <= one * 1.2
    assert "cost budget" in report.budget_exhausted


def test_cached_answers_are_not_asked_again(fake_gemini, tmp_path):
    clips = make_clips(tmp_path, n=3)
    t = teacher(fake_gemini)
    first = ask_pool(t, clips, {}, retry=FAST)
    cache = {a.key: a.answer for a in first.asked}
    second = ask_pool(t, clips, cache, retry=FAST)
    assert second.requests == 0 and all(a.from_cache for a in second.asked)
    assert len(fake_gemini.generate_calls()) == 3
    changed = teacher(fake_gemini, temperature=0.5)          # other generation parameters
    assert changed.key(clips[0]) != t.key(clips[0])


def test_enrichment_rewrites_the_subtitle(fake_gemini, tmp_path):
    fake_gemini.default = ok("(voice shaking) line 0")
    report = ask_pool(teacher(fake_gemini), make_clips(tmp_path), {}, question=ENRICH, retry=FAST)
    answer = report.asked[0].answer
    assert answer.status == ANSWERED and answer.raw_text == "(voice shaking) line 0"
    assert "responseSchema" not in fake_gemini.generate_calls()[0].body["generationConfig"]


def test_the_key_never_leaks(fake_gemini, tmp_path, caplog, capsys):
    fake_gemini.echo_key_in_errors = True          # a server that quotes the key back
    fake_gemini.script.extend([error(429, "RESOURCE_EXHAUSTED"), error(400, "INVALID_ARGUMENT")])
    t = teacher(fake_gemini)
    with caplog.at_level(logging.DEBUG):
        report = ask_pool(t, make_clips(tmp_path), {}, retry=FAST)
        with pytest.raises(TeacherError) as raised:
            fake_gemini.script.append(error(403, "PERMISSION_DENIED"))
            t.ask(make_clips(tmp_path)[0])
    texts = [repr(t), str(t), repr(report), str(raised.value), repr(raised.value),
             str(raised.value.__cause__), repr(raised.value.__context__), caplog.text,
             *capsys.readouterr()]
    assert "bad key ***" in report.asked[0].answer.error
    for text in texts:
        assert KEY not in text
    assert raised.value.__cause__ is None and raised.value.__context__ is None


def test_no_key_is_refused_with_a_hint():
    with pytest.raises(ValueError, match="GEMINI_API_KEY"):
        GeminiTeacher(api_key=None).fit(LABELS)


def test_frames_mode_sends_sampled_jpegs_and_the_audio(fake_gemini, synthetic_corpus):
    video = next((synthetic_corpus / "video").glob("*.mp4"))
    audio = synthetic_corpus / "audio" / f"{video.stem}.wav"
    clip = Clip(clip_id="ds/x", name=video.stem, video_path=str(video),
                audio_path=str(audio) if audio.exists() else None, text="hi", video_sha256="v")
    report = ask_pool(teacher(fake_gemini, media="frames", n_frames=3), [clip], {}, retry=FAST)
    assert report.asked[0].outcome == ANSWERED
    parts = fake_gemini.generate_calls()[0].body["contents"][0]["parts"]
    mimes = [(p.get("inlineData") or {}).get("mime_type") for p in parts]
    assert mimes[:3] == ["image/jpeg"] * 3
    data = parts[0]["inlineData"]["data"]
    assert base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))[:2] == b"\xff\xd8"   # unpadded
    if clip.audio_path:
        assert mimes[3] == "audio/wav"
