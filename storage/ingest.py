"""Dataset ingest: read a corpus layout, probe its media, and build the clip registry.

Input: a dataset folder (MER2025 layout or a plain folder of videos) or a manifest CSV.
Output: the clip registry, one row per clip (REGISTRY_COLUMNS), sorted by name, with a
status (ok, degraded, error) and a reason for every clip that is not ok.

Layouts:
- mer2025: video/<name>.mp4, audio/<name>.wav, subtitle_chieng.csv (name, chinese,
  english), track1_train_disdim.csv (name, discrete, valence; labelled, split `train`),
  track_all_candidates.csv (name; the unlabelled pool, with the hidden test inside; split
  `candidate`).
- manifest: a CSV with name, video, audio, text, label, split (paths relative to the CSV).
- folder: video files in one folder, labelled where a labels.csv (name, discrete) says so.

Only an unusable layout raises (LayoutError); a bad clip is registered with its reason.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from storage.labels import normalize_label
from storage.media import probe_many, stat_key

LAYOUTS = ("mer2025", "manifest", "folder")
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".avi", ".mov", ".webm")
SPLITS = ("train", "candidate", "test")
# Statuses of clips that later stages use (degraded: a modality is missing, masked downstream).
USABLE = ("ok", "degraded")
# The registry columns the learning stages read (train, predict, mine, finalize): the others
# (paths, hashes, probe results, reasons) are ~2/3 of a registry's memory and stay on disk.
LEARNING_COLUMNS = ("clip_id", "name", "split", "label", "status")
SPLIT_ALIASES = {"train": "train", "labeled": "train", "labelled": "train",
                 "candidate": "candidate", "unlabeled": "candidate", "unlabelled": "candidate",
                 "test": "test"}
MER_TRAIN_CSV = "track1_train_disdim.csv"
MER_CANDIDATES_CSV = "track_all_candidates.csv"
MER_SUBTITLES_CSV = "subtitle_chieng.csv"
MANIFEST_CSV = "manifest.csv"

REGISTRY_COLUMNS = {
    "clip_id": "string", "dataset": "string", "name": "string", "split": "string",
    "label": "string", "valence": "float64", "video_path": "string", "audio_path": "string",
    "text": "string", "video_sha256": "string", "audio_sha256": "string",
    "duration_s": "float64", "has_video": "bool", "has_audio": "bool", "has_text": "bool",
    "fps": "float64", "width": "Int64", "height": "Int64", "audio_sample_rate": "Int64",
    "audio_channels": "Int64", "status": "string", "reason": "string",
}


class LayoutError(ValueError):
    """The dataset as a whole cannot be read (missing folder or file, missing columns)."""


@dataclass
class ClipSpec:
    """One clip as the layout lists it, before its media are probed."""

    name: str
    split: str
    label: str | None = None
    valence: float | None = None
    video: Path | None = None
    audio: Path | None = None
    text: str | None = None
    errors: list[str] = field(default_factory=list)      # make the clip unusable
    problems: list[str] = field(default_factory=list)    # leave it usable (degraded)


@dataclass
class LayoutScan:
    layout: str
    root: Path
    clips: list[ClipSpec]
    warnings: list[str]


@dataclass
class CsvRow:
    line: int
    values: dict[str, str]
    bad_utf8: set[str]


def read_csv(path: Path, required: Sequence[str], optional: Sequence[str] = ()
             ) -> tuple[list[CsvRow], list[str]]:
    """Rows of a CSV with lower-cased, stripped headers and stripped cells.

    Tolerates a BOM and CRLF. Cells that are not valid UTF-8 are kept (with U+FFFD) and named
    in `bad_utf8` so the caller can say which clip has them. Raises LayoutError when the file
    is missing or lacks a required column; unknown columns only produce a warning.
    """
    if not path.is_file():
        raise LayoutError(f"{path} is missing")
    raw = path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    text = raw.decode("utf-8", errors="surrogateescape")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise LayoutError(f"{path} is empty: expected a header with {', '.join(required)}")
        columns = [h.encode("utf-8", "replace").decode().strip().lower() for h in header]
        missing = [c for c in required if c not in columns]
        if missing:
            raise LayoutError(
                f"{path} lacks column(s) {', '.join(missing)}; found {', '.join(columns) or 'none'}"
            )
        rows, first_line = [], reader.line_num + 1
        for values in reader:           # a quoted cell may span lines: a row is named by its first
            if row := _csv_row(columns, values, first_line):
                rows.append(row)
            first_line = reader.line_num + 1
    except csv.Error as exc:            # e.g. an unclosed quote that swallows the rest of the file
        raise LayoutError(f"{path} cannot be read as CSV at line {reader.line_num}: {exc} "
                          f"(an unclosed quote?)") from None
    warnings = []
    unknown = [c for c in columns if c not in (*required, *optional)]
    if unknown:
        warnings.append(f"{path.name}: ignored unknown column(s) {', '.join(unknown)}")
    return rows, warnings


def _csv_row(columns: list[str], values: list[str], line: int) -> CsvRow | None:
    """One row's stripped cells by column (the first of repeated columns), None when blank."""
    if not any(v.strip() for v in values):
        return None
    row = CsvRow(line=line, values={}, bad_utf8=set())
    for col, value in zip(columns, values, strict=False):
        if col in row.values:
            continue
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            row.bad_utf8.add(col)
            value = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        row.values[col] = value.strip()
    return row


