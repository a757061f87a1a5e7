"""Fuzzing the three readers: only GpuAlignError escapes, and nothing allocates much.

Each input is a VALID file (a FITS image, a tile-compressed FITS image, a SExtractor
ASCII catalogue, a saved transform) mutated by ``hypothesis``: header cards changed
or deleted, bytes flipped, inserted or cut, JSON values replaced by other types or
huge numbers, catalogue columns dropped or duplicated. Whatever the reader makes of
it, the only exception allowed out is a :class:`gpualign.GpuAlignError` (one line);
any other is a reader bug. Every example runs under an address-space limit a little
above what the process already holds, so a reader that believes a header and asks
for gigabytes fails the test with a MemoryError instead of swapping.

The bugs the fuzzer found are pinned by the plain regression tests at the end.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import re
import resource
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpualign._errors import GpuAlignError
from gpualign._system import virtual_memory_size
from gpualign.detect._catalog import as_catalog, read_sextractor
from gpualign.io import image_shape, load_image, load_mask, load_weight, read_header
from gpualign.products import Solution, load_transform
from gpualign.products._solution import solution_to_dict
from gpualign.transform import PolynomialDistortion, Transform
from gpualign.transform._tps import ThinPlateSplineDistortion

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the memory limit reads /proc/self/status")

HEADROOM = 3 << 29  # 1.5 GiB above what the process holds when the limit is set

# Deterministic (the same examples on every run), no example database, and sized so the
# file runs in about half a minute on two cores.
FUZZ = settings(max_examples=250, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large])


# -- the memory limit ----------------------------------------------------------------------

def _vm_size() -> int:
    held = virtual_memory_size()
    if held is None:
        raise RuntimeError("no VmSize in /proc/self/status")
    return held


@contextlib.contextmanager
def address_space_limit(headroom: int = HEADROOM) -> Iterator[int]:
    """Lower the soft RLIMIT_AS to the current size + ``headroom``; restore it after.

    Only the soft limit moves (the hard one stays, so it can be raised back), and it is
    never raised above where it was. The limit is per process: threads already
    running are bound by it too.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _vm_size() + headroom
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    if soft != resource.RLIM_INFINITY:
        limit = min(limit, soft)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield limit
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.fixture
def memory_limit() -> Iterator[int]:
    with address_space_limit() as limit:
        yield limit


def test_the_memory_limit_binds_every_thread_and_is_restored():
    before = resource.getrlimit(resource.RLIMIT_AS)
    go, done = threading.Event(), threading.Event()
    seen: list[BaseException] = []

    def allocate() -> None:
        go.wait()
        try:
            np.ones(2 * HEADROOM, np.uint8)
        except MemoryError as exc:
            seen.append(exc)
        done.set()

    running = threading.Thread(target=allocate)  # started before the limit is set
    running.start()
    try:
        with address_space_limit() as limit:
            assert resource.getrlimit(resource.RLIMIT_AS) == (limit, before[1])
            with pytest.raises(MemoryError):
                np.ones(2 * HEADROOM, np.uint8)
            go.set()
            assert done.wait(60) and len(seen) == 1
            assert np.ones(1 << 24, np.uint8).sum() == 1 << 24  # small ones still work
        assert resource.getrlimit(resource.RLIMIT_AS) == before
    finally:
        go.set()
        running.join()


def _clean(call: Callable[[], Any]) -> Any:
    """``call()``; a GpuAlignError (one line, not hiding a MemoryError) gives None."""
    try:
        return call()
    except GpuAlignError as exc:
        assert "\n" not in str(exc), str(exc)
        assert "Unable to allocate" not in str(exc), str(exc)  # NumPy's MemoryError, wrapped
        ctx: BaseException | None = exc
        while ctx is not None:
            if isinstance(ctx, MemoryError):
                raise AssertionError(f"a MemoryError was turned into: {exc}") from exc
            ctx = ctx.__context__
        return None


# -- FITS images ---------------------------------------------------------------------------

def _wcs_header() -> fits.Header:
    h = fits.Header()
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CRVAL1"], h["CRVAL2"] = 150.0, 2.2
    h["CRPIX1"], h["CRPIX2"] = 32.5, 32.5
    h["CD1_1"], h["CD1_2"], h["CD2_1"], h["CD2_2"] = -1e-4, 0.0, 0.0, 1e-4
    return h


def _fits_bytes(hdul: fits.HDUList) -> bytes:
    buf = io.BytesIO()
    hdul.writeto(buf)
    return buf.getvalue()


