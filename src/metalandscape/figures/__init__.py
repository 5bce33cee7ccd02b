"""The paper's figures, drawn only from an aggregated Dataset; a registry and the figure CLI.

Importing this package is cheap (the CLI registers its subcommand on every call): the registry
``FIGURES`` (each figure module's :class:`~metalandscape.figures.spec.FigureSpec`) loads on first
use, and the drawing modules import matplotlib, seaborn and xarray only when they draw.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import xarray as xr

    from metalandscape.figures.spec import FigureSpec

    FIGURES: dict[str, FigureSpec]
    FIGURE_NAMES: tuple[str, ...]

log = logging.getLogger(__name__)


class FigureError(ValueError):
    """The aggregate lacks what a figure needs, or the figure name or output is wrong."""


def _registry() -> dict[str, FigureSpec]:
    from metalandscape.figures.coherence import FIG5, FIG8
    from metalandscape.figures.comparison import COMPARISON
    from metalandscape.figures.correlation import FIG7, FIG11, FIG12
    from metalandscape.figures.curves import FIG10
    from metalandscape.figures.finetune import FIG6
    from metalandscape.figures.flatness import FIG2
    from metalandscape.figures.landscape import (
        FUNCTION_COHERENCE_FIGURE,
        LAYER_CURVATURE_FIGURE,
        SPECTRAL_DENSITY_FIGURE,
    )
    from metalandscape.figures.overtraining import FIG3, FIG4
    from metalandscape.figures.regularizer import FIG9

    specs = (
        *(FIG2, FIG3, FIG4, FIG5, FIG6, FIG7, FIG8, FIG9, FIG10, FIG11, FIG12),
        *(SPECTRAL_DENSITY_FIGURE, LAYER_CURVATURE_FIGURE, FUNCTION_COHERENCE_FIGURE, COMPARISON),
    )
    return {spec.name: spec for spec in specs}


def __getattr__(name: str) -> Any:
    if name == "FIGURES":
        registry = _registry()
        globals()["FIGURES"] = registry
        return registry
    if name == "FIGURE_NAMES":
        return tuple(__getattr__("FIGURES"))
    if name == "FigureSpec":
        from metalandscape.figures.spec import FigureSpec

        return FigureSpec
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def figure_spec(name: str) -> FigureSpec:
    """The registered figure ``name``."""
    registry: dict[str, FigureSpec] = __getattr__("FIGURES")
    try:
        return registry[name]
    except KeyError:
        raise FigureError(
            f"unknown figure {name!r}; known figures: {', '.join(registry)}"
        ) from None


def render_figure(name: str, dataset: xr.Dataset, out: str | Path) -> tuple[Path, Path]:
    """Draw figure ``name`` from ``dataset`` and write ``out`` (.pdf) and its .png twin."""
    from metalandscape.figures.common import output_paths, save_figure

    spec = figure_spec(name)
    output_paths(out)
    reason = spec.missing(dataset)
    if reason:
        raise FigureError(reason)
    return save_figure(spec.draw(dataset), out)


def _command_figure(args: argparse.Namespace) -> int:
    from metalandscape.aggregate import load_aggregate

    if args.list:
        for spec in figure_spec_list():
            print(f"{spec.name}: {spec.description} (needs {', '.join(spec.variables)})")
        return 0
    if not args.name or not args.input or not args.out:
        raise FigureError("figure needs NAME, --input AGGREGATE.nc and --out FILE.pdf (or --list)")
    figure_spec(args.name)
    pdf_path, png_path = render_figure(args.name, load_aggregate(args.input), args.out)
    log.info("wrote %s and %s", pdf_path, png_path)
    return 0


def figure_spec_list() -> list[FigureSpec]:
    """Every registered figure, in order."""
    return list(__getattr__("FIGURES").values())


def add_figure_parser(subparsers: Any, common: argparse.ArgumentParser) -> None:
    """Register ``metalandscape figure`` on the CLI's subparsers."""
    parser = subparsers.add_parser(
        "figure",
        help="draw one of the paper's figures from an aggregate .nc (PDF and PNG)",
        description="Draw one of the paper's figures from an aggregate .nc (PDF and PNG).",
        epilog="example:\n  metalandscape figure fig2 --input results/aggregate/sinusoid.nc "
        "--out results/figures/fig2.pdf",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.add_argument("name", nargs="?", metavar="NAME", help="a figure name (see --list)")
    parser.add_argument("--list", action="store_true", help="list the figures and their needs")
    parser.add_argument("--input", help="aggregate .nc written by 'metalandscape aggregate'")
    parser.add_argument("--out", help="figure .pdf to write (the .png goes next to it)")
    parser.set_defaults(handler=_command_figure)


__all__ = [
    "FIGURES",
    "FIGURE_NAMES",
    "FigureError",
    "FigureSpec",
    "add_figure_parser",
    "figure_spec",
    "figure_spec_list",
    "render_figure",
]
