"""Every bad argument of the public API raises a GpuAlignError subclass that carries a
hint, never a raw NumPy or builtin exception: images (dtype, shape, None), the warp
options (output_shape, dtype, cval, threads, interp_order, max_memory, weight_type),
the backend, the transform, the batch's sources, and every detection, matching and
fitting setting."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import gpualign
from gpualign._simulate import simulate_pair

S = (128, 128)


@pytest.fixture(scope="module")
def pair():
    return simulate_pair(S, n_stars=120, seed=5)


def _raises_with_hint(fn):
    with pytest.raises(gpualign.GpuAlignError) as info:
        fn()
    assert info.value.hint, f"no hint: {info.value}"
    assert "\n" not in str(info.value)
    return info.value


IMAGES = {
    "None": None,
    "datetime64": np.zeros(S, "M8[s]"),
    "complex": np.zeros(S, complex),
    "object": np.zeros(S, object),
    "strings": np.full(S, "a"),
    "1-D": np.zeros(100, np.float32),
    "3-D": np.zeros((2, *S), np.float32),
    "empty": np.zeros((0, 0), np.float32),
    "tiny": np.zeros((2, 2), np.float32),
    "all-NaN": np.full(S, np.nan, np.float32),
    "missing file": "no_such_file.fits",
    "a number": 42,
}


@pytest.mark.parametrize("name", IMAGES)
def test_bad_source(pair, name):
    _raises_with_hint(lambda: gpualign.align(IMAGES[name], pair.template, backend="numpy"))


@pytest.mark.parametrize("name", IMAGES)
def test_bad_template(pair, name):
    _raises_with_hint(lambda: gpualign.align(pair.source, IMAGES[name], backend="numpy"))


WARP_OPTIONS = [
    {"output_shape": (200_000, 200_000)},
    {"output_shape": (-1, 5)},
    {"output_shape": "abc"},
    {"output_shape": (10.5, 3)},
    {"dtype": np.int8},
    {"dtype": "complex64"},
    {"cval": "x"},
    {"cval": None},
    {"threads": 0},
    {"threads": 1.5},
    {"interp_order": 6},
    {"interp_order": "3"},
    {"max_memory": 0},
    {"max_memory": 1e-6},
    {"weight_type": "sigma"},
    {"source_mask": np.zeros((3, 3), bool)},
    {"source_weight": -np.ones(S)},
    {"backend": "tpu"},
    {"template_det": 5},
]


def _kw_id(kw: dict) -> str:
    (k, v), = kw.items()
    return f"{k}={v!r}"[:40]


@pytest.mark.parametrize("kw", WARP_OPTIONS, ids=_kw_id)
def test_bad_warp_option(pair, kw):
    _raises_with_hint(lambda: gpualign.align(pair.source, pair.template, **kw))


def _bad_values(field: dataclasses.Field) -> list:
    """Values no setting accepts: a wrong type, and out of range where a range is set."""
    m = field.metadata
    bad: list = [object()]
    if m.get("choices") is not None:
        bad.append("no-such-choice")
    elif m.get("kind") in (int, float):
        bad.append("x")
        if m.get("minimum") is not None:
            bad.append(m["minimum"] - 1)
        if m.get("maximum") is not None:
            bad.append(m["maximum"] + 1)
    return bad


SETTINGS = [(cls, f, v) for cls in (gpualign.DetectSettings, gpualign.MatchSettings,
                                    gpualign.FitSettings)
            for f in dataclasses.fields(cls) for v in _bad_values(f)]


@pytest.mark.parametrize("cls, field, value", SETTINGS,
                         ids=[f"{f.name}={v!r}"[:40] for _, f, v in SETTINGS])
def test_every_setting_rejects_bad_values_with_a_hint(pair, cls, field, value):
    err = _raises_with_hint(lambda: gpualign.align(pair.source, pair.template, backend="numpy",
                                                   **{field.name: value}))
    assert isinstance(err, gpualign.InputError)
    assert field.name in str(err)
    _raises_with_hint(lambda: cls(**{field.name: value}))


@pytest.mark.parametrize("bad", [3, None, np.eye(3)], ids=["int", "None", "array"])
def test_apply_transform_bad_transforms(pair, bad):
    _raises_with_hint(lambda: gpualign.apply_transform(bad, pair.source, S, backend="numpy"))


def test_apply_transform_missing_file(pair):
    with pytest.raises(gpualign.InputError, match="transform file not found"):
        gpualign.apply_transform("no_such.json", pair.source, S, backend="numpy")


def test_batch_sources_must_be_a_list(pair):
    for bad in (5, "a.fits"):
        _raises_with_hint(lambda bad=bad: gpualign.align_batch(bad, pair.template))
