"""ETTh1 reading: errors that name file/line/column, Informer's split, train-only scaling."""
import numpy as np
import pytest
from shared_data import DATA, needs

from rnnkit.data.etth import ETT_SPLIT, ETTH1_COLUMNS, Scaler, load_series, read_series_csv, split_bounds
from rnnkit.data.registry import WHOLE, resolve
from rnnkit.errors import DataError


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_missing_column_names_the_file_and_line(tmp_path):
    p = _write(tmp_path / "s.csv", ["date,HUFL,OT", "2016-07-01 00:00:00,1.0,2.0"])
    with pytest.raises(DataError, match=r"s\.csv, line 1: missing column\(s\) HULL"):
        read_series_csv(p, ("HUFL", "HULL", "OT"))


def test_non_numeric_value_names_file_line_and_column(tmp_path):
    p = _write(tmp_path / "s.csv", ["date,a,b", "d0,1.0,2.0", "d1,1.5,oops"])
    with pytest.raises(DataError, match=r"s\.csv, line 3, column 'b': 'oops' is not a finite number"):
        read_series_csv(p)
    _write(p, ["date,a,b", "d0,1.0"])
    with pytest.raises(DataError, match=r"line 2, column 'b': missing value"):
        read_series_csv(p)
    _write(p, ["date,a", "d0,nan"])
    with pytest.raises(DataError, match="line 2, column 'a'"):
        read_series_csv(p)
    with pytest.raises(DataError, match="first column must be 'date'"):
        read_series_csv(_write(p, ["time,a", "d0,1"]))


def test_columns_are_returned_in_the_order_asked(tmp_path):
    p = _write(tmp_path / "s.csv", ["date,a,b,c", "d0,1,2,3", "d1,4,5,6", ""])
    t = read_series_csv(p, ("c", "a"))
    assert t.columns == ("c", "a") and t.values.tolist() == [[3, 1], [6, 4]] and t.dates == ["d0", "d1"]


def test_split_sizes_informer_and_proportional():
    assert ETT_SPLIT == (8640, 2880, 2880)
    assert split_bounds(17420) == {"train": (0, 8640), "valid": (8640, 11520), "test": (11520, 14400)}
    assert split_bounds(1000) == {"train": (0, 600), "valid": (600, 800), "test": (800, 1000)}


def test_scaling_statistics_come_from_the_train_rows_only(tmp_path):
    rng = np.random.default_rng(0)
    values = np.cumsum(rng.normal(size=(500, 3)), axis=0) + np.array([10.0, -5.0, 0.0])
    lines = ["date,x,y,z"] + [f"t{i}," + ",".join(f"{v:.6f}" for v in row) for i, row in enumerate(values)]
    s = load_series(_write(tmp_path / "s.csv", lines))
    a, b = s.bounds["train"]
    train = read_series_csv(tmp_path / "s.csv").values[a:b]
    np.testing.assert_allclose(s.scaler.mean, train.mean(0))
    np.testing.assert_allclose(s.scaler.std, train.std(0))
    np.testing.assert_allclose(s.rows("train").mean(0), 0.0, atol=1e-5)
    assert not np.allclose(s.rows("test").mean(0), 0.0, atol=1e-2)   # a drifting series: test is not centred
    again = load_series(tmp_path / "s.csv", scaler=Scaler.from_dict(s.scaler.to_dict()))
    np.testing.assert_array_equal(again.z, s.z)


@needs("etth1/ETTh1.csv")
def test_etth1_registered_read_and_split():
    path = resolve("etth1", DATA)[WHOLE]
    s = load_series(path, ETTH1_COLUMNS)
    assert s.z.shape == (17420, 7) and s.columns[-1] == "OT"
    assert {k: b - a for k, (a, b) in s.bounds.items()} == {"train": 8640, "valid": 2880, "test": 2880}
    raw = read_series_csv(path).values
    np.testing.assert_allclose(s.scaler.mean, raw[:8640].mean(0))
