"""Property-based tests of the CSV reader, the manifest parser and the MER2025 label CSVs.

What tests/storage/test_ingest.py's round trip leaves out: control characters and line breaks
in cells, a BOM and CRLF, the line each row is named by, arbitrary bytes, labels spelled in
any case, width or spacing, duplicates spelled differently, and every manifest row ending as
exactly one clip whose errors name the file, the line or the clip.
"""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage import ingest
from storage.labels import MER2025_LABELS, normalize_label

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
# Any text a cell may hold: line breaks, tabs, quotes, commas, BOMs, CJK, emoji; not lone surrogates
# (a str that cannot exist in a UTF-8 file) and not NUL (written below as raw bytes instead).
CELL = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=16)
SPICY = st.sampled_from(["", " ", ",", '"', '""', "\n", "\r\n", "\r", "\ufeff", "é", "你好", "\t", "a,b"])
CELLS = st.one_of(CELL, SPICY, st.tuples(SPICY, CELL, SPICY).map("".join))
LINE_END = re.compile(r"\r\n|\r|\n")


def write_csv(path, header, rows, bom: bool, crlf: bool) -> list[int]:
    """Write rows as RFC 4180 says (a cell holding a comma, quote or line break is quoted, its
    quotes doubled); returns the line each row starts on (1-based). Not csv.writer: with "\n"
    as line end it leaves a lone "\r" unquoted, which no reader can then tell from a line end."""
    end = "\r\n" if crlf else "\n"

    def cell(text: str) -> str:
        return f'"{text.replace(chr(34), chr(34) * 2)}"' if re.search(r'[,"\r\n]', text) else text

    lines, starts, at = [",".join(map(cell, header))], [], 2
    for row in rows:
        lines.append(",".join(map(cell, row)))
        starts.append(at)
        at += len(LINE_END.findall(lines[-1])) + 1
    text = "".join(line + end for line in lines)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return starts


@SETTINGS
@given(rows=st.lists(st.tuples(CELLS, CELLS, CELLS), min_size=0, max_size=8), bom=st.booleans(),
       crlf=st.booleans())
def test_read_csv_round_trips_any_text_and_names_each_row_by_its_first_line(tmp_path, rows, bom, crlf):
    path = tmp_path / "t.csv"
    starts = write_csv(path, ["NAME", " Discrete", "valence "], rows, bom, crlf)
    parsed, warnings = ingest.read_csv(path, ("name", "discrete"), ("valence",))
    kept = [(row, line) for row, line in zip(rows, starts, strict=True) if any(c.strip() for c in row)]
    assert [tuple(r.values[c] for c in ("name", "discrete", "valence")) for r in parsed] == \
        [tuple(c.strip() for c in row) for row, _ in kept]
    assert [r.line for r in parsed] == [line for _, line in kept]
    assert all(not r.bad_utf8 for r in parsed)
    assert warnings == []


@SETTINGS
@given(cells=st.lists(st.binary(max_size=12), min_size=2, max_size=6), nul=st.booleans())
def test_bytes_that_are_not_utf8_are_flagged_per_cell_never_raised(tmp_path, cells, nul):
    if nul:
        cells = [c + b"\x00" for c in cells]
    quoted = [b'"' + c.replace(b'"', b'""') + b'"' for c in cells]
    path = tmp_path / "t.csv"
    path.write_bytes(b"name,english\n" + b"\n".join(q + b"," + q for q in quoted) + b"\n")
    parsed, _ = ingest.read_csv(path, ("name", "english"))
    for row in parsed:
        for col in ("name", "english"):
            value = row.values[col]
            assert isinstance(value, str) and value == value.strip()
            value.encode("utf-8")                                   # always encodable
    flagged = [bool(r.bad_utf8) for r in parsed]
    expected = []
    for c in cells:
        try:
            ok = bool(c.decode("utf-8").strip())
        except UnicodeDecodeError:
            expected.append(True)
            continue
        if ok:
            expected.append(False)
    assert flagged == expected