def name_error(name: str, row: CsvRow | None = None, file: str = "") -> str | None:
    """Why a clip name is unsafe as a file name inside the dataset, or None (`row`: the CSV row
    that lists it, if any, in `file`)."""
    if row is not None and "name" in row.bad_utf8:      # read with U+FFFD: no file has that name
        return f"clip name {name!r} in {file} line {row.line} is not valid UTF-8"
    if not name:
        return "the clip name is empty" + (f" in {file} line {row.line}" if row is not None else "")
    if "/" in name or "\\" in name or name in (".", "..") or ".." in name:
        return f"clip name {name!r} contains a path separator or '..'"
    if any(ord(ch) < 32 for ch in name):
        return f"clip name {name!r} contains a control character"
    return None


def _dedupe(rows: list[CsvRow], file: str, keys: Sequence[str]
            ) -> tuple[dict[str, CsvRow], dict[str, str], list[str]]:
    """First row per name; conflicting duplicates become an error for that name."""
    by_name: dict[str, list[CsvRow]] = defaultdict(list)
    for row in rows:
        by_name[row.values.get("name", "")].append(row)
    first, errors, warnings = {}, {}, []
    for name, group in by_name.items():
        first[name] = group[0]
        if len(group) == 1:
            continue
        lines = ", ".join(str(r.line) for r in group)
        # Compared as labels are (case, width and whitespace aside): 'Happy' repeats 'happy'.
        variants = {tuple(normalize_label(r.values.get(k, "")) for k in keys) for r in group}
        if len(variants) > 1:
            errors[name] = f"listed {len(group)} times in {file} with different values (lines {lines})"
        else:
            warnings.append(f"{file}: {name!r} listed {len(group)} times (lines {lines}); kept once")
    return first, errors, warnings


def _apply_label(spec: ClipSpec, raw: str | None, labels: Sequence[str], file: str) -> None:
    if raw is None or raw == "":
        if spec.split in ("train", "test"):
            spec.errors.append(f"labelled in {file} but the label is empty")
        return
    label = normalize_label(raw)
    if label not in labels:
        spec.errors.append(f"label {raw!r} in {file} is not in the label set ({', '.join(labels)})")
    else:
        spec.label = label


