"""Feature artifacts read column-wise from Arrow: the same matrices and sequences as from frames."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from storage.feature_cache import (
    SCHEMA,
    TRAINING_COLUMNS,
    ParquetBatches,
    Ragged,
    gather_sequences,
    gather_vectors,
    sequences,
    vectors,
)


def rows():
    """ok rows, a missing clip (no face: no values), an error row, and an ok row of zeros."""
    def row(cid, status, vec=None, seq=None):
        return {"clip_id": cid, "status": status, "dim": 3 if vec is not None else None,
                "vector": vec, "seq_len": None if seq is None else len(seq) // 2,
                "seq_dim": None if seq is None else 2, "sequence": seq}
    return [row("a", "ok", [1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0]),
            row("b", "missing"),
            row("c", "error"),
            row("d", "ok", [0.0, 0.0, 0.0], [5.0, 6.0]),
            row("e", "ok", [7.0, 8.0, 9.0], [9.0, 8.0, 7.0, 6.0, 5.0, 4.0])]


def table(records):
    fields = [SCHEMA.field(n) for n in TRAINING_COLUMNS]
    return pa.Table.from_pylist(records, schema=pa.schema(fields))


@pytest.mark.parametrize("chunks", [1, 2])
def test_a_table_gives_what_its_frame_gives(chunks):
    t = table(rows())
    if chunks == 2:                    # row groups read back as several chunks, one sliced
        t = pa.concat_tables([t.slice(0, 2), t.slice(2)])
    ids_t, x_t, ok_t = vectors(t)
    ids_f, x_f, ok_f = vectors(t.to_pandas())
    assert ids_t == ids_f == ["a", "b", "c", "d", "e"]
    assert ok_t.tolist() == ok_f.tolist() == [True, False, False, True, True]
    assert x_t.dtype == np.float32 and np.array_equal(x_t, x_f)
    sid_t, s_t, has_t = sequences(t)
    sid_f, s_f, has_f = sequences(t.to_pandas())
    assert has_t.tolist() == has_f.tolist() == [True, False, False, True, True]
    for a, b in zip(s_t, s_f, strict=True):
        assert (a is None and b is None) or (a.shape == b.shape and np.array_equal(a, b))
    assert s_t[4].shape == (3, 2) and s_t[4][2].tolist() == [5.0, 4.0]


def test_an_error_row_that_kept_values_is_not_read():
    records = rows()
    records[2]["vector"], records[2]["dim"] = [4.0, 4.0, 4.0], 3          # an error row with values
    _, x, ok = vectors(table(records))
    assert not ok[2] and (x[2] == 0).all() and x[4].tolist() == [7.0, 8.0, 9.0]


def test_a_vector_or_sequence_of_the_wrong_length_names_the_clip():
    records = rows()
    records[3]["vector"] = [1.0, 2.0]
    with pytest.raises(ValueError, match="clip 'd' has 2 values; the set's dimension is 3"):
        vectors(table(records))
    records = rows()
    records[4]["seq_len"] = 2
    with pytest.raises(ValueError, match="sequence of clip 'e' has 6 values, not seq_len x seq_dim = 2 x 2"):
        sequences(table(records))


def test_an_empty_table():
    ids, x, ok = vectors(table([]))
    assert ids == [] and x.shape == (0, 0) and ok.shape == (0,)
    _, seqs, has = sequences(table([]))
    assert len(seqs) == 0 and list(seqs) == [] and has.shape == (0,)


def test_gathered_rows_follow_the_asked_order_from_a_file_read_a_row_group_at_a_time(tmp_path):
    path = tmp_path / "set.parquet"
    pq.write_table(table(rows()), path, row_group_size=2)         # 3 row groups
    assert pq.ParquetFile(path).metadata.num_row_groups == 3
    source = ParquetBatches(path, TRAINING_COLUMNS)
    assert len(list(source)) == 3 and len(list(source)) == 3      # read again on each pass
    ids = ["e", "zz", "b", "a"]                                   # a clip with no row: absent
    x, present = gather_vectors(source, ids)
    assert present.tolist() == [True, False, False, True]
    assert x.tolist() == [[7.0, 8.0, 9.0], [0.0] * 3, [0.0] * 3, [1.0, 2.0, 3.0]]
    seqs, has = gather_sequences(source, ids)
    assert has.tolist() == [True, False, False, True]
    assert seqs[0].shape == (3, 2) and seqs[1] is None and seqs[2] is None
    assert seqs[3].tolist() == [[1.0, 2.0], [3.0, 4.0]]
    # The same from the whole table and from its frame.
    for other in (table(rows()), table(rows()).to_pandas()):
        x2, p2 = gather_vectors(other, ids)
        assert np.array_equal(x, x2) and np.array_equal(present, p2)


def test_a_clip_with_two_rows_takes_its_last():
    records = rows() + [dict(rows()[1], clip_id="a")]             # a's later row: missing
    x, present = gather_vectors(table(records), ["a", "e"])
    assert present.tolist() == [False, True] and (x[0] == 0).all()
    seqs, has = gather_sequences(table(records), ["a", "e"])
    assert has.tolist() == [False, True] and seqs[0] is None


def test_a_clip_whose_later_row_is_in_a_later_row_group_takes_that_row(tmp_path):
    path = tmp_path / "set.parquet"
    later = dict(rows()[3], clip_id="b")                              # b: missing, then ok
    earlier = dict(rows()[1], clip_id="a")                            # a: ok, then missing
    pq.write_table(table(rows() + [later, earlier]), path, row_group_size=5)
    seqs, has = gather_sequences(ParquetBatches(path, TRAINING_COLUMNS), ["a", "b", "e"])
    assert has.tolist() == [False, True, True] and seqs[0] is None
    assert seqs[1].tolist() == [[5.0, 6.0]] and seqs[2].shape == (3, 2)


def test_sequences_hold_no_array_per_clip_and_a_subset_copies_no_value():
    n = 20_000
    records = [{"clip_id": f"c{i:05d}", "status": "ok", "dim": None, "vector": None, "seq_len": 3,
                "seq_dim": 2, "sequence": [float(i)] * 6} for i in range(n)]
    source = table(records)
    ids = [f"c{i:05d}" for i in range(n)][::-1]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        seqs, has = gather_sequences(source, ids)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # A view per clip costs ~130 bytes; four integers and the mask cost 21.
    assert has.all() and held / n < 40, f"{held / n:.0f} bytes per clip"
    assert seqs[0].tolist() == [[n - 1.0] * 2] * 3 and seqs[-1].tolist() == [[0.0] * 2] * 3
    part = seqs.take([5, 0])
    assert len(part) == 2 and part[1].tolist() == seqs[0].tolist()
    assert np.shares_memory(part[0], seqs[5])
    assert [s[0, 0] for s in seqs[:3]] == [n - 1.0, n - 2.0, n - 3.0]
    picked = [7, 3, 7, 0]
    assert all(np.array_equal(a, b) and np.shares_memory(a, b)
               for a, b in zip(seqs.views(picked), [seqs[i] for i in picked], strict=True))
    none = Ragged.empty(2)
    assert none.views([1, 0]) == [None, None] and none[1] is None


def test_asking_for_a_clip_twice_is_an_error():
    with pytest.raises(ValueError, match="clip 'a' is asked for twice"):
        gather_vectors(table(rows()), ["a", "b", "a"])
