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
import os
import weakref
import zlib
from array import array
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

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


def _checked_row(line: bytes, path: str | Path, number: int) -> dict:
    """One non-blank line parsed as a JSON object; ValueError naming it (`path`:line)."""
    try:
        row = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}:{number}: not UTF-8 ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{number}: not a JSON line ({exc.msg})") from None
    if not isinstance(row, dict):
        raise ValueError(f"{path}:{number}: not a JSON object")
    return row


def _key_hash(key: str) -> int:
    """A clip key's 64-bit hash: Python's own, stable within the process that holds the index,
    which is all the index needs."""
    return hash(key)


class LineIndex:
    """Where each clip's line is in the answers file: per line its key's hash, start, end and
    CRC-32, sorted by hash, and among lines of one hash the later first (a later line for the
    same clip wins); 28 bytes a line, where a map of keys to (start, end) was ~220 (+23 MB for
    the teacher stage from 25,000 to 100,000 lines). A hash may match more than one line:
    whose line it is, the caller reads from the line itself."""

    def __init__(self, hashes: Sequence[int], starts: Sequence[int], ends: Sequence[int],
                 crcs: Sequence[int]) -> None:
        hashes, starts = np.asarray(hashes, np.int64), np.asarray(starts, np.int64)
        order = np.lexsort((-starts, hashes))
        self.hashes, self.starts = hashes[order], starts[order]
        self.ends, self.crcs = np.asarray(ends, np.int64)[order], np.asarray(crcs, np.uint32)[order]

    def __len__(self) -> int:
        return len(self.hashes)

    def spans(self, key: str) -> Iterator[tuple[int, int, int]]:
        """(start, end, CRC-32) of each line whose key hashes as `key` does, the later first:
        `key`'s, if it has any, and any whose hash collides with it."""
        h = _key_hash(key)
        i = int(np.searchsorted(self.hashes, h))
        while i < len(self.hashes) and self.hashes[i] == h:
            yield int(self.starts[i]), int(self.ends[i]), int(self.crcs[i])
            i += 1


def index_answers(f: BinaryIO, path: str | Path) -> tuple[LineIndex, set[str], str]:
    """Read the answers file `f` (binary, from its start) once, a line at a time: where each
    clip's line is (by clip name or id), the models named in it, and the file's sha256; a bad
    line raises ValueError naming it (`path`:line). Neither the file's bytes nor a map of its
    keys is held."""
    hashes, starts, ends, crcs = array("q"), array("q"), array("q"), array("I")
    models: set[str] = set()
    digest = hashlib.sha256()
    offset = 0
    for number, line in enumerate(f, start=1):
        digest.update(line)
        if line.strip():
            key, model = _line(_checked_row(line, path, number), path, number)
            models.add(model)
            hashes.append(_key_hash(key))
            starts.append(offset)
            ends.append(offset + len(line))
            crcs.append(zlib.crc32(line))
        offset += len(line)
    return LineIndex(hashes, starts, ends, crcs), models, digest.hexdigest()


class ReplayTeacher(Teacher):
    """Answers from a JSONL file. `model`: the model name to record (default: the file's).

    `fit` reads the file once, a line at a time, checks every line and keeps where each clip's
    line is (`LineIndex`) and the file open; `ask` reads and parses that line (a 100,000-line
    file's parsed answers held ~85 MB for the whole run, its bytes 12.5 MB, and a batch job's
    output, whose lines carry whole responses, ~1.5 KB a line). The answers are those of the
    bytes whose hash is in the cache key: the file stays open, so one replaced meanwhile (a
    new file renamed over it) is still read as it was, and a line whose bytes changed in place
    (its CRC-32 differs) is refused, not answered."""

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
        # One descriptor, open while the teacher lives (closed with it), indexes, hashes and
        # then reads the lines: the file a rename put in its place later is not read.
        self.close()
        self._open()
        with os.fdopen(os.dup(self.fd_), "rb") as f:
            self.lines_, models, self.prompt_sha256_ = index_answers(f, path)
        self.model_ = self.model or (models.pop() if len(models) == 1 else "replay")
        self.params_sha256_ = sha256_json({"labels": self.labels_})
        return self

    def __getstate__(self) -> dict:
        # A pickled teacher (a task result persisted, say) carries its index, not the descriptor:
        # the copy opens the file again, and its CRC-32 checks refuse lines that changed since.
        return {k: v for k, v in self.__dict__.items() if k not in ("fd_", "_closer")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if "lines_" in state:
            self._open()

    def _open(self) -> None:
        """Open the answers file for this teacher's life (closed by `close` or with it)."""
        self.fd_ = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        self._closer = weakref.finalize(self, os.close, self.fd_)

    def close(self) -> None:
        """Close the answers file (a fitted teacher is closed when it is let go)."""
        closer = getattr(self, "_closer", None)
        if closer is not None:
            closer()
        self.fd_ = -1                   # asked after this: EBADF, never a reused descriptor

    def ask(self, clip: Clip, question: str = "label") -> Answer:
        for key in (clip.name, clip.clip_id):            # a line for the name first, as fit keys them
            row = self._row(key)
            if row is not None:
                return _answer(row, self.labels_)
        raise TeacherError(f"no answer for {clip.name} in {Path(self.path).name}", False)

    def _row(self, key: str) -> dict | None:
        """The parsed line of clip `key` (its latest), or None."""
        for start, end, crc in self.lines_.spans(key):
            line = os.pread(self.fd_, end - start, start)
            if len(line) != end - start or zlib.crc32(line) != crc:
                raise TeacherError(f"{Path(self.path).name} changed since the teacher read it (the "
                                   f"line at byte {start}): its answers no longer match the file "
                                   "hashed into the cache key; run the teacher again", False)
            row = json.loads(line)
            if _line(row, self.path, 0)[0] == key:
                return row
        return None
