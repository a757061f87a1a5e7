"""Shared fixtures of the engine tests: simulated pairs with known truth, cached per session.

Simulating a 1024x1024 pair and solving it each take ~0.1-0.3 s; several tests look at
the same pair (its degree, its accuracy, its matched stars), so pairs and solutions are
memoised for the whole session through the ``make_pair`` and ``solve_pair`` fixtures.

The tests sit in one folder per gpualign subpackage (plus gpu/ and packaging/), without
``__init__.py`` (pytest's default import mode: basenames are unique across folders).
The strict CuPy stand-in lives in tests/gpu/strict_cupy; tests/gpu goes on ``sys.path``
here so that ``import strict_cupy`` works from every folder (backend/, batch/, ...).
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import gpualign
from gpualign._simulate import (
    SimPair,
    bright_overlap_stars,
    error_stats,
    make_mapping,
    position_errors,
    simulate_pair,
)

_GPU_TESTS = str(Path(__file__).resolve().parent / "gpu")
if _GPU_TESTS not in sys.path:
    sys.path.insert(0, _GPU_TESTS)  # ``import strict_cupy`` (tests/gpu/strict_cupy)


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, np.ndarray):
        return (value.shape, value.tobytes())
    return value


@pytest.fixture(scope="session")
def load_script() -> Callable[[Path, str], types.ModuleType]:
    """``load_script(path, name)``: a script that is no package's module (a benchmark, a
    snapshot maker) imported by its path, as module ``name``."""

    def load(path: Path, name: str) -> types.ModuleType:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None, path
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(scope="session")
def numpy_backend() -> gpualign.Backend:
    """The NumPy backend (the machine the suite runs on may have no GPU)."""
    return gpualign.get_backend("numpy")


@pytest.fixture(scope="session")
def make_pair() -> Callable[..., SimPair]:
    """``make_pair(shape, source_shape=None, *, <make_mapping args>, seed, <simulate args>)``.

    Returns a cached :class:`SimPair` whose ``mapping`` is the truth (template -> source).
    """
    cache: dict[Any, SimPair] = {}

    def make(
        shape: tuple[int, int] = (1024, 1024),
        source_shape: tuple[int, int] | None = None,
        *,
        shift: tuple[float, float] = (0.0, 0.0),
        rotation_deg: float = 0.0,
        scale: float = 1.0,
        flip: bool = False,
        corner_distortion_px: float = 0.0,
        seed: int = 0,
        **sim_kw: Any,
    ) -> SimPair:
        source_shape = tuple(shape) if source_shape is None else tuple(source_shape)
        key = _freeze((shape, source_shape, shift, rotation_deg, scale, flip,
                       corner_distortion_px, seed, sim_kw))
        if key not in cache:
            mapping = make_mapping(
                source_shape=source_shape, template_shape=tuple(shape), shift=shift,
                rotation_deg=rotation_deg, scale=scale, flip=flip,
                corner_distortion_px=corner_distortion_px,
            )
            cache[key] = simulate_pair(tuple(shape), source_shape, mapping=mapping, seed=seed,
                                       **sim_kw)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def solve_pair() -> Callable[..., gpualign.Solution]:
    """``solve_pair(pair, **find_kwargs)``: cached ``find_transform`` on the NumPy backend."""
    cache: dict[Any, gpualign.Solution] = {}

    def solve(pair: SimPair, **kw: Any) -> gpualign.Solution:
        key = (id(pair), _freeze(kw))
        if key not in cache:
            cache[key] = gpualign.find_transform(pair.source, pair.template, backend="numpy",
                                                 **kw)
        return cache[key]

    return solve


@pytest.fixture(scope="session")
def accuracy() -> Callable[..., dict[str, float]]:
    """``accuracy(transform, pair)``: where the bright overlap stars land, vs the truth.

    Errors are in template pixels (``position_errors`` on ``bright_overlap_stars``);
    returns ``error_stats`` (rms, max, median, n, n_nonfinite).
    """

    def acc(transform: Callable, pair: SimPair, n: int = 200) -> dict[str, float]:
        stars = bright_overlap_stars(pair, n=n)
        assert len(stars) >= min(n, 5), "too few stars to measure accuracy"
        stats = error_stats(position_errors(transform, pair.mapping, stars))
        assert stats["n_nonfinite"] == 0, stats
        return stats

    return acc


@pytest.fixture
def restore_gpualign_logger():
    """The CLI reconfigures the ``gpualign`` logger; put it back after the test."""
    logger = logging.getLogger("gpualign")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield logger
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]
