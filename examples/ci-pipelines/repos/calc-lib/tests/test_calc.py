import pytest

import calc


def test_mean():
    assert calc.mean([1, 2, 3, 4]) == 2.5


def test_median_of_odd_and_even_lengths():
    assert calc.median([5, 1, 3]) == 3
    assert calc.median([4, 1, 3, 2]) == 2.5


def test_percent_change():
    assert calc.percent_change(80, 100) == 25.0
    with pytest.raises(ZeroDivisionError):
        calc.percent_change(0, 1)