def _base_fits() -> dict[str, bytes]:
    rng = np.random.default_rng(5)
    img = rng.normal(100.0, 10.0, (64, 64)).astype(np.float32)
    ints = rng.integers(-300, 300, (64, 64)).astype(np.int16)
    ints[0, :3] = -32768
    scaled = fits.ImageHDU(ints, header=_wcs_header(), name="SCI")
    # Written as they are: raw integers, read back as 1000 + 0.5 * raw, BLANK as NaN.
    scaled.header["BZERO"], scaled.header["BSCALE"], scaled.header["BLANK"] = 1000.0, 0.5, -32768
    return {
        "plain": _fits_bytes(fits.HDUList([fits.PrimaryHDU(img, header=_wcs_header())])),
        "two_hdu": _fits_bytes(fits.HDUList([fits.PrimaryHDU(), scaled])),
        "compressed": _fits_bytes(fits.HDUList(
            [fits.PrimaryHDU(), fits.CompImageHDU(img, header=_wcs_header())])),
    }


FITS_BASES = _base_fits()

KEYWORDS = ("SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "EXTEND", "XTENSION",
            "PCOUNT", "GCOUNT", "BZERO", "BSCALE", "BLANK", "CTYPE1", "CTYPE2", "CRVAL1",
            "CRPIX1", "CD1_1", "CD2_2", "CD1_2", "EXTNAME", "ZIMAGE", "ZBITPIX", "ZNAXIS",
            "ZNAXIS1", "ZNAXIS2", "ZTILE1", "ZTILE2", "ZCMPTYPE", "ZVAL1", "ZVAL2", "ZVAL3",
            "ZQUANTIZ", "ZDITHER0", "TFIELDS", "TFORM1", "TTYPE1", "TFORM3", "THEAP", "END")

CARD_VALUES = st.one_of(
    st.sampled_from(["0", "1", "2", "3", "-1", "8", "16", "32", "64", "-32", "-64", "7", "65",
                     "1000000", "200000", "2147483648", "99999999999999999999999", "1.5",
                     "100000000", "-0.0", "1E300", "1E999", "-1E999", "NAN", "INF", "T", "F",
                     "''", "'",
                     "'junk'", "'IMAGE'", "'BINTABLE'", "'RICE_1'", "'GZIP_1'", "'HCOMPRESS_1'",
                     "'PLIO_1'", "'NOCOMPRESS'", "'RA---TAN'", "'1PB(99999999)'", "'1QB'",
                     "'2J'", "'NO_DITHER'", "junk", "", "= 5", "(1, 2)"]),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20),
    st.binary(max_size=12).map(lambda b: b.decode("latin-1")),
)


def _card(keyword: str, value: str) -> bytes:
    return f"{keyword:<8}= {value:>20}".encode("latin-1")[:80].ljust(80)


def _card_offsets(buf: bytearray, keyword: str) -> list[int]:
    key = keyword.encode().ljust(8)
    return [i for i in range(0, len(buf) - 79, 80) if buf[i:i + 8] == key]


MUTATIONS = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(KEYWORDS), st.integers(0, 3), CARD_VALUES),
    st.tuples(st.just("delete"), st.sampled_from(KEYWORDS), st.integers(0, 3)),
    st.tuples(st.just("add"), st.sampled_from(KEYWORDS), st.integers(0, 3), CARD_VALUES),
    # One size for an axis and its tiles: a table still holds one row per tile.
    st.tuples(st.just("axis"), st.sampled_from("12"),
              st.sampled_from(["1", "1000", "200000", "1000000", "100000000", "2147483647"])),
    st.tuples(st.just("flip"), st.integers(0, 1 << 20), st.integers(0, 255)),
    st.tuples(st.just("flip_header"), st.integers(0, 1 << 20), st.integers(0, 255)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 20), st.binary(min_size=1, max_size=100)),
    st.tuples(st.just("truncate"), st.integers(0, 1 << 20)),
    st.tuples(st.just("append"), st.binary(min_size=1, max_size=3000)),
)


