"""The paper's figures, drawn only from an aggregated Dataset; a registry and the figure CLI."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import xarray as xr

from metalandscape.aggregate import load_aggregate
from metalandscape.figures.coherence import FIG5, FIG8
from metalandscape.figures.common import FigureError, FigureSpec, save_figure
from metalandscape.figures.flatness import FIG2

log = logging.getLogger(__name__)

FIGURES: dict[str, FigureSpec] = {spec.name: spec for spec in (FIG2, FIG5, FIG8)}


def figure_spec(name: str) -> FigureSpec:
    """The registered figure ``name``."""
    try:
        return FIGURES[name]
    except KeyError:
        raise FigureError(f"unknown figure {name!r}; known figures: {', '.join(FIGURES)}") from None


def render_figure(name: str, dataset: xr.Dataset, out: str | Path) -> tuple[Path, Path]:
    """Draw figure ``name`` from ``dataset`` and write ``out`` (.pdf) and its .png twin."""
    spec = figure_spec(name)
    reason = spec.missing(dataset)
    if reason:
        raise FigureError(reason)
    return save_figure(spec.draw(dataset), out)


def _command_figure(args: argparse.Namespace) -> int:
    if args.list:
        for spec in FIGURES.values():
            print(f"{spec.name}: {spec.description} (needs {', '.join(spec.variables)})")
        return 0
    if not args.name or not args.input or not args.out:
        raise FigureError("figure needs NAME, --input AGGREGATE.nc and --out FILE.pdf (or --list)")
    figure_spec(args.name)
    pdf_path, png_path = render_figure(args.name, load_aggregate(args.input), args.out)
    log.info("wrote %s and %s", pdf_path, png_path)
    return 0


def add_figure_parser(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Register ``metalandscape figure`` on the CLI's subparsers."""
    parser = subparsers.add_parser(
        "figure",
        help="draw one of the paper's figures from an aggregate .nc (PDF and PNG)",
        parents=[common],
    )
    parser.add_argument("name", nargs="?", metavar="NAME", help=f"one of {', '.join(FIGURES)}")
    parser.add_argument("--list", action="store_true", help="list the figures and their needs")
    parser.add_argument("--input", help="aggregate .nc written by 'metalandscape aggregate'")
    parser.add_argument("--out", help="figure .pdf to write (the .png goes next to it)")
    parser.set_defaults(handler=_command_figure)


__all__ = [
    "FIGURES",
    "FigureError",
    "FigureSpec",
    "add_figure_parser",
    "figure_spec",
    "render_figure",
]
