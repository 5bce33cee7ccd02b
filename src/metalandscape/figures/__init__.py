"""The paper's figures, drawn only from an aggregated Dataset; a registry and the figure CLI.

Importing this package is cheap (the CLI registers its subcommand on every call): the registry
``FIGURES`` loads on first use, from every module of this package that declares ``SPECS`` (a
tuple of :class:`~metalandscape.figures.spec.FigureSpec`), and the drawing modules import
matplotlib, seaborn and xarray only when they draw.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import re
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


_PAPER_FIGURE = re.compile(r"fig(\d+)")


def _figure_order(spec: FigureSpec) -> tuple[int, int]:
    """The paper's figures by number (fig2 before fig10), then the extensions (kept in order)."""
    match = _PAPER_FIGURE.fullmatch(spec.name)
    return (0, int(match[1])) if match else (1, 0)


def discover_specs() -> list[FigureSpec]:
    """The specs of every module of this package that declares ``SPECS`` (a tuple of specs);
    modules without it (``common``, ``panels``, ``spec``) hold shared code.

    Paper figures come first in the paper's order, then the extensions by module name and
    declaration order. Adding a figure is adding a module: nothing here lists them.
    """
    specs: list[FigureSpec] = []
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name):
        module = importlib.import_module(f"{__name__}.{module_info.name}")
        specs.extend(getattr(module, "SPECS", ()))
    return sorted(specs, key=_figure_order)


def _registry() -> dict[str, FigureSpec]:
    registry: dict[str, FigureSpec] = {}
    for spec in discover_specs():
        if spec.name in registry:
            raise ValueError(f"two figure modules declare a figure named {spec.name!r}")
        registry[spec.name] = spec
    return registry


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
    "discover_specs",
    "figure_spec",
    "figure_spec_list",
    "render_figure",
]