def _mutate_fits(raw: bytes, ops: list[tuple]) -> bytes:
    buf = bytearray(raw)
    for op in ops:
        kind = op[0]
        if kind in ("set", "delete", "add"):
            at = _card_offsets(buf, "END" if kind == "add" else op[1])
            if not at:
                continue
            i = at[op[2] % len(at)]
            if kind == "set":
                buf[i:i + 80] = _card(op[1], op[3])
            elif kind == "delete":
                del buf[i:i + 80]
                buf[i:i] = b" " * 80 if op[2] % 2 else b""  # keep the blocks, or not
            elif (i + 80) % 2880:  # room for END after the new card
                buf[i:i + 160] = _card(op[1], op[3]) + b"END".ljust(80)
        elif kind == "axis":  # a compressed image's axis is ZNAXISn (NAXISn: its table)
            keys = [f"ZNAXIS{op[1]}", f"ZTILE{op[1]}"]
            for key in keys if _card_offsets(buf, keys[0]) else [f"NAXIS{op[1]}"]:
                for i in _card_offsets(buf, key):
                    buf[i:i + 80] = _card(key, op[2])
        elif not buf:
            continue
        elif kind == "flip":
            buf[op[1] % len(buf)] ^= op[2] or 1
        elif kind == "flip_header":
            headers = [i for i in range(0, len(buf) - 79, 80) if buf[i:i + 1].isalpha()]
            if headers:
                buf[headers[op[1] % len(headers)] + op[1] % 80] ^= op[2] or 1
        elif kind == "insert":
            buf[op[1] % len(buf):op[1] % len(buf)] = op[2]
        elif kind == "truncate":
            del buf[op[1] % len(buf):]
        else:
            buf += op[1]
    return bytes(buf)


def _read_every_way(path: Path) -> None:
    for ext in (None, 1, "SCI"):
        _clean(lambda ext=ext: read_header(path, ext))
        _clean(lambda ext=ext: image_shape(path, ext))
    for ext in (None, 1):
        got = _clean(lambda ext=ext: load_image(path, ext, name="fuzzed image"))
        if got is not None:
            data, _, _ = got
            assert data.ndim == 2 and data.dtype in (np.float32, np.float64)
            assert data.flags.c_contiguous and data.dtype.isnative
        _clean(lambda ext=ext: load_mask(path, (64, 64), ext))
        _clean(lambda ext=ext: load_weight(path, (64, 64), ext))


@pytest.mark.parametrize("base", sorted(FITS_BASES))
def test_the_bases_are_valid(base, tmp_path):
    path = tmp_path / f"{base}.fits"
    path.write_bytes(FITS_BASES[base])
    data, header, _ = load_image(path)
    assert data.shape == (64, 64) and header["CTYPE1"] == "RA---TAN"


@pytest.mark.parametrize("base", sorted(FITS_BASES))
@FUZZ
@given(ops=st.lists(MUTATIONS, min_size=1, max_size=4))
def test_fuzzed_fits(base, ops, tmp_path, memory_limit):
    path = tmp_path / "fuzzed.fits"
    path.write_bytes(_mutate_fits(FITS_BASES[base], ops))
    _read_every_way(path)


# -- SExtractor ASCII catalogues ----------------------------------------------------------

CATALOGUE_HEAD = [
    "#   1 NUMBER                 Running object number",
    "#   2 X_IMAGE                Object position along x                  [pixel]",
    "#   3 Y_IMAGE                Object position along y                  [pixel]",
    "#   4 FLUX_APER              Flux vector within fixed circular aperture(s) [count]",
    "#   6 FLUX_AUTO              Flux within a Kron-like elliptical aperture [count]",
    "#   7 FLUXERR_AUTO           RMS error for AUTO flux                  [count]",
    "#   8 FWHM_IMAGE             FWHM assuming a gaussian core            [pixel]",
    "#   9 FLAGS                  Extraction flags",
]


def _catalogue_rows() -> list[str]:
    rng = np.random.default_rng(3)
    rows = []
    for k in range(12):
        x, y = rng.uniform(1, 64, 2)
        f = rng.uniform(100, 5000)
        rows.append(f"{k + 1:10d} {x:10.3f} {y:10.3f} {f:12.4f} {1.3 * f:12.4f} {0.9 * f:12.4f} "
                    f"{np.sqrt(f):10.4f} {rng.uniform(2, 4):8.3f} {k % 4:3d}")
    return rows


CATALOGUE_ROWS = _catalogue_rows()