@SETTINGS
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes_give_rows_or_a_layout_error_naming_the_file(tmp_path, data):
    path = tmp_path / "junk.csv"
    path.write_bytes(data)
    try:
        rows, _ = ingest.read_csv(path, ("name",))
    except ingest.LayoutError as exc:
        assert str(path) in str(exc)
    else:
        assert all(isinstance(r.values.get("name", ""), str) for r in rows)


def test_an_unclosed_quote_swallowing_the_file_is_a_layout_error_naming_file_and_line(tmp_path):
    path = tmp_path / "subtitle_chieng.csv"
    path.write_text('name,english\na,"hello\n' + "b,more text\n" * 20000, encoding="utf-8")
    with pytest.raises(ingest.LayoutError, match=r"subtitle_chieng.csv cannot be read as CSV at line "
                                                 r"\d+: field larger than field limit"):
        ingest.read_csv(path, ("name", "english"))


LABELS = list(MER2025_LABELS)


def spellings(label: str) -> st.SearchStrategy[str]:
    """The same label as people type it: any case, full width, padded with spaces or tabs."""
    def respell(case: str, wide: bool, pad: tuple[str, str]) -> str:
        text = {"lower": label, "upper": label.upper(), "title": label.title()}[case]
        if wide:
            text = "".join(chr(ord(ch) + 0xFEE0) for ch in text)    # ASCII -> full-width forms
        return pad[0] + text + pad[1]
    pads = st.tuples(st.sampled_from(["", " ", "  ", "\t"]), st.sampled_from(["", " ", "\t "]))
    return st.builds(respell, st.sampled_from(["lower", "upper", "title"]), st.booleans(), pads)


LABEL_CELL = st.one_of(st.sampled_from(LABELS).flatmap(spellings),
                       st.sampled_from(["", "contempt", "HAPPY!"]))
NAME = st.one_of(st.sampled_from(["a", "b", " a ", "c\t", "", "x/y", "..", "d"]),
                 st.text("abcé你_-", min_size=1, max_size=4))


@SETTINGS
@given(rows=st.lists(st.tuples(NAME, LABEL_CELL), min_size=1, max_size=10), bom=st.booleans(),
       crlf=st.booleans())
def test_mer2025_labels_any_spelling_duplicates_and_conflicts(tmp_path, rows, bom, crlf):
    write_csv(tmp_path / ingest.MER_TRAIN_CSV, ["name", "discrete", "valence"],
              [(n, lab, "") for n, lab in rows], bom, crlf)
    scanned = ingest.scan(tmp_path, MER2025_LABELS)
    specs = {s.name: s for s in scanned.clips}
    by_name: dict[str, set[str]] = {}
    for name, lab in rows:
        if name.strip() or lab.strip():
            by_name.setdefault(name.strip(), set()).add(normalize_label(lab))
    assert sorted(specs) == sorted(by_name)                          # one clip per distinct name
    for name, spec in specs.items():
        assert spec.split == "train"
        variants = by_name[name]
        if len(variants) > 1:
            assert spec.label is None
            assert any(f"in {ingest.MER_TRAIN_CSV} with different values" in e for e in spec.errors)
            continue
        (label,) = variants
        if label in LABELS and not ingest.name_error(name):
            assert spec.label == label and spec.errors == []
        elif label == "":
            assert f"labelled in {ingest.MER_TRAIN_CSV} but the label is empty" in spec.errors
        elif label not in LABELS:
            assert spec.label is None
            assert any(e.startswith("label ") and ingest.MER_TRAIN_CSV in e for e in spec.errors)


SPLIT_CELL = st.sampled_from(["", "train", "Train ", "LABELED", "unlabelled", "candidate", "test",
                              " TEST", "holdout", "dev"])
PATH_CELL = st.sampled_from(["", "v.mp4", "sub dir/clip, 1.mp4", "missing.wav", "../elsewhere.mp4"])


@SETTINGS
@given(rows=st.lists(st.tuples(NAME, PATH_CELL, PATH_CELL, CELLS, LABEL_CELL, SPLIT_CELL),
                     min_size=1, max_size=8), bom=st.booleans(), crlf=st.booleans())
