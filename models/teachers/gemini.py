"""The Gemini teacher, through `google-genai`.

A clip goes to the model either as its mp4 (inline when small, through the File API
otherwise) or as frames sampled from the video plus the audio track, with the subtitle in the
prompt (`media="frames"`). The answer is JSON constrained by a response schema and validated
by `models.teachers.parsing`; a safety block is `refused`; errors become `TeacherError`s that
say whether a retry may help (408/429/5xx, timeouts) and never carry the API key.
"""

from __future__ import annotations

import time
from pathlib import Path

from pydantic import SecretStr

from models.teachers.base import (
    ANSWERED,
    ENRICH,
    LABEL,
    REFUSED,
    UNPARSEABLE,
    Answer,
    Clip,
    Teacher,
    TeacherError,
    sha256_json,
    sha256_text,
)
from models.teachers.parsing import parse_answer
from models.teachers.prompt import ENRICH_PROMPT, LABEL_PROMPT, label_schema, render

RETRY_CODES = frozenset({408, 429, 500, 502, 503, 504})
# Token counts the documentation gives for video input (../shared/NOTES.md): used only to
# estimate a request's cost before it is made, for the budget.
TOKENS_PER_FRAME, AUDIO_TOKENS_PER_S, PROMPT_TOKENS = 258, 32, 400
OUTPUT_TOKENS = {LABEL: 250, ENRICH: 120}
MIME = {".mp4": "video/mp4", ".wav": "audio/wav", ".mp3": "audio/mpeg", ".flac": "audio/flac",
        ".m4a": "audio/mp4", ".avi": "video/x-msvideo", ".mkv": "video/x-matroska"}


def redact(text: str, secret: SecretStr | None) -> str:
    value = secret.get_secret_value() if secret else ""
    return text.replace(value, "***") if value else text


def classify_error(exc: Exception, secret: SecretStr | None) -> TeacherError:
    """A client exception as a TeacherError: retryable or not, with the key removed."""
    from google.genai import errors

    if isinstance(exc, errors.APIError):
        code = exc.code
        retryable = code in RETRY_CODES or (code or 0) >= 500
        return TeacherError(redact(f"HTTP {code} {exc.status}: {exc.message}", secret), retryable,
                            code)
    names = {cls.__name__ for cls in type(exc).__mro__}
    if isinstance(exc, TimeoutError) or "TimeoutException" in names:
        return TeacherError(redact(f"timed out: {type(exc).__name__} {exc}", secret), True)
    if isinstance(exc, ConnectionError) or "TransportError" in names:
        return TeacherError(redact(f"connection failed: {type(exc).__name__} {exc}", secret), True)
    return TeacherError(redact(f"{type(exc).__name__}: {exc}", secret), False)