JUNK_TOKENS = st.one_of(
    st.sampled_from(["nan", "inf", "-inf", "1e400", "1e308", "-1e308", "0", "1e-320", "5e-324",
                     "3.5", "-7"]),
    st.sampled_from(["NaN", "-1e400", "9" * 400, "0.0", "", "abc", "0x10", "1,5", "--", "None",
                     "\x00", "\u00e9", "1e-400", "-0",
                     "99999999999999999999999", "-9223372036854775809", "#", "# 3 X_IMAGE",
                     "X_IMAGE", "FLUX_AUTO", "'", '"', "\t", "\r"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(1 << 70), 1 << 70).map(str),
)

HEAD_EDITS = st.one_of(
    st.tuples(st.just("drop"), st.integers(0, 20)),
    st.tuples(st.just("duplicate"), st.integers(0, 20)),
    st.tuples(st.just("renumber"), st.integers(0, 20),
              st.sampled_from(["0", "-1", "1", "2", "5", "10", "99", "1e9", "x", ""])),
    st.tuples(st.just("rename"), st.integers(0, 20),
              st.sampled_from(["X_IMAGE", "Y_IMAGE", "FLUX_AUTO", "FLUX_", "flux", "x", "FLAGS",
                               "XWIN_IMAGE", "snr", "FLUXERR_AUTO", "", "#", "1"])),
)

ROW_EDITS = st.one_of(
    st.tuples(st.just("token"), st.integers(0, 100), st.integers(0, 20), JUNK_TOKENS),
    st.tuples(st.just("drop_token"), st.integers(0, 100), st.integers(0, 20)),
    st.tuples(st.just("add_token"), st.integers(0, 100), JUNK_TOKENS),
    st.tuples(st.just("drop_row"), st.integers(0, 100)),
    st.tuples(st.just("duplicate_row"), st.integers(0, 100)),
    st.tuples(st.just("column"), st.integers(0, 9), JUNK_TOKENS),  # the same in every row
    st.tuples(st.just("drop_column"), st.integers(0, 9)),  # its values and its header line
    st.tuples(st.just("duplicate_column"), st.integers(0, 9)),  # its values only
)

TEXT_EDITS = st.one_of(
    st.tuples(st.just("truncate"), st.integers(0, 1 << 16)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 16), st.binary(min_size=1, max_size=40)),
    st.tuples(st.just("crlf")),
    st.tuples(st.just("empty")),
)


def _mutate_catalogue(head_ops: list[tuple], row_ops: list[tuple], text_ops: list[tuple]) -> bytes:
    head = list(CATALOGUE_HEAD)
    rows = [r.split() for r in CATALOGUE_ROWS]
    for op in head_ops:
        if not head:
            break
        k = op[1] % len(head)
        if op[0] == "drop":
            del head[k]
        elif op[0] == "duplicate":
            head.insert(k, head[k])
        elif op[0] == "renumber":
            head[k] = f"# {op[2]:>3} " + head[k][6:]
        else:
            parts = head[k].split(None, 3)
            head[k] = " ".join([parts[0], parts[1], op[2], *parts[3:]])
    for op in row_ops:
        if op[0] in ("column", "drop_column", "duplicate_column"):
            for r in (r for r in rows if r):
                k = op[1] % len(r)
                if op[0] == "column":
                    r[k] = op[2]
                elif op[0] == "drop_column":
                    del r[k]
                else:
                    r.insert(k, r[k])
            if op[0] == "drop_column" and head:
                del head[op[1] % len(head)]
            continue
        if not rows:
            break
        r = rows[op[1] % len(rows)]
        if op[0] == "token" and r:
            r[op[2] % len(r)] = op[3]
        elif op[0] == "drop_token" and r:
            del r[op[2] % len(r)]
        elif op[0] == "add_token":
            r.append(op[2])
        elif op[0] == "drop_row":
            rows.remove(r)
        elif op[0] == "duplicate_row":
            rows.append(list(r))
    text = ("\n".join(head + [" ".join(r) for r in rows]) + "\n").encode("utf-8")
    for op in text_ops:
        if op[0] == "truncate":
            text = text[:op[1] % (len(text) + 1)]
        elif op[0] == "insert":
            i = op[1] % (len(text) + 1)
            text = text[:i] + op[2] + text[i:]
        elif op[0] == "crlf":
            text = text.replace(b"\n", b"\r\n")
        else:
            text = b""
    return text


def test_the_catalogue_base_is_valid(tmp_path):
    path = tmp_path / "base.cat"
    path.write_bytes(_mutate_catalogue([], [], []))
    cat = read_sextractor(path)
    assert len(cat) == 12 and np.all(cat.flux[:-1] >= cat.flux[1:])


@FUZZ
@given(head_ops=st.lists(HEAD_EDITS, max_size=3), row_ops=st.lists(ROW_EDITS, max_size=5),
       text_ops=st.lists(TEXT_EDITS, max_size=2),
       flux_col=st.sampled_from([None, "FLUX_AUTO", "FLUX_APER", "FLUX_NOPE", "flux"]))
