"""Tests of skvaeinv._files: reading user tables."""

import numpy as np
import pytest

from skvaeinv._files import InputError, read_table


def test_read_table_header_and_blanks(tmp_path):
    (tmp_path / "t.txt").write_text("t\n1.5\n\n2.5\n")
    np.testing.assert_array_equal(read_table(tmp_path / "t.txt", "tt", 1), [1.5, 2.5])
    (tmp_path / "r.txt").write_text("1 2 3 4\n5 6 7 8\n")
    assert read_table(tmp_path / "r.txt", "rays", 4).shape == (2, 4)


def test_read_table_edge_cases(tmp_path):
    # a comma in a comment does not make a blank-separated file comma-separated
    (tmp_path / "c.txt").write_text("# survey A, borehole 1 to 2\n1 2 3 4\n5 6 7 8\n")
    assert read_table(tmp_path / "c.txt", "rays", 4).shape == (2, 4)
    # a typo in the first data row is an error, not a header
    (tmp_path / "typo.csv").write_text("O.5,0.5,1.6,0.5\n0,0.7,1.6,0.5\n")
    with pytest.raises(InputError, match="line 1"):
        read_table(tmp_path / "typo.csv", "rays", 4)
    # a byte-order mark (spreadsheets' "CSV UTF-8") before a header-less first row
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf0.0,1.0,6.5,1.0\n0.0,2.0,6.5,2.0\n")
    np.testing.assert_array_equal(read_table(tmp_path / "bom.csv", "rays", 4),
                                  [[0, 1, 6.5, 1], [0, 2, 6.5, 2]])
    np.save(tmp_path / "empty.npy", np.zeros((0, 4)))
    np.save(tmp_path / "tt2.npy", np.ones((5, 2)))
    (tmp_path / "latin.csv").write_bytes("t\xe9\n1.0\n".encode("latin-1"))
    for name, n_cols, match in [("empty.npy", 4, "no data rows"),
                                ("tt2.npy", 1, r"expected \(n,\) or \(n, 1\)"),
                                ("latin.csv", 1, "UTF-8"), (".", 1, "not a file")]:
        with pytest.raises(InputError, match=match):
            read_table(tmp_path / name, "x", n_cols)
