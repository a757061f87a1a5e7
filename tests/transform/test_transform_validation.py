"""Transform files are validated on load: one InputError naming the unusable field."""

from __future__ import annotations

import json

import numpy as np
import pytest

import gpualign
from gpualign.transform import PolynomialDistortion, Transform


@pytest.fixture
def saved(tmp_path):
    c = np.zeros((2, 4, 4))
    c[0, 2, 0], c[1, 1, 1], c[0, 0, 3] = 0.3, -0.2, 0.05
    t = Transform(np.array([[1.0, 0.02, 3.0], [-0.02, 1.0, -2.0]]),
                  PolynomialDistortion(c, (50.0, 40.0, 50.0, 40.0), (-1.0, 1.0, -1.0, 1.0)))
    path = tmp_path / "t.json"
    t.save(path)
    return path


def _mutated(path, edit):
    d = json.loads(path.read_text())
    edit(d["transform"])
    bad = path.with_name("bad.json")
    bad.write_text(json.dumps(d))
    return bad


@pytest.mark.parametrize(("edit", "message"), [
    (lambda t: t["coeffs"][0][2].__setitem__(0, "nan"), "coeffs hold non-finite values"),
    (lambda t: t.__setitem__("coeffs", [[1.0, 2.0], [3.0, 4.0]]), "coeffs must have shape"),
    (lambda t: t.__setitem__("coeffs", np.zeros((2, 12, 12)).tolist()),
     "degree 11 exceed the largest degree 9"),
    (lambda t: t.__setitem__("matrix", [[0.0, 0.0, 1.0], [0.0, 0.0, 2.0]]), "matrix is singular"),
    (lambda t: t.__setitem__("matrix", [[1.0, "inf", 0.0], [0.0, 1.0, 0.0]]),
     "matrix must be 2x3 finite"),
    (lambda t: t.__setitem__("norm", [0.0, 0.0, -1.0, 1.0]), "norm must be 4 finite numbers"),
    (lambda t: t.__setitem__("clip", [1.0, -1.0, -1.0, 1.0]), "clip must be"),
])
def test_bad_fields_are_named(saved, edit, message):
    bad = _mutated(saved, edit)
    for load in (gpualign.Solution.load, Transform.load):
        with pytest.raises(gpualign.InputError, match=message):
            load(bad)


def test_a_good_file_still_loads_exactly(saved):
    t = Transform.load(saved)
    assert t.degree == 3 and t.coeffs[0, 2, 0] == 0.3 and t.norm == (50.0, 40.0, 50.0, 40.0)
