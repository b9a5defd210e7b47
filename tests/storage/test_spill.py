"""The spill file: arrays kept on disk, a range at a time."""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest

from storage.spill import SpillFile


def test_regions_read_zeros_until_written_and_round_trip(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    spill = SpillFile()
    a = spill.reserve(6 * 4)
    b = spill.reserve(10 * 2)
    assert (a, b, spill.size) == (0, 24, 44)
    assert np.array_equal(spill.read(b, np.uint16, (2, 5)), np.zeros((2, 5), np.uint16))
    values = np.arange(6, dtype=np.float32).reshape(3, 2)
    spill.write(a, values)
    spill.write(b + 4, np.array([7, 8], np.uint16))
    got = spill.read(a, np.float32, (3, 2))
    assert np.array_equal(got, values) and got.flags.writeable
    assert spill.read(b, np.uint16, (5,)).tolist() == [0, 0, 7, 8, 0]
    assert spill.read(a + 8, np.float32, (2,)).tolist() == [2.0, 3.0]      # part of a region
    # Never a named file in TMPDIR, so a killed process leaves nothing behind.
    assert os.listdir(tmp_path) == []
    spill.close()
    assert spill.closed


def test_reads_and_writes_outside_the_reserved_regions_are_refused():
    spill = SpillFile()
    at = spill.reserve(8)
    with pytest.raises(ValueError, match="outside the spill file"):
        spill.write(at + 4, np.zeros(2, np.float32))
    with pytest.raises(ValueError, match="outside the spill file"):
        spill.read(at, np.float32, (3,))
    with pytest.raises(ValueError, match="-1 bytes"):
        spill.reserve(-1)
    spill.close()
