"""Large images have their background measured on every second pixel (issue 14).

The sampled background must leave the detections, their centroids and the RMS what the
full-resolution background gives, and an alignment as accurate against the truth.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

import gpualign
import gpualign.detect._sep as sep_mod
from gpualign.detect import detect


def _detect_both(image, monkeypatch, mask=None):
    full = sep_mod._Pixels(image, mask)
    cat_full = full.catalog(full.objects(5.0))
    monkeypatch.setattr(sep_mod, "SUBSAMPLED_BACKGROUND_MIN_PIXELS", 0)
    sampled = sep_mod._Pixels(image, mask)
    cat_sampled = sampled.catalog(sampled.objects(5.0))
    monkeypatch.undo()
    return full, cat_full, sampled, cat_sampled


@pytest.mark.parametrize("shape", [(1024, 1024), (1023, 1001)])  # odd sizes too
def test_same_stars_centroids_and_rms(make_pair, monkeypatch, shape):
    pair = make_pair(shape, rotation_deg=10.0, n_stars=1500, seed=31)
    image = pair.template + np.linspace(0.0, 40.0, shape[1])[None, :]  # a sky gradient
    full, cat_full, sampled, cat_sampled = _detect_both(image, monkeypatch)
    assert sampled.rms == pytest.approx(full.rms, rel=0.01)
    assert len(cat_sampled) == pytest.approx(len(cat_full), rel=0.02)
    # the sky-subtracted pixels agree to a small fraction of the noise
    diff = sampled.data - full.data
    assert np.std(diff) < 0.05 * full.rms
    assert abs(np.mean(diff)) < 0.02 * full.rms
    # bright stars: the same centroids
    bright = cat_full.brightest(200)
    d, j = cKDTree(cat_sampled.xy).query(bright.xy)
    assert np.all(d < 0.01), np.max(d)


def test_nan_and_masked_pixels_stay_zero(make_pair, monkeypatch):
    pair = make_pair((1024, 1024), n_stars=800, seed=32)
    image = pair.template.astype(np.float32).copy()
    image[100:140, 200:900] = np.nan
    mask = np.zeros(image.shape, bool)
    mask[600:650, :] = True
    _, _, sampled, cat = _detect_both(image, monkeypatch, mask)
    assert np.all(sampled.data[100:140, 200:900] == 0.0)
    assert np.all(sampled.data[600:650, :] == 0.0)
    assert not np.any((cat.y > 604) & (cat.y < 646))  # no star from inside the mask


def test_large_image_uses_it_and_aligns_as_accurately(make_pair, accuracy, monkeypatch):
    # 4096 x 2048 (8.4 Mpx) is above the threshold: the default path samples
    pair = make_pair((2048, 4096), rotation_deg=4.0, corner_distortion_px=6.0,
                     n_stars=4000, seed=33)
    assert pair.template.size >= sep_mod.SUBSAMPLED_BACKGROUND_MIN_PIXELS
    calls = []
    real = sep_mod.sep.Background

    def spy(data, **kw):
        calls.append(data.shape)
        return real(data, **kw)

    monkeypatch.setattr(sep_mod.sep, "Background", spy)
    sampled = gpualign.find_transform(pair.source, pair.template, backend="numpy")
    assert calls and all(s[0] == 1024 for s in calls)  # the sampled grid
    monkeypatch.setattr(sep_mod, "SUBSAMPLED_BACKGROUND_MIN_PIXELS", 10**12)
    full = gpualign.find_transform(pair.source, pair.template, backend="numpy")
    acc_s, acc_f = accuracy(sampled.transform, pair), accuracy(full.transform, pair)
    assert acc_s["rms"] < 0.02
    assert acc_s["rms"] <= acc_f["rms"] + 0.001, (acc_s, acc_f)


def test_small_images_keep_the_full_background(make_pair, monkeypatch):
    pair = make_pair((512, 512), n_stars=200, seed=34)
    calls = []
    real = sep_mod.sep.Background
    monkeypatch.setattr(sep_mod.sep, "Background",
                        lambda data, **kw: calls.append(data.shape) or real(data, **kw))
    detect(pair.template)
    assert calls == [(512, 512)]
