"""A throw-away installed package for plugin tests: a module and its dist-info on a folder that
importlib.metadata searches once the folder is on the path (sys.path or PYTHONPATH)."""

from __future__ import annotations

from pathlib import Path


def install_package(root: Path, module: str, source: str, entry_points: str) -> Path:
    """``root/<module>.py`` holding ``source`` and ``root/<module>-0.1.dist-info`` declaring
    ``entry_points`` (the text of an entry_points.txt); returns ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(source)
    info = root / f"{module}-0.1.dist-info"
    info.mkdir()
    name = module.replace("_", "-")
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)
    return root