def test_fuzzed_catalogue(head_ops, row_ops, text_ops, flux_col, tmp_path, memory_limit):
    path = tmp_path / "fuzzed.cat"
    path.write_bytes(_mutate_catalogue(head_ops, row_ops, text_ops))
    for read in (lambda: read_sextractor(path, flux_col=flux_col, shape=(64, 64)),
                 lambda: as_catalog(str(path), flux_col=flux_col)):
        cat = _clean(read)
        if cat is not None:
            n = len(cat)
            for arr in (cat.x, cat.y, cat.flux, cat.fwhm, cat.sigma):
                assert type(arr) is np.ndarray and arr.shape == (n,) and arr.dtype == np.float64
            assert type(cat.flag) is np.ndarray and cat.flag.dtype == np.int64
            assert cat.flag.shape == (n,)
            assert np.all(np.isfinite(cat.x)) and np.all(np.isfinite(cat.y))
            assert np.all(cat.sigma > 0)  # infinite for a subnormal SNR: no weight


# -- transform files -----------------------------------------------------------------------

def _solutions() -> dict[str, dict[str, Any]]:
    rng = np.random.default_rng(8)
    tmpl = rng.uniform(0, 64, (40, 2))
    c = np.zeros((2, 4, 4))
    c[0, 2, 0], c[1, 1, 1], c[0, 0, 3] = 0.3, -0.2, 0.05
    t = Transform(np.array([[1.0, 0.02, 3.0], [-0.02, 1.0, -2.0]]),
                  PolynomialDistortion(c, (32.0, 32.0, 32.0, 32.0), (-1.1, 1.1, -1.1, 1.1)))
    inv = Transform(np.array([[1.0, -0.02, -3.0], [0.02, 1.0, 2.0]]))
    src = t.map_points(tmpl)
    poly = Solution(t, inv, tmpl, src, {"n_match": 40, "rms": 0.01}, 3, False,
                    {1: 0.5, 2: 0.1, 3: 0.01}, (64, 64), (64, 64), {"detect": 0.1}, "affine",
                    {"affine": 0.01}, "poly", {})
    src_tps = src + 0.3 * np.sin(tmpl / 9.0)
    matrix, dist = ThinPlateSplineDistortion.fit_transform(
        tmpl, src_tps, np.ones(len(tmpl)), complexity=1.0, norm=(32.0, 32.0, 32.0, 32.0))
    tps = Solution(Transform(matrix, dist), inv, tmpl, src_tps, {"n_match": 40}, 1, False, {},
                   (64, 64), (64, 64), distortion="tps", distortion_scores={"tps": 0.02})
    return {"poly": solution_to_dict(poly), "tps": solution_to_dict(tps),
            "bare": solution_to_dict(t)}


SOLUTIONS = _solutions()


def _paths(tree: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(tree, dict):
        for k, v in tree.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree[:6]):  # a few elements of each list are enough
            out += _paths(v, (*prefix, i))
    return out


def _nested(text: str) -> str:
    """``"@nested N@"`` placeholders replaced by lists nested N deep (too deep for json.dumps)."""
    return re.sub(r'"@nested (\d+)@"', lambda m: "[" * int(m[1]) + "1" + "]" * int(m[1]), text)


JSON_VALUES = st.one_of(
    st.sampled_from([None, True, False, 0, 1, -1, 2, 3, 9, 10, 100, 10**6, 10**12, 2**63, 10**400,
                     -(10**30), 1e308, -1e308, 5e-324, 0.5, "nan", "inf", "-inf", "", "x", "poly",
                     "tps", "gpualign-transform", [], {}, [[]], [0.0, 0.0], [1.0, 2.0, 3.0],
                     [10**12, 10**12], [-5, 64], [64.5, 64], [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
                     {"model": "tps"}, {"model": "nope"}]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(),
    st.sampled_from([200, 900, 2000, 100_000]).map(lambda n: f"@nested {n}@"),
    st.sampled_from([1000, 50_000]).map(lambda n: [0.0] * n),
    st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=8),
)

JSON_EDITS = st.one_of(
    st.tuples(st.just("replace"), st.integers(0, 1 << 16), JSON_VALUES),
    st.tuples(st.just("drop"), st.integers(0, 1 << 16)),
    st.tuples(st.just("duplicate"), st.integers(0, 1 << 16)),
    st.tuples(st.just("key"), st.sampled_from(["format", "version", "transform", "inverse",
                                               "template_shape", "source_shape", "degree",
                                               "mirrored", "stats", "cv_scores", "model",
                                               "distortion", "template_xy", "timings",
                                               "model_scores", "distortion_scores",
                                               "thresholds"]),
              JSON_VALUES),
)

TEXT_JUNK = st.one_of(
    st.tuples(st.just("truncate"), st.integers(0, 1 << 16)),
    st.tuples(st.just("flip"), st.integers(0, 1 << 16), st.integers(1, 255)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 16), st.binary(min_size=1, max_size=20)),
)


