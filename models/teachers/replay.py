"""The replay teacher: answers read from JSONL, for teams that label offline or in bulk.

Two line formats, told apart per line:
- ours (the composite corpus's `teacher/answers.jsonl`):
  `{"name": ..., "model": ..., "label": ... | null, "scores": {...}, "raw": ..., "reasoning": ...}`;
  the label must be in the label set (null: `refused`); the scores may cover part of the label
  set (a face model has no `surprise`) but name no other label.
- a Gemini batch job's output: `{"key": <clip name or id>, "response": <GenerateContentResponse>}`
  or `{"key": ..., "error": {...}}`; the response text is validated like a live answer.

The cache key's "prompt" is the file's sha256: a changed file is a new source.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from models.teachers.base import (
    ANSWERED,
    REFUSED,
    UNPARSEABLE,
    Answer,
    Clip,
    Teacher,
    TeacherError,
    sha256_json,
)
from models.teachers.parsing import parse_answer, parse_label, parse_scores


def own_line(row: dict, labels: tuple[str, ...]) -> Answer:
    raw = row.get("raw")
    raw_text = raw if isinstance(raw, str) else json.dumps(row, sort_keys=True)
    reasoning = row.get("reasoning") if isinstance(row.get("reasoning"), str) else None
    if row.get("label") is None:
        return Answer(REFUSED, raw_text=raw_text, error="the teacher gave no label")
    label, problem = parse_label(row["label"], labels)
    scores, score_problem = parse_scores(row.get("scores") or {}, labels, require_all=False)
    if problem or score_problem:
        return Answer(UNPARSEABLE, raw_text=raw_text, error=problem or score_problem)
    return Answer(ANSWERED, label=label, scores=scores, reasoning=reasoning, raw_text=raw_text)


def batch_line(row: dict, labels: tuple[str, ...]) -> Answer:
    """One line of a Gemini batch job's output file."""
    if row.get("error"):
        raise TeacherError(f"the batch job reported an error: {json.dumps(row['error'])[:500]}", False)
    response = row.get("response") or {}
    usage = response.get("usageMetadata") or {}
    meta = {"tokens_in": usage.get("promptTokenCount"),
            "tokens_out": (usage.get("candidatesTokenCount") or 0) + (usage.get("thoughtsTokenCount") or 0)}
    block = (response.get("promptFeedback") or {}).get("blockReason")
    candidates = response.get("candidates") or []
    parts = ((candidates[0].get("content") or {}).get("parts") or []) if candidates else []
    text = "".join(p.get("text", "") for p in parts if not p.get("thought")) or None
    if block or not candidates or (text is None and candidates[0].get("finishReason") != "STOP"):
        reason = block or (candidates[0].get("finishReason") if candidates else "no candidates")
        return Answer(REFUSED, raw_text=text, error=f"blocked: {reason}", **meta)
    answer = parse_answer(text, labels)
    answer.tokens_in, answer.tokens_out = meta["tokens_in"], meta["tokens_out"]
    return answer


def _is_batch(row: dict) -> bool:
    """A Gemini batch job's output line (else ours)."""
    return "key" in row and ("response" in row or "error" in row)


def _line(row: dict, path: str | Path, number: int) -> tuple[str, str]:
    """(key, model) of one parsed line; ValueError for a line of neither format."""
    if _is_batch(row):
        return str(row["key"]), (row.get("response") or {}).get("modelVersion") or "gemini-batch"
    if "name" in row or "clip_id" in row:
        return str(row.get("name") or row.get("clip_id")), str(row.get("model") or "replay")
    raise ValueError(f"{path}:{number}: neither our answer format (name, label, scores) "
                     "nor a batch job's output (key, response)")


def _answer(row: dict, labels: tuple[str, ...]) -> Answer:
    """The answer of one parsed line (a batch job's error raises TeacherError)."""
    if _is_batch(row):
        return batch_line(row, labels)
    return own_line(row, labels)


