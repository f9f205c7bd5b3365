"""Token statistics, the histogram and the train/validation split."""
import pytest

from studio.data import DatasetError, histogram, split, token_stats


def test_token_stats_on_known_lengths():
    assert token_stats([5, 1, 3, 2, 4], max_length=3) == {
        "min": 1, "median": 3, "p95": 5, "max": 5, "mean": 3.0, "over_limit": 2, "count": 5}
    stats = token_stats(list(range(1, 21)), max_length=20)
    assert (stats["median"], stats["p95"], stats["over_limit"]) == (10.5, 19, 0)  # nearest rank: the 19th of 20
    assert token_stats([], 10) == {"min": None, "median": None, "p95": None, "max": None, "mean": None,
                                   "over_limit": 0, "count": 0}


def test_histogram():
    assert histogram([0, 5, 10, 4], bins=2) == {"counts": [2, 2], "edges": [0, 5, 10]}
    assert histogram([7, 7, 7], bins=2) == {"counts": [3, 0], "edges": [7, 7.5, 8]}
    assert histogram([], bins=5) == {"counts": [], "edges": []}
    assert sum(histogram(list(range(1000)), bins=20)["counts"]) == 1000


def test_split_is_deterministic_and_complete():
    records = [{"text": str(i)} for i in range(100)]
    train, val = split(records, 0.1, seed=42)
    assert (len(train), len(val)) == (90, 10)
    assert split(records, 0.1, seed=42) == (train, val)
    assert split(records, 0.1, seed=7)[1] != val
    assert sorted(train + val, key=lambda r: int(r["text"])) == records
    assert train == sorted(train, key=lambda r: int(r["text"]))  # the records keep their order


@pytest.mark.parametrize("n, fraction, sizes", [(2, 0.1, (1, 1)), (1, 0.5, (1, 0)), (10, 0.0, (10, 0)),
                                                (0, 0.2, (0, 0)), (3, 0.9, (1, 2))])
def test_split_sizes(n, fraction, sizes):
    train, val = split(list(range(n)), fraction, seed=1)
    assert (len(train), len(val)) == sizes


def test_split_refuses_a_fraction_out_of_range():
    with pytest.raises(DatasetError, match="validation fraction"):
        split([1, 2], 1.0, seed=1)