def _get(tree: Any, path: tuple) -> Any:
    for k in path:
        tree = tree[k]
    return tree


def _mutate_json(base: dict[str, Any], edits: list[tuple]) -> Any:
    tree: Any = json.loads(json.dumps(base))
    for op in edits:
        if op[0] == "key":
            if isinstance(tree, dict):
                tree[op[1]] = op[2]
            continue
        paths = _paths(tree)
        path = paths[op[1] % len(paths)]
        if op[0] == "replace":
            if not path:
                tree = op[2]
            else:
                _get(tree, path[:-1])[path[-1]] = op[2]
        elif path:
            parent = _get(tree, path[:-1])
            if op[0] == "drop":
                del parent[path[-1]]
            elif isinstance(parent, list):
                parent.insert(path[-1], parent[path[-1]])
            else:
                parent[f"{path[-1]}_copy"] = parent[path[-1]]
    return tree


@FUZZ
@given(base=st.sampled_from(sorted(SOLUTIONS)), edits=st.lists(JSON_EDITS, min_size=1, max_size=3),
       junk=st.lists(TEXT_JUNK, max_size=1))
def test_fuzzed_transform_file(base, edits, junk, tmp_path, memory_limit):
    text = _nested(json.dumps(_mutate_json(SOLUTIONS[base], edits), indent=1)).encode()
    for op in junk:
        i = op[1] % (len(text) + 1)
        if op[0] == "truncate":
            text = text[:i]
        elif op[0] == "flip":
            if i < len(text):
                text = text[:i] + bytes([text[i] ^ op[2]]) + text[i + 1:]
        else:
            text = text[:i] + op[2] + text[i:]
    path = tmp_path / "fuzzed.json"
    path.write_bytes(text)
    sol = _clean(lambda: Solution.load(path))
    if sol is not None:
        for shape in (sol.source_shape, sol.template_shape):
            assert shape is None or (len(shape) == 2 and min(shape) > 0)
    _clean(lambda: load_transform(path))
    _clean(lambda: Transform.load(path))


def test_the_transform_bases_load(tmp_path):
    for name, d in SOLUTIONS.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(d))
        sol = Solution.load(path)
        assert sol.template_shape == ((64, 64) if name != "bare" else None)


# -- regressions: what the fuzzer found ----------------------------------------------------

def _fits_with(tmp_path, base: str, ops: list[tuple], name: str = "bad.fits") -> Path:
    path = tmp_path / name
    path.write_bytes(_mutate_fits(FITS_BASES[base], ops))
    return path


@pytest.mark.parametrize(("card", "value", "message"), [
    ("ZVAL2", "1000000", r"RICE_1 BYTEPIX = 1000000, not one of \(1, 2, 4, 8\)"),  # segfaulted
    ("ZVAL1", "7", r"RICE_1 BLOCKSIZE = 7, not one of \(16, 32\)"),
    ("ZVAL2", "'four'", r"ZVAL2 = 'four' is not an integer"),
])
def test_rice_settings_are_checked_before_decoding(tmp_path, card, value, message):
    # A BYTEPIX of 1000000 crashed the process in astropy's C decoder.
    path = _fits_with(tmp_path, "compressed", [("set", card, 0, value)])
    for read in (lambda: load_image(path), lambda: load_mask(path, (64, 64)),
                 lambda: load_weight(path, (64, 64))):
        with pytest.raises(GpuAlignError, match=message):
            read()


def test_compressed_header_claiming_more_pixels_than_its_table(tmp_path, memory_limit):
    # astropy allocated the whole declared image (149 GiB here) before decoding a tile.
    path = _fits_with(tmp_path, "compressed", [("set", "ZNAXIS1", 0, "200000"),
                                               ("set", "ZNAXIS2", 0, "200000")])
    for read in (lambda: load_image(path), lambda: load_mask(path, (64, 64)),
                 lambda: load_weight(path, (64, 64))):
        with pytest.raises(GpuAlignError, match=r"declares 200000x200000 pixels in 625000000 "
                                                r"tiles but its table holds 64"):
            read()
        assert _clean(read) is None  # and no MemoryError behind it


