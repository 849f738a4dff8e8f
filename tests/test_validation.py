"""Tests of skvaeinv._validation: the input checks shared by the package."""

import numpy as np
import pytest

from skvaeinv._validation import check_traveltimes


def test_check_traveltimes():
    with pytest.warns(UserWarning, match="column-vector"):   # as scikit-learn's y
        y = check_traveltimes([[1.0], [2.5]])
    assert y.dtype == np.float64 and y.shape == (2,)
    with pytest.raises(ValueError, match=r"y: 2 non-positive traveltime\(s\), the first in "
                                         r"row 1 \(-1 ns\); traveltimes must be > 0 ns"):
        check_traveltimes([1.0, -1.0, 0.0])
    with pytest.raises(ValueError, match=r"tt.csv: 1 non-positive .* first in data row 2 "):
        check_traveltimes([1.0, 0.0], "tt.csv", file_rows=True)
    with pytest.raises(ValueError, match=r"y contains NaN or infinity: 1 value\(s\) \(first "
                                         r"at row 0\)"):
        check_traveltimes([np.nan, 1.0])
    with pytest.raises(ValueError, match="1-D array of traveltimes"):
        check_traveltimes(np.ones((2, 2)))