def _float_or_none(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def scan_mer2025(root: Path, labels: Sequence[str], text_column: str = "english") -> LayoutScan:
    train_csv, cand_csv = root / MER_TRAIN_CSV, root / MER_CANDIDATES_CSV
    if not train_csv.is_file() and not cand_csv.is_file():
        raise LayoutError(f"{root} has neither {MER_TRAIN_CSV} nor {MER_CANDIDATES_CSV}")
    warnings: list[str] = []
    listed: dict[str, tuple[str, CsvRow, str]] = {}
    conflicts: dict[str, str] = {}
    for file, split, required, optional in (
        (train_csv, "train", ("name", "discrete"), ("valence",)),
        (cand_csv, "candidate", ("name",), ()),
    ):
        if not file.is_file():
            warnings.append(f"{file.name} is missing: no {split} clips")
            continue
        rows, warn = read_csv(file, required, optional)
        warnings += warn
        first, errors, warn = _dedupe(rows, file.name, ("discrete",) if split == "train" else ())
        warnings += warn
        conflicts.update(errors)
        for name, row in first.items():
            if name in listed:
                other_file, other_row, _ = listed[name]
                conflicts[name] = (f"listed in both {other_file} (line {other_row.line}) "
                                   f"and {file.name} (line {row.line})")
                continue
            listed[name] = (file.name, row, split)

    subtitles: dict[str, CsvRow] = {}
    sub_csv = root / MER_SUBTITLES_CSV
    if sub_csv.is_file():
        rows, warn = read_csv(sub_csv, ("name", text_column), ("chinese", "english"))
        warnings += warn
        subtitles, _, warn = _dedupe(rows, sub_csv.name, ("chinese", "english"))
        warnings += warn
    else:
        warnings.append(f"{MER_SUBTITLES_CSV} is missing: no clip has a transcript")

    clips = []
    for name, (file, row, split) in sorted(listed.items()):
        spec = ClipSpec(name=name, split=split)
        if err := name_error(name, row, file):
            spec.errors.append(err)
        if name in conflicts:
            spec.errors.append(conflicts[name])
        if split == "train" and name not in conflicts:     # conflicting rows: no label is the right one
            _apply_label(spec, row.values.get("discrete"), labels, file)
            spec.valence = _float_or_none(row.values.get("valence"))
        if not spec.errors:
            spec.video = root / "video" / f"{name}.mp4"
            wav = root / "audio" / f"{name}.wav"
            spec.audio = wav if wav.exists() or (root / "audio").is_dir() else None
            sub = subtitles.get(name)
            if sub is None and sub_csv.is_file():
                spec.problems.append(f"no row in {MER_SUBTITLES_CSV}")
            elif sub is not None and text_column in sub.bad_utf8:
                spec.problems.append(
                    f"subtitle in {MER_SUBTITLES_CSV} line {sub.line} is not valid UTF-8")
            elif sub is not None:
                spec.text = sub.values.get(text_column) or None
                if spec.text is None:
                    spec.problems.append(f"empty {text_column} subtitle")
        clips.append(spec)
    listed_names = set(listed)
    video_dir = root / "video"
    if video_dir.is_dir():
        unlisted = sorted(p.stem for p in video_dir.glob("*.mp4") if p.stem not in listed_names)
        if unlisted:
            shown = ", ".join(unlisted[:5]) + (" ..." if len(unlisted) > 5 else "")
            warnings.append(f"{len(unlisted)} video(s) in video/ are listed in neither "
                            f"{MER_TRAIN_CSV} nor {MER_CANDIDATES_CSV} and were not registered: "
                            f"{shown}")
    return LayoutScan("mer2025", root, clips, warnings)


def scan_manifest(path: Path, labels: Sequence[str]) -> LayoutScan:
    rows, warnings = read_csv(path, ("name",), ("video", "audio", "text", "label", "split"))
    first, conflicts, warn = _dedupe(rows, path.name, ("video", "audio", "text", "label", "split"))
    warnings += warn
    base = path.parent
    clips = []
    for name, row in sorted(first.items()):
        v = row.values
        raw_split = v.get("split", "").lower()
        split = SPLIT_ALIASES.get(raw_split) or ("train" if v.get("label") else "candidate")
        spec = ClipSpec(name=name, split=split)
        if raw_split and raw_split not in SPLIT_ALIASES:
            spec.errors.append(f"split {v['split']!r} in {path.name} line {row.line} is not one "
                               f"of {', '.join(SPLITS)}")
        if err := name_error(name, row, path.name):
            spec.errors.append(err)
        if name in conflicts:
            spec.errors.append(conflicts[name])
        if (split in ("train", "test") or v.get("label")) and name not in conflicts:
            _apply_label(spec, v.get("label"), labels, path.name)
        if not v.get("video") and not v.get("audio"):
            spec.errors.append(f"{path.name} line {row.line} gives neither a video nor an audio file")
        for col in ("video", "audio"):
            if col in row.bad_utf8:     # the path read with U+FFFD would only be "missing"
                spec.errors.append(f"{col} path in {path.name} line {row.line} is not valid UTF-8")
        spec.video = (base / v["video"]) if v.get("video") else None
        spec.audio = (base / v["audio"]) if v.get("audio") else None
        if "text" in row.bad_utf8:
            spec.problems.append(f"text in {path.name} line {row.line} is not valid UTF-8")
        else:
            spec.text = v.get("text") or None
        clips.append(spec)
    return LayoutScan("manifest", path.parent, clips, warnings)


def scan_folder(root: Path, labels: Sequence[str]) -> LayoutScan:
    videos = {p.stem: p for p in sorted(root.iterdir())
              if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS}
    label_csv = root / "labels.csv"
    if not videos:
        raise LayoutError(
            f"{root} holds no video files ({', '.join(VIDEO_EXTENSIONS)}) and none of "
            f"{MER_TRAIN_CSV}, {MER_CANDIDATES_CSV}, {MANIFEST_CSV}"
        )
    warnings: list[str] = []
    label_rows: dict[str, CsvRow] = {}
    conflicts: dict[str, str] = {}
    if label_csv.is_file():
        rows, warn = read_csv(label_csv, ("name", "discrete"))
        label_rows, conflicts, warn2 = _dedupe(rows, label_csv.name, ("discrete",))
        warnings += warn + warn2
    clips = []
    for name in sorted(set(videos) | set(label_rows)):
        row = label_rows.get(name)
        spec = ClipSpec(name=name, split="train" if row else "candidate", video=videos.get(name))
        if err := name_error(name, row, label_csv.name):
            spec.errors.append(err)
        if name in conflicts:
            spec.errors.append(conflicts[name])
        if row is not None and name not in conflicts:
            _apply_label(spec, row.values.get("discrete"), labels, label_csv.name)
        if spec.video is None:
            spec.errors.append(f"labelled in labels.csv (line {row.line}) but no video file "
                               f"named {name}.* is in the folder")
        clips.append(spec)
    return LayoutScan("folder", root, clips, warnings)


def detect_layout(path: Path) -> str:
    if path.is_file():
        if path.suffix.lower() == ".csv":
            return "manifest"
        raise LayoutError(f"{path} is a file but not a manifest CSV")
    if not path.is_dir():
        raise LayoutError(f"dataset folder {path} does not exist")
    if (path / MER_TRAIN_CSV).is_file() or (path / MER_CANDIDATES_CSV).is_file():
        return "mer2025"
    if (path / MANIFEST_CSV).is_file():
        return "manifest"
    return "folder"


def scan(path: str | Path, labels: Sequence[str], layout: str | None = None,
         text_column: str = "english") -> LayoutScan:
    """Read the layout of a dataset (auto-detected unless `layout` is given)."""
    path = Path(path).resolve()
    layout = layout or detect_layout(path)
    if layout not in LAYOUTS:
        raise LayoutError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if not path.exists():
        raise LayoutError(f"dataset {path} does not exist")
    if layout == "mer2025":
        return scan_mer2025(path, labels, text_column)
    if layout == "manifest":
        return scan_manifest(path / MANIFEST_CSV if path.is_dir() else path, labels)
    if not path.is_dir():
        raise LayoutError(f"folder layout needs a folder, got file {path}")
    return scan_folder(path, labels)


def clip_id(dataset: str, name: str) -> str:
    """A stable id for a clip of a dataset (the same across re-ingests)."""
    return hashlib.blake2b(f"{dataset}\x00{name}".encode(), digest_size=8).hexdigest()


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def media_paths(scan_: LayoutScan) -> list[str]:
    """Every existing media file the layout refers to."""
    out = []
    for spec in scan_.clips:
        for p in (spec.video, spec.audio):
            if p is not None and p.is_file():
                out.append(str(p))
    return out


def probe_with_cache(paths: Iterable[str], cache: pd.DataFrame | None, jobs: int = 1
                     ) -> tuple[dict[str, dict], pd.DataFrame]:
    """Probe results for `paths`, reusing cached ones whose size and mtime are unchanged.

    Returns (probe per path, rows for the probe cache that are new or changed).
    """
    cached = {}
    if cache is not None and len(cache):
        for row in cache.itertuples(index=False):
            cached[row.path] = row
    results, todo, keys = {}, [], {}
    for p in paths:
        key = stat_key(p)
        keys[p] = key
        hit = cached.get(p)
        if hit is not None and key == (hit.size, hit.mtime_ns):
            results[p] = json.loads(hit.probe) if isinstance(hit.probe, str) else hit.probe
        else:
            todo.append(p)
    fresh = probe_many(todo, jobs=jobs)
    results.update(fresh)
    new_rows = pd.DataFrame(
        [{"path": p, "size": keys[p][0], "mtime_ns": keys[p][1], "sha256": r["sha256"],
          "probe": json.dumps(r, sort_keys=True)} for p, r in fresh.items()],
        columns=["path", "size", "mtime_ns", "sha256", "probe"],
    )
    return results, new_rows


def _clip_row(spec: ClipSpec, dataset: str, root: Path, probes: dict[str, dict]) -> dict:
    errors, problems = list(spec.errors), list(spec.problems)
    video = probes.get(str(spec.video)) if spec.video else None
    audio = probes.get(str(spec.audio)) if spec.audio else None
    rel_video = _relative(spec.video, root) if spec.video else None
    rel_audio = _relative(spec.audio, root) if spec.audio else None
    if spec.video is not None and not errors and video is None:
        problems.append(f"video file {rel_video} is missing")
    if spec.audio is not None and not errors and audio is None:
        problems.append(f"audio file {rel_audio} is missing")
    if video is not None and video["error"]:
        problems.append(f"video file {rel_video} {video['error']}")
    if audio is not None and audio["error"]:
        problems.append(f"audio file {rel_audio} {audio['error']}")
    v_ok = video is not None and not video["error"]
    a_ok = audio is not None and not audio["error"]
    vstream = video["video"] if v_ok else None
    has_video = bool(vstream) and not vstream.get("error")
    if v_ok and not vstream:
        problems.append(f"video file {rel_video} has no video stream")
    elif vstream and vstream.get("error"):
        problems.append(f"video file {rel_video}: {vstream['error']}")
    wav_stream = audio["audio"] if a_ok else None
    if a_ok and not wav_stream:
        problems.append(f"audio file {rel_audio} has no audio stream")
    elif wav_stream and wav_stream.get("error"):
        problems.append(f"audio file {rel_audio}: {wav_stream['error']}")
    mp4_audio = video["audio"] if v_ok else None
    if wav_stream and not wav_stream.get("error"):
        astream, audio_sha = wav_stream, audio["sha256"]
    elif mp4_audio and not mp4_audio.get("error"):
        astream, audio_sha = mp4_audio, None
        if spec.audio is not None:
            problems.append("audio is taken from the video's audio stream")
    else:
        astream, audio_sha = None, None
        if v_ok:                        # say so even when a wav was expected (and is bad or missing)
            problems.append(f"video file {rel_video} has no usable audio stream")
    has_audio = astream is not None
    if not errors and not has_video and not has_audio:
        errors.append("no usable video or audio")
    # The clip lasts as long as its picture; the mp4's AAC track runs longer by the encoder's
    # priming samples, so audio sets the duration only for clips without usable video.
    duration = (vstream or {}).get("duration_s") if has_video else (astream or {}).get("duration_s")
    status = "error" if errors else ("degraded" if problems else "ok")
    return {
        "clip_id": clip_id(dataset, spec.name), "dataset": dataset, "name": spec.name,
        "split": spec.split, "label": spec.label, "valence": spec.valence,
        "video_path": str(spec.video) if spec.video is not None else None,
        "audio_path": str(spec.audio) if spec.audio is not None else None,
        "text": spec.text,
        "video_sha256": video["sha256"] if video else None,
        "audio_sha256": audio_sha or (audio["sha256"] if audio else None),
        "duration_s": duration,
        "has_video": has_video, "has_audio": has_audio, "has_text": bool(spec.text),
        "fps": vstream.get("fps") if has_video else None,
        "width": vstream.get("width") if has_video else None,
        "height": vstream.get("height") if has_video else None,
        "audio_sample_rate": astream.get("sample_rate") if astream else None,
        "audio_channels": astream.get("channels") if astream else None,
        "status": status, "reason": "; ".join(errors + problems) or None,
    }


def build_registry(scan_: LayoutScan, dataset: str, probes: dict[str, dict]) -> pd.DataFrame:
    """The clip registry of a scanned dataset, given the probe of every media file."""
    rows = [_clip_row(spec, dataset, scan_.root, probes) for spec in scan_.clips]
    frame = pd.DataFrame(rows, columns=list(REGISTRY_COLUMNS))
    frame = frame.astype(REGISTRY_COLUMNS)
    return frame.sort_values("name", kind="stable").reset_index(drop=True)


def summarize(registry: pd.DataFrame) -> dict:
    """Counts of clips registered, by status, split, and by reason (one count per reason)."""
    reasons: dict[str, int] = defaultdict(int)
    for reason in registry["reason"].dropna():
        for part in str(reason).split("; "):
            reasons[_reason_kind(part)] += 1
    return {
        "registered": int(len(registry)),
        "ok": int((registry["status"] == "ok").sum()),
        "degraded": int((registry["status"] == "degraded").sum()),
        "errors": int((registry["status"] == "error").sum()),
        "by_split": {k: int(v) for k, v in registry["split"].value_counts().sort_index().items()},
        "by_reason": dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
    }


def _reason_kind(reason: str) -> str:
    """A reason without its clip-specific parts, so that reasons can be counted."""
    reason = re.sub(r"(video|audio) file \S+", r"\1 file", reason)
    reason = re.sub(r"'[^']*'", "'...'", reason)
    reason = re.sub(r"\(lines? [^)]*\)", "", reason)
    reason = re.sub(r"line \d+", "line N", reason)
    reason = re.sub(r"\d+(\.\d+)? s\b", "N s", reason)
    reason = re.sub(r"\([^)]*\)$", "", reason)
    return reason.strip()