def test_compressed_tiles_beyond_memory(tmp_path, memory_limit):
    # One row per tile, but each tile 10^8 pixels wide: 23.8 GiB asked of astropy.
    path = _fits_with(tmp_path, "compressed", [("axis", "1", "100000000")])
    for read in (lambda: load_image(path), lambda: load_mask(path, (64, 64)),
                 lambda: load_weight(path, (64, 64))):
        with pytest.raises(GpuAlignError, match=r"declares 100000000x64 pixels \(23.8 GiB\), "
                                                r"more than the .* of memory available"):
            read()


def test_masks_and_weights_are_checked_against_the_file_size(tmp_path, memory_limit):
    # The truncation warning escaped load_mask, and nothing checked the declared size.
    cut = FITS_BASES["plain"][: len(FITS_BASES["plain"]) // 2]
    (tmp_path / "cut.fits").write_bytes(cut)
    huge = _fits_with(tmp_path, "plain", [("set", "NAXIS1", 0, "200000"),
                                          ("set", "NAXIS2", 0, "200000")], "huge.fits")
    for read in (load_mask, load_weight):
        with pytest.raises(GpuAlignError, match="truncated"):
            read(tmp_path / "cut.fits", (64, 64))
        with pytest.raises(GpuAlignError, match=r"declares 200000x200000 pixels \(149 GiB\)"):
            read(huge, (64, 64))


def test_a_truncated_extension_is_named_without_a_warning(tmp_path):
    # astropy warns about the short file while pick_hdu walks the HDUs, after fits.open.
    raw = FITS_BASES["two_hdu"]
    (tmp_path / "cut.fits").write_bytes(raw[: len(raw) - 4000])
    for ext in (None, 1, "SCI"):
        with pytest.raises(GpuAlignError, match="truncated"):
            load_image(tmp_path / "cut.fits", ext)
    assert image_shape(tmp_path / "cut.fits") == (64, 64)


def test_a_damaged_header_is_an_input_error_and_the_file_is_closed(tmp_path):
    # astropy warns (bytes after END) and reads on; with warnings as errors the readers
    # leaked the file (ResourceWarning) and load_mask let the warning out.
    raw = bytearray(FITS_BASES["plain"])
    end = _card_offsets(raw, "END")[0]
    raw[end + 70:end + 73] = b"xyz"
    (tmp_path / "end.fits").write_bytes(bytes(raw))
    path = tmp_path / "end.fits"
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for read in (lambda: read_header(path), lambda: load_image(path),
                     lambda: load_mask(path, (64, 64)), lambda: load_weight(path, (64, 64))):
            with pytest.raises(GpuAlignError, match="Unexpected bytes trailing END"):
                read()
        gc.collect()
    assert not [w for w in seen if issubclass(w.category, ResourceWarning)]


def test_padding_after_the_last_hdu_still_reads(tmp_path):
    (tmp_path / "pad.fits").write_bytes(FITS_BASES["plain"] + b"\0" * 2880)
    data, _, _ = load_image(tmp_path / "pad.fits")
    assert data.shape == (64, 64)
    assert load_weight(tmp_path / "pad.fits", (64, 64)).shape == (64, 64)


def test_signalling_nan_weights_become_nan(tmp_path):
    # float32 -> float64 of a signalling NaN raised "invalid value encountered in cast".
    w = np.ones((64, 64), np.float32)
    w.view(np.uint32)[3, 4] = 0x7FA00000
    fits.PrimaryHDU(w).writeto(tmp_path / "w.fits")
    out = load_weight(tmp_path / "w.fits", (64, 64))
    assert np.isnan(out[3, 4]) and np.isfinite(np.delete(out.ravel(), 3 * 64 + 4)).all()


def _catalogue(tmp_path, row_ops: list[tuple]) -> Path:
    path = tmp_path / "bad.cat"
    path.write_bytes(_mutate_catalogue([], row_ops, []))
    return path


@pytest.mark.parametrize(("column", "token", "message"), [
    (1, "abc", "catalogue column X_IMAGE holds values that are not numbers"),  # ValueError
    (8, "nan", "catalogue flags must be integers, found nan"),  # an invalid cast
    (8, "3.5", "catalogue flags must be integers, found 3.5"),
    (8, "1e30", "catalogue flags must be integers, found 1e[+]30"),
])
def test_unusable_catalogue_values_are_named(tmp_path, column, token, message):
    path = _catalogue(tmp_path, [("token", 4, column, token)])
    with pytest.raises(GpuAlignError, match=message):
        read_sextractor(path)


def test_zero_flux_errors_give_an_unknown_snr(tmp_path):
    # flux / 0 and 0 / 0 warned (errors under pytest): such a star gets the default SNR.
    path = _catalogue(tmp_path, [("column", 6, "0"), ("token", 0, 5, "0")])
    cat = read_sextractor(path)
    assert len(cat) == 12 and np.all(np.isfinite(cat.sigma)) and np.all(cat.sigma > 0)


def test_missing_table_values_are_nan():
    from astropy.table import MaskedColumn, Table

    t = Table({"x": MaskedColumn([1.0, 2.0, 3.0], mask=[False, True, False]),
               "y": [4.0, 5.0, 6.0], "flux": [30.0, 20.0, 10.0]})
    cat = as_catalog(t)
    assert cat.x.tolist() == [1.0, 3.0] and type(cat.x) is np.ndarray


def _transform_file(tmp_path, base: str, edit: Callable[[dict], Any], text: str | None = None
                    ) -> Path:
    d = json.loads(json.dumps(SOLUTIONS[base]))
    edit(d)
    path = tmp_path / "bad.json"
    path.write_text(_nested(json.dumps(d)) if text is None else text)
    return path


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d.__setitem__("transform", None), "transform is a NoneType, not an object"),
    (lambda d: d.__setitem__("inverse", [1, 2]), r"inverse must be an object, got \[1, 2\]"),
    (lambda d: d.__setitem__("stats", [1.0]), "stats must be dict"),
    (lambda d: d.__setitem__("degree", float("inf")), "degree must be int"),  # OverflowError
    (lambda d: d.__setitem__("degree", 10**12), "degree must be from 0 to 9"),
    (lambda d: d.__setitem__("mirrored", "false"), "mirrored must be bool"),
    (lambda d: d.__setitem__("template_shape", [-5, 64]),
     "template_shape must be two positive integers"),
    (lambda d: d.__setitem__("source_shape", [64.5, 64]),
     "source_shape must be two positive integers"),
    (lambda d: d["template_xy"].pop(), "template_xy holds 39 points but source_xy 40"),
    (lambda d: d.__setitem__("version", "x"), "transform file version 'x' is not an integer"),
    (lambda d: d["transform"].__setitem__("matrix", "@nested 100000@"), "too deeply"),
    (lambda d: d["transform"].__setitem__("matrix", "@nested 100@"), "more than 16 deep"),
])
def test_unusable_solution_fields_are_named(tmp_path, edit, message):
    # AttributeError, RecursionError, OverflowError or ValueError escaped before, or the
    # value was taken as it was (a negative shape, a string for a bool).
    path = _transform_file(tmp_path, "poly", edit)
    with pytest.raises(GpuAlignError, match=message):
        Solution.load(path)