def test_manifest_rows_become_one_clip_each_whose_errors_say_where(tmp_path, rows, bom, crlf):
    manifest = tmp_path / "m.csv"
    starts = write_csv(manifest, ["name", "video", "audio", "text", "label", "split"], rows, bom, crlf)
    scanned = ingest.scan(manifest, MER2025_LABELS)
    probes, _ = ingest.probe_with_cache(ingest.media_paths(scanned), None)
    registry = ingest.build_registry(scanned, "m", probes)
    listed = {}
    for row, line in zip(rows, starts, strict=True):
        if any(c.strip() for c in row):
            listed.setdefault(row[0].strip(), []).append((row, line))
    assert sorted(registry["name"]) == sorted(listed)
    assert registry["status"].isin(["ok", "degraded", "error"]).all()
    assert registry.loc[registry["status"] != "ok", "reason"].notna().all()
    for spec in scanned.clips:
        group = listed[spec.name]
        (name, video, audio, text, label, split), line = group[0]
        raw_split = split.strip().lower()
        if raw_split in ingest.SPLIT_ALIASES:
            assert spec.split == ingest.SPLIT_ALIASES[raw_split]
        elif raw_split:
            assert f"split {split.strip()!r} in m.csv line {line} is not one of train, candidate, test" \
                in spec.errors
        if not video.strip() and not audio.strip():
            assert f"m.csv line {line} gives neither a video nor an audio file" in spec.errors
        if len(group) == 1:
            assert spec.text == (text.strip() or None)
        for error in spec.errors:       # each says which file, line or clip it is about
            assert "m.csv" in error or repr(spec.name) in error or "clip name is empty" in error
        if spec.label is not None:
            assert spec.label in LABELS and spec.label == normalize_label(label)


def test_full_width_and_case_variants_are_one_label_not_a_conflict(tmp_path):
    wide = "".join(chr(ord(ch) + 0xFEE0) for ch in "HAPPY")
    assert unicodedata.normalize("NFKC", wide) == "HAPPY"
    (tmp_path / ingest.MER_TRAIN_CSV).write_text(f"name,discrete\na,happy\na, {wide} \n", encoding="utf-8")
    scanned = ingest.scan(tmp_path, MER2025_LABELS)
    (spec,) = scanned.clips
    assert spec.label == "happy" and spec.errors == []
    assert any("'a' listed 2 times (lines 2, 3); kept once" in w for w in scanned.warnings)


def test_names_that_are_not_utf8_are_errors_naming_file_and_line(tmp_path):
    (tmp_path / ingest.MER_CANDIDATES_CSV).write_bytes(b"name\nok_one\ncaf\xe9\n")
    scanned = ingest.scan(tmp_path, MER2025_LABELS)
    specs = {s.name: s for s in scanned.clips}
    assert specs["ok_one"].errors == []
    assert specs["caf\ufffd"].errors == [
        f"clip name 'caf\ufffd' in {ingest.MER_CANDIDATES_CSV} line 3 is not valid UTF-8"]
    assert specs["caf\ufffd"].video is None                      # never looked up as a file


def test_manifest_paths_that_are_not_utf8_are_errors(tmp_path):
    (tmp_path / "m.csv").write_bytes(b"name,video,audio\na,clip\xff.mp4,\nb,,snd\xfe.wav\n")
    scanned = ingest.scan(tmp_path / "m.csv", MER2025_LABELS)
    specs = {s.name: s for s in scanned.clips}
    assert "video path in m.csv line 2 is not valid UTF-8" in specs["a"].errors
    assert "audio path in m.csv line 3 is not valid UTF-8" in specs["b"].errors


def test_empty_name_says_where(tmp_path):
    (tmp_path / ingest.MER_TRAIN_CSV).write_text("name,discrete\n ,happy\n", encoding="utf-8")
    (spec,) = ingest.scan(tmp_path, MER2025_LABELS).clips
    assert spec.errors == [f"the clip name is empty in {ingest.MER_TRAIN_CSV} line 2"]

