"""A sphinx-gallery image scraper for figures that pyplot does not manage.

gpualign's figures (``result.plot()``, ``solution.plot()``) are built with matplotlib's
object-oriented API, so pyplot's list of figures, which sphinx-gallery's own matplotlib
scraper reads, does not hold them. This scraper finds them among the example's
variables after each code block and saves each new one once; it must run before
sphinx-gallery's matplotlib scraper, which closes pyplot's figures.
"""

from __future__ import annotations

import weakref
from typing import Any

_shown: weakref.WeakSet[Any] = weakref.WeakSet()


def scrape_figures(block: Any, block_vars: dict[str, Any], gallery_conf: dict[str, Any]
                   ) -> str:
    """Save the example's new non-pyplot figures; return their reST (sphinx-gallery API).

    Parameters
    ----------
    block : tuple
        The code block that just ran.
    block_vars : dict
        sphinx-gallery's state of the example (``example_globals``,
        ``image_path_iterator``).
    gallery_conf : dict
        sphinx-gallery's configuration.

    Returns
    -------
    str
        The reST that shows the saved images (empty when there are none).
    """
    from matplotlib.figure import Figure
    from sphinx_gallery.scrapers import figure_rst

    paths = []
    for value in list(block_vars["example_globals"].values()):
        if not isinstance(value, Figure) or value in _shown:
            continue
        _shown.add(value)  # pyplot's figures too: the matplotlib scraper shows those
        if getattr(value.canvas, "manager", None) is None:
            path = next(block_vars["image_path_iterator"])
            value.savefig(path, dpi=80)
            paths.append(path)
    return figure_rst(paths, gallery_conf["src_dir"])