@pytest.mark.parametrize(("text", "message"), [
    ('{"format": "gpualign-transform", "version": Infinity, "transform": {}}',
     "version 'inf' is not an integer"),  # OverflowError out of Transform.load
    ('{"format": "gpualign-transform", "version": 1, "transform": {"matrix": [[1' + "0" * 320
     + ', 0, 0], [0, 1, 0]]}}', "beyond float64's range"),  # OverflowError
    ('{"format": "gpualign-transform", "version": 1, "transform": {"matrix": [[1' + "0" * 5000
     + ', 0, 0], [0, 1, 0]]}}', "an integer of 5001 digits"),  # int()'s digit limit
    ('{"format": "gpualign-transform", "version": 1, "transform": "x"}',
     "transform is a str, not an object"),
])
def test_unusable_transform_files_are_named_by_every_loader(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    for load in (Solution.load, load_transform, Transform.load):
        with pytest.raises(GpuAlignError, match=message):
            load(path)


def test_tps_fields_are_checked_on_load(tmp_path):
    """A thin-plate-spline field of the wrong shape is refused on load, naming it."""
    def edit(d: dict) -> None:
        d["transform"]["distortion"]["norm"].append(1.0)

    path = _transform_file(tmp_path, "tps", edit)
    with pytest.raises(GpuAlignError, match="distortion norm must be 3"):
        Transform.load(path)