def index_answers(data: bytes, path: str | Path) -> tuple[dict[str, tuple[int, int]], set[str]]:
    """Where each clip's line is in the file's bytes `data` (by clip name or id: start, end)
    and the models named in it; a bad line raises ValueError naming it (`path`:line). A later
    line for the same clip wins."""
    where: dict[str, tuple[int, int]] = {}
    models: set[str] = set()
    start, number = 0, 0
    while start < len(data):
        end = data.find(b"\n", start)
        end = len(data) if end < 0 else end + 1
        number += 1
        line = data[start:end]
        if line.strip():
            try:
                row = json.loads(line.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise ValueError(f"{path}:{number}: not UTF-8 ({exc.reason})") from None
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not a JSON line ({exc.msg})") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path}:{number}: not a JSON object")
            key, model = _line(row, path, number)
            models.add(model)
            where[key] = (start, end)
        start = end
    return where, models


def _key_hash(key: str) -> int:
    """A clip key's 64-bit hash: Python's own, stable within the process that holds the index,
    which is all the index needs."""
    return hash(key)


class LineIndex:
    """Where each clip's line is in a file's bytes (`index_answers`' map): per line its key's
    hash, start and end, sorted by hash; 24 bytes a clip, where the map of keys to (start, end)
    was ~220 (+23 MB for the teacher stage from 25,000 to 100,000 lines). A hash may match
    more than one line: whose line it is, the caller reads from the line itself."""

    def __init__(self, where: Mapping[str, tuple[int, int]]) -> None:
        hashes = np.fromiter((_key_hash(k) for k in where), np.int64, len(where))
        spans = np.array(list(where.values()), np.int64).reshape(-1, 2)
        order = np.argsort(hashes, kind="stable")
        self.hashes, self.starts, self.ends = hashes[order], spans[order, 0], spans[order, 1]

    def __len__(self) -> int:
        return len(self.hashes)

    def spans(self, key: str) -> Iterator[tuple[int, int]]:
        """(start, end) of each line whose key hashes as `key` does: `key`'s, if it has one,
        and any whose hash collides with it."""
        h = _key_hash(key)
        i = int(np.searchsorted(self.hashes, h))
        while i < len(self.hashes) and self.hashes[i] == h:
            yield int(self.starts[i]), int(self.ends[i])
            i += 1


class ReplayTeacher(Teacher):
    """Answers from a JSONL file. `model`: the model name to record (default: the file's).

    `fit` reads the file once, checks every line and keeps its bytes and where each clip's
    line is (`LineIndex`); `ask` parses that line (a 100,000-line file's parsed answers held
    ~85 MB for the whole run, most of them served from the cache and never asked for). The
    answers are those of the bytes whose hash is in the cache key, whatever happens to the
    file meanwhile."""

    kind = "replay"

    def __init__(self, path: str | Path, model: str | None = None) -> None:
        self.path = path
        self.model = model

    def __repr__(self) -> str:
        return f"ReplayTeacher(path={str(self.path)!r}, model={self.model!r})"

    def fit(self, labels: tuple[str, ...]) -> ReplayTeacher:
        path = Path(self.path)
        if not path.is_file():
            raise ValueError(f"answers file {path} does not exist")
        self.labels_ = tuple(labels)
        self.data_ = path.read_bytes()
        self.prompt_sha256_ = hashlib.sha256(self.data_).hexdigest()
        where, models = index_answers(self.data_, path)
        self.lines_ = LineIndex(where)
        self.model_ = self.model or (models.pop() if len(models) == 1 else "replay")
        self.params_sha256_ = sha256_json({"labels": self.labels_})
        return self

    def ask(self, clip: Clip, question: str = "label") -> Answer:
        for key in (clip.name, clip.clip_id):            # a line for the name first, as fit keys them
            row = self._row(key)
            if row is not None:
                return _answer(row, self.labels_)
        raise TeacherError(f"no answer for {clip.name} in {Path(self.path).name}", False)

    def _row(self, key: str) -> dict | None:
        """The parsed line of clip `key`, or None."""
        for start, end in self.lines_.spans(key):
            row = json.loads(self.data_[start:end])
            if _line(row, self.path, 0)[0] == key:
                return row
        return None
