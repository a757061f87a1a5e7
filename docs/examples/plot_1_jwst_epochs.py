"""
Two JWST epochs of Abell 2744
=============================

Two JWST NIRCam F200W images of the galaxy cluster Abell 2744, taken five months apart
(2022-06 and 2022-11), cut from level-3 mosaics that the JWST pipeline had already put
on the same pixel grid. Their WCS are identical, so the true mapping between them is
the identity, up to how well each epoch was tied to the sky; gpualign does not read
the WCS and has to find that from the sources alone.

The field holds mostly galaxies, whose centroids scatter by 0.1-0.2 px between epochs,
so the check is loose: the fitted mapping should stay within a few tenths of a pixel of
the identity everywhere, and no distortion should be found.
"""

# %%
# Align the later epoch onto the earlier one
# ------------------------------------------
# Paths are relative to the repository: the 2022-06 epoch ships with the package (it is
# what ``gpualign demo`` uses), the 2022-11 epoch with the tests.
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from astropy.io import fits

import gpualign

try:
    HERE = Path(__file__).resolve().parent
except NameError:  # sphinx-gallery runs the examples from their folder
    HERE = Path.cwd()
ROOT = HERE.parents[1]  # the repository's root
EPOCH_06 = ROOT / "gpualign" / "data" / "jwst_a2744_f200w_2022-06.fits"
EPOCH_11 = ROOT / "tests" / "data" / "jwst_a2744_f200w_2022-11.fits"

result = gpualign.align(EPOCH_11, EPOCH_06, backend="numpy")
print(result)

# %%
# The diagnostic figure: matched sources, their residuals (exaggerated), residuals
# against x and y, the distortion surface and the held-out error of each degree and
# model. With two images on the same grid, the held-out error does not improve beyond
# the linear model, and the degree stays at 1.
fig = result.plot()

# %%
# Compare with the truth
# ----------------------
# The WCS say the mapping is the identity. Evaluate the fitted template -> source
# mapping on a grid over the whole field and measure how far it is from it.
ny, nx = result.data.shape
gy, gx = np.mgrid[0:ny:16, 0:nx:16].astype(float)
sx, sy = result.transform(gx, gy)
offset = np.hypot(sx - gx, sy - gy)
print(f"degree {result.solution.degree}, {result.stats['n_match']} matches")
print(f"distance from the identity: RMS {np.sqrt(np.mean(offset**2)):.3f} px, "
      f"max {offset.max():.3f} px")

# %%
# The pixels
# ----------
# Where the images have signal, the resampled 2022-11 epoch and the 2022-06 epoch
# differ only by what changed on the sky and by noise.
june = fits.getdata(EPOCH_06).astype(np.float32)
limits = np.nanpercentile(june, [5, 99.5])
fig2, axes = plt.subplots(1, 3, figsize=(12, 4.3), sharex=True, sharey=True,
                          layout="constrained")
for ax, image, title in zip(axes, (june, result.data, result.data - june),
                            ("2022-06 (template)", "2022-11 aligned", "difference"),
                            strict=True):
    lim = limits if title != "difference" else (-0.05 * limits[1], 0.05 * limits[1])
    ax.imshow(image, origin="lower", cmap="gray", vmin=lim[0], vmax=lim[1])
    ax.set_title(title)
    ax.set_xlabel("x (px)")
axes[0].set_ylabel("y (px)")
plt.show()
