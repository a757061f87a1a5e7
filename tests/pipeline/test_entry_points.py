"""One input through every entry point gives one output, bit for bit.

The entry points are ``gpualign.align``, ``gpualign align`` with one source, a batch
(local and on Dask workers) and ``gpualign apply`` with the transform the CLI saved.
They all go through the frame runner (:mod:`gpualign.pipeline._runner`); this test
is what keeps them from drifting apart again: pixels, FOOTPRINT, the mask and
weight planes, and every header card (the WCS composed from the source's, since
the template has none, and every ``GA_*`` keyword) must be equal. Only the cards
that name the entry point itself may differ: a batch's ``GA_TMPL``/``GA_BATCH``,
apply's ``GA_TRANS``, and the HISTORY line.
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from typer.testing import CliRunner

import gpualign
from gpualign.cli import app

S = (384, 400)
OWN_CARDS = {"GA_TMPL", "GA_BATCH", "GA_TRANS", "HISTORY"}
LAYOUT = {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND"}  # set by the writer


@pytest.fixture(autouse=True)
def _logger(restore_gpualign_logger):
    yield


@pytest.fixture(scope="module")
def files(make_pair, tmp_path_factory):
    """Template without a WCS; source with a TAN WCS, a bad-pixel mask and a variance map."""
    pair = make_pair(S, shift=(6.2, -3.4), rotation_deg=11.0, corner_distortion_px=1.5,
                     n_stars=500, seed=7)
    d = tmp_path_factory.mktemp("entry")
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.1, 2.2]
    w.wcs.crpix = [200.0, 190.0]
    w.wcs.cdelt = [-0.3 / 3600, 0.3 / 3600]
    fits.PrimaryHDU(pair.template).writeto(d / "t.fits")
    fits.PrimaryHDU(pair.source, header=w.to_header()).writeto(d / "s.fits")
    rng = np.random.default_rng(3)
    mask = (rng.random(pair.source.shape) < 0.002).astype(np.uint8)
    fits.PrimaryHDU(mask).writeto(d / "mask.fits")
    var = (10.0 + np.abs(pair.source)).astype(np.float32)
    fits.PrimaryHDU(var).writeto(d / "var.fits")
    return d


def _cli(*args):
    res = CliRunner().invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return res


def _planes(path):
    with fits.open(path) as hdul:
        return ({h.name if i else "PRIMARY": np.array(h.data, dtype=h.data.dtype.newbyteorder("="))
                 for i, h in enumerate(hdul)},
                hdul[0].header.copy())


def _cards(header):
    """The header's cards as written to a file (80-character images), but the own ones."""
    return {c.image for c in header.cards
            if c.keyword and c.keyword not in OWN_CARDS | LAYOUT}


def _assert_same(ref, other, what):
    planes_a, hdr_a = ref
    planes_b, hdr_b = other
    assert sorted(planes_a) == sorted(planes_b), what
    for name, a in planes_a.items():
        b = planes_b[name]
        assert a.dtype == b.dtype and a.shape == b.shape, (what, name)
        np.testing.assert_array_equal(a, b, err_msg=f"{what}: {name}")
    assert _cards(hdr_a) == _cards(hdr_b), (what, _cards(hdr_a) ^ _cards(hdr_b))


def _from_result(result):
    planes = {"PRIMARY": result.data, "FOOTPRINT": result.footprint.astype(np.uint8)}
    if result.mask is not None:
        planes["MASK"] = result.mask.astype(np.uint8)
    if result.weight is not None:
        planes["VARIANCE"] = result.weight
    return planes, result.header


@pytest.mark.parametrize("extras", ["plain", "flux+canvas"])
def test_every_entry_point_gives_the_same_file(files, tmp_path, extras):
    """API, CLI, local batch, Dask batch and apply: the same pixels and header cards."""
    flags = ["--conserve-flux", "--preserve-footprints"] if extras != "plain" else []
    kw = dict(conserve_flux=True, preserve_footprints=True) if extras != "plain" else {}
    s, t = files / "s.fits", files / "t.fits"
    _cli("align", s, "-t", t, "-o", tmp_path / "cli.fits", "--backend", "numpy",
         "--save-transform", tmp_path / "t.json", *flags)
    ref = _planes(tmp_path / "cli.fits")
    assert ref[1]["GA_WCS"] == "source+transform" and "CTYPE1" in ref[1]
    assert ref[1]["GA_MODEL"] in ("similarity", "affine") and ref[1]["GA_NMAT"] > 100
    assert ref[1]["GA_FLUX"] is bool(kw)

    api = gpualign.align(s, t, backend="numpy", **kw)
    _assert_same(ref, _from_result(api), "gpualign.align")

    [local] = gpualign.align_batch([s], t, tmp_path / "local", processes=1, backend="numpy",
                                   **kw)
    assert local.ok and local.written, local.message
    _assert_same(ref, _planes(local.output), "local batch")
    assert _planes(local.output)[1]["GA_BATCH"]

    _cli("apply", tmp_path / "t.json", s, "-o", tmp_path / "apply.fits", "--backend", "numpy",
         *flags)
    _assert_same(ref, _planes(tmp_path / "apply.fits"), "gpualign apply")


