"""
Very few stars: a sparse DECam pair
===================================

Two DECam i-band cut-outs of 256 x 256 pixels from different exposures, on the same
pixel grid, with only about eight sources bright enough at gpualign's default
detection threshold of 5 sigma. Fewer than 20 usable stars make gpualign detect both
images again, deeper (4, 3, 2.5, 2 and 1.5 sigma): matching uses the first threshold
that gives enough stars, the final fit the deepest. ``auto_depth=False`` forbids it.
"""

# %%
# Align with and without automatic depth
# --------------------------------------
from pathlib import Path

import numpy as np

import gpualign

try:
    HERE = Path(__file__).resolve().parent
except NameError:  # sphinx-gallery runs the examples from their folder
    HERE = Path.cwd()
DATA = HERE.parents[1] / "tests" / "data"  # in the repository
source, template = DATA / "DEC-OBS18a.mini.fits", DATA / "DEC-OBS04a.mini.fits"

result = gpualign.align(source, template, backend="numpy")
shallow = gpualign.find_transform(source, template, auto_depth=False, backend="numpy")
print(result)
for name, sol in (("automatic depth", result.solution), ("5 sigma only", shallow)):
    print(f"{name:16s} thresholds {sol.thresholds}, {sol.stats['n_match']} matches, "
          f"degree {sol.degree}, rms {sol.stats['rms']:.3f} px")

# %%
# The ``GpuAlignWarning`` lines above are the point of this example: gpualign warns
# when a result was produced but deserves a look; here, a fit on few stars, residuals
# above what the PSF size leads to expect, and a mapping extrapolated beyond the
# matched stars over part of the overlap. Silence them with
# ``warnings.simplefilter("ignore", gpualign.GpuAlignWarning)``.
#
# With a dozen pairs the held-out error cannot support a distortion surface: the
# mapping stays linear.
fig = result.plot()

# %%
# Compare with the WCS
# --------------------
# Both cut-outs carry a TPV WCS saying the mapping is the identity; but those WCS are
# only as good as each exposure's astrometry, and the matched sources agree on a common
# offset of a few tenths of a pixel. The fitted mapping at the centre against the
# median offset of the matched pairs:
offset = np.median(result.solution.source_xy - result.solution.template_xy, axis=0)
sx, sy = result.transform(127.5, 127.5)
print(f"median pair offset ({offset[0]:+.3f}, {offset[1]:+.3f}) px; fitted mapping at "
      f"the centre moves by ({sx - 127.5:+.3f}, {sy - 127.5:+.3f}) px")
