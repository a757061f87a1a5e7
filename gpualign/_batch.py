"""Many sources against one template: one status per frame, a summary at the end."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import typer

from ._errors import InputError

log = logging.getLogger("gpualign")


@dataclass
class FrameStatus:
    """Outcome of one frame of a batch."""

    source: Path
    output: Path
    ok: bool
    message: str


def output_name(source: Path, outdir: Path) -> Path:
    """Predictable output name: ``OUTDIR/<source stem>_aligned.fits``."""
    name = source.name
    for ext in (".fits.gz", ".fits.fz", ".fits", ".fit", ".fts"):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
            break
    return outdir / f"{name}_aligned.fits"


def run_batch(sources: list[Path], outdir: Path, align_frame: Callable[[Path, Path], object]
              ) -> list[FrameStatus]:
    """Align every source; a failed frame never stops the others.

    Raises ``typer.Exit(1)`` after the summary when any frame failed.
    """
    if outdir.exists() and not outdir.is_dir():
        raise InputError(f"{outdir} is not a directory", hint="several sources need -o OUTDIR")
    outdir.mkdir(parents=True, exist_ok=True)
    statuses = []
    for src in sources:
        out = output_name(src, outdir)
        try:
            sol = align_frame(src, out)
            n = getattr(sol, "stats", {}).get("n_match", 0)
            statuses.append(FrameStatus(src, out, True, f"{n} matches"))
        except Exception as exc:  # one bad frame must not abort the batch
            statuses.append(FrameStatus(src, out, False, str(exc).splitlines()[0]))
            log.warning("%s failed: %s", src.name, statuses[-1].message)
    n_fail = sum(not s.ok for s in statuses)
    typer.echo(f"{'frame':40s} {'status':7s} detail")
    for s in statuses:
        typer.echo(f"{s.source.name[:40]:40s} {'ok' if s.ok else 'FAILED':7s} {s.message}")
    typer.echo(f"{len(statuses) - n_fail} aligned, {n_fail} failed")
    if n_fail:
        raise typer.Exit(1)
    return statuses