def test_dask_batch_gives_the_same_file(files, tmp_path):
    """A frame run on a Dask worker process writes what a local run writes."""
    distributed = pytest.importorskip("distributed")
    s, t = files / "s.fits", files / "t.fits"
    [local] = gpualign.align_batch([s], t, tmp_path / "local", processes=1, backend="numpy")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None,
                                  scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                                  silence_logs=50) as lc, distributed.Client(lc) as client:
        [remote] = gpualign.align_batch([s], t, tmp_path / "dask", scheduler=client,
                                        backend="numpy", threads=1)
    assert remote.ok, remote.message
    assert remote.worker != local.worker
    _assert_same(_planes(local.output), _planes(remote.output), "Dask batch")


def test_masks_and_weights_through_every_single_source_entry_point(files, tmp_path):
    """A mask and a variance map given to the API, the CLI and apply: same planes."""
    s, t = files / "s.fits", files / "t.fits"
    _cli("align", s, "-t", t, "-o", tmp_path / "cli.fits", "--backend", "numpy",
         "--source-mask", files / "mask.fits", "--source-weight", files / "var.fits",
         "--save-transform", tmp_path / "t.json")
    ref = _planes(tmp_path / "cli.fits")
    assert {"MASK", "VARIANCE"} <= set(ref[0]) and ref[0]["MASK"].any()
    mask = fits.getdata(files / "mask.fits")
    var = fits.getdata(files / "var.fits")
    api = gpualign.align(s, t, backend="numpy", source_mask=mask.astype(bool),
                         source_weight=var)
    _assert_same(ref, _from_result(api), "gpualign.align")
    _cli("apply", tmp_path / "t.json", s, "-o", tmp_path / "apply.fits", "--backend", "numpy",
         "--source-mask", files / "mask.fits", "--source-weight", files / "var.fits")
    _assert_same(ref, _planes(tmp_path / "apply.fits"), "gpualign apply")


def test_streamed_output_equals_the_in_memory_one_with_extras(files, tmp_path, monkeypatch):
    """Above the size threshold the runner streams tiles into the file, extras included
    (flux, weights, mask): the file equals the one built in memory, bit for bit."""
    import gpualign.pipeline._runner as runner

    s, t = files / "s.fits", files / "t.fits"
    args = ["align", s, "-t", t, "--backend", "numpy", "--conserve-flux",
            "--source-mask", files / "mask.fits", "--source-weight", files / "var.fits"]
    _cli(*args, "-o", tmp_path / "mem.fits")
    streamed = []
    real = runner.warp_to_fits
    monkeypatch.setattr(runner, "STREAM_MIN_PIXELS", 1000)
    monkeypatch.setattr(runner, "warp_to_fits",
                        lambda *a, **k: streamed.append(1) or real(*a, **k))
    _cli(*args, "-o", tmp_path / "streamed.fits")
    assert streamed == [1]
    mem, st = _planes(tmp_path / "mem.fits"), _planes(tmp_path / "streamed.fits")
    assert sorted(mem[0]) == sorted(st[0]) == ["FOOTPRINT", "MASK", "PRIMARY", "VARIANCE"]
    for name in mem[0]:
        np.testing.assert_array_equal(st[0][name], mem[0][name], err_msg=name)
    assert _cards(mem[1]) == _cards(st[1])


def test_a_batch_carries_each_frames_own_mask_and_uncertainty(files):
    """Masks and weights reach a batch as the frames' own: a masked array's mask and an
    NDData's uncertainty give the planes gpualign.align gives for the same frame."""
    from astropy.nddata import NDData, VarianceUncertainty

    data = fits.getdata(files / "s.fits").astype(np.float32)
    mask = fits.getdata(files / "mask.fits").astype(bool)
    var = fits.getdata(files / "var.fits")
    frames = [np.ma.MaskedArray(data, mask=mask),
              NDData(data, uncertainty=VarianceUncertainty(var))]
    template = files / "t.fits"
    results = gpualign.align_batch(frames, template, processes=1, backend="numpy")
    assert all(r.ok for r in results), [r.message for r in results]
    masked, with_var = (r.result for r in results)
    ref_m = gpualign.align(frames[0], template, backend="numpy")
    ref_w = gpualign.align(frames[1], template, backend="numpy")
    assert masked.mask is not None and masked.mask.any()
    np.testing.assert_array_equal(masked.mask, ref_m.mask)
    np.testing.assert_array_equal(masked.data, ref_m.data)
    assert with_var.weight is not None and with_var.weight_type == "variance"
    np.testing.assert_array_equal(with_var.weight, ref_w.weight)
    np.testing.assert_array_equal(with_var.data, ref_w.data)