class GeminiTeacher(Teacher):
    """Gemini as a teacher. Settings only in __init__; `fit` makes the client."""

    kind = "gemini"

    def __init__(self, api_key: SecretStr | str | None = None, model: str = "gemini-2.5-flash",
                 temperature: float = 0.0, prompt: str = LABEL_PROMPT,
                 enrich_prompt: str = ENRICH_PROMPT, media: str = "mp4",
                 inline_max_bytes: int = 18_000_000, n_frames: int = 8, timeout_s: float = 120.0,
                 base_url: str | None = None, api_version: str | None = None,
                 usd_per_mtok_in: float = 0.30, usd_per_mtok_out: float = 2.50) -> None:
        self.api_key = SecretStr(api_key) if isinstance(api_key, str) else api_key
        self.model = model
        self.temperature = temperature
        self.prompt = prompt
        self.enrich_prompt = enrich_prompt
        self.media = media
        self.inline_max_bytes = inline_max_bytes
        self.n_frames = n_frames
        self.timeout_s = timeout_s
        self.base_url = base_url
        self.api_version = api_version
        self.usd_per_mtok_in = usd_per_mtok_in
        self.usd_per_mtok_out = usd_per_mtok_out

    def __repr__(self) -> str:
        # The key is never shown, not even in part.
        return (f"GeminiTeacher(model={self.model!r}, temperature={self.temperature}, "
                f"media={self.media!r}, api_key={'***' if self.api_key else None})")

    def fit(self, labels: tuple[str, ...]) -> GeminiTeacher:
        from google import genai
        from google.genai import types

        if self.media not in ("mp4", "frames"):
            raise ValueError(f"media must be 'mp4' or 'frames', not {self.media!r}")
        if not self.api_key or not self.api_key.get_secret_value():
            raise ValueError("no Gemini API key: set GEMINI_API_KEY or GOOGLE_API_KEY, "
                             "or name a Prefect Secret block")
        self.labels_ = tuple(labels)
        self.model_ = self.model
        self.prompt_sha256_ = sha256_text(self.prompt)
        self.params_sha256_ = sha256_json({
            "temperature": self.temperature, "media": self.media, "labels": self.labels_,
            "n_frames": self.n_frames if self.media == "frames" else None,
            "schema": label_schema(self.labels_)})
        options = types.HttpOptions(base_url=self.base_url, api_version=self.api_version,
                                    timeout=int(self.timeout_s * 1000))
        self.client_ = genai.Client(api_key=self.api_key.get_secret_value(), http_options=options)
        self._uploads: dict[str, object] = {}
        return self

    def prompt_sha256(self, question: str = LABEL) -> str:
        return self.prompt_sha256_ if question == LABEL else sha256_text(self.enrich_prompt)

    def supports(self, question: str) -> bool:
        return question in (LABEL, ENRICH)

    def estimate_cost(self, clip: Clip, question: str = LABEL) -> float:
        seconds = clip.duration_s or 10.0
        frames = self.n_frames if self.media == "frames" else seconds     # 1 frame/s for mp4
        tokens_in = PROMPT_TOKENS + TOKENS_PER_FRAME * frames + AUDIO_TOKENS_PER_S * seconds
        return self.cost(tokens_in, OUTPUT_TOKENS[question])

    def cost(self, tokens_in: int | float | None, tokens_out: int | float | None) -> float:
        return ((tokens_in or 0) * self.usd_per_mtok_in + (tokens_out or 0) * self.usd_per_mtok_out) / 1e6

    def ask(self, clip: Clip, question: str = LABEL) -> Answer:
        from google.genai import types

        template = self.prompt if question == LABEL else self.enrich_prompt
        parts = [*self._media_parts(clip), render(template, self.labels_, clip.text)]
        config = types.GenerateContentConfig(temperature=self.temperature)
        if question == LABEL:
            config.response_mime_type = "application/json"
            config.response_schema = label_schema(self.labels_)
        started = time.monotonic()
        response, failure = None, None
        try:
            response = self.client_.models.generate_content(model=self.model, contents=parts,
                                                            config=config)
        except Exception as exc:
            failure = classify_error(exc, self.api_key)
        if failure is not None:
            # Raised outside the except block: the client's exception may quote the request,
            # so it must not ride along as __context__.
            raise failure
        answer = self._read(response, question)
        answer.latency_s = time.monotonic() - started
        return answer

    def _read(self, response, question: str) -> Answer:
        usage = response.usage_metadata
        tokens_in = usage.prompt_token_count if usage else None
        tokens_out = ((usage.candidates_token_count or 0) + (usage.thoughts_token_count or 0)
                      if usage else None)
        meta = {"tokens_in": tokens_in, "tokens_out": tokens_out,
                "cost_usd": self.cost(tokens_in, tokens_out)}
        blocked = response.prompt_feedback and response.prompt_feedback.block_reason
        candidate = response.candidates[0] if response.candidates else None
        text = _text(candidate)
        if blocked or candidate is None or (text is None and _finish(candidate) not in ("STOP", None)):
            reason = blocked or (_finish(candidate) if candidate else "no candidates")
            return Answer(REFUSED, raw_text=text, error=f"blocked: {_name(reason)}", **meta)
        if question == ENRICH:
            if not (text or "").strip():
                return Answer(UNPARSEABLE, raw_text=text, error="empty answer", **meta)
            return Answer(ANSWERED, raw_text=text.strip(), **meta)
        answer = parse_answer(text, self.labels_)
        for k, v in meta.items():
            setattr(answer, k, v)
        return answer

    def _media_parts(self, clip: Clip) -> list:
        from google.genai import types

        if self.media == "frames":
            parts = [types.Part.from_bytes(data=jpeg, mime_type="image/jpeg")
                     for jpeg in sample_frames(clip.video_path, self.n_frames)] if clip.video_path else []
            if clip.audio_path:
                path = Path(clip.audio_path)
                parts.append(types.Part.from_bytes(data=path.read_bytes(),
                                                   mime_type=MIME.get(path.suffix.lower(), "audio/wav")))
            return parts
        path = Path(clip.video_path or clip.audio_path or "")
        if not path.is_file():
            return []
        mime = MIME.get(path.suffix.lower(), "video/mp4")
        if path.stat().st_size <= self.inline_max_bytes:
            return [types.Part.from_bytes(data=path.read_bytes(), mime_type=mime)]
        uploaded = self._upload(path, mime, clip.video_sha256 or str(path))
        return [types.Part.from_uri(file_uri=uploaded.uri, mime_type=mime)]

    def _upload(self, path: Path, mime: str, key: str, wait_s: float = 300.0):
        """Upload through the File API once per file and run; wait until it is processed."""
        from google.genai import types

        if key not in self._uploads:
            file, failure = None, None
            try:
                file = self.client_.files.upload(file=str(path),
                                                 config=types.UploadFileConfig(mime_type=mime))
                deadline = time.monotonic() + wait_s
                while _name(file.state) == "PROCESSING" and time.monotonic() < deadline:
                    time.sleep(2)
                    file = self.client_.files.get(name=file.name)
            except Exception as exc:
                failure = classify_error(exc, self.api_key)
            if failure is not None:
                raise failure                 # outside the except block: no __context__
            if _name(file.state) != "ACTIVE":
                raise TeacherError(f"uploaded file {file.name} is {_name(file.state)}", False)
            self._uploads[key] = file
        return self._uploads[key]


def _name(value) -> str:
    return getattr(value, "value", None) or str(value)


def _finish(candidate) -> str | None:
    return _name(candidate.finish_reason) if candidate.finish_reason else None


def _text(candidate) -> str | None:
    if candidate is None or candidate.content is None or not candidate.content.parts:
        return None
    texts = [p.text for p in candidate.content.parts if p.text and not p.thought]
    return "".join(texts) if texts else None


def sample_frames(video_path: str, n: int, max_side: int = 512) -> list[bytes]:
    """`n` frames spread evenly over the video, as JPEG bytes (longest side <= max_side)."""
    import av
    import cv2

    # Two passes (count the packets, then decode keeping only the picks) so that a long
    # 1080p clip is never held in memory whole.
    with av.open(video_path) as container:
        count = sum(1 for packet in container.demux(video=0) if packet.size)
    wanted = {round(i * (count - 1) / max(n - 1, 1)) for i in range(min(n, count))}
    picks = []
    with av.open(video_path) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index in wanted:
                picks.append(frame.to_ndarray(format="bgr24"))
    out = []
    for image in picks:
        scale = max_side / max(image.shape[:2])
        if scale < 1:
            image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
        if ok:
            out.append(data.tobytes())
    return out
