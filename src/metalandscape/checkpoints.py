"""One HDF5 file per training run: every epoch's parameters, and what an exact resume needs.

Layout::

    /                      attrs: format, config (JSON), package_version, torch_version,
                                  git_commit, finished (bool), epochs_planned
    /epoch_0000            θ0 before any meta-update; attrs: epoch, complete, train_loss, ...
        params/<name>      one dataset per parameter (dots in names become '/')
    /epoch_0001 ...
    /resume_a, /resume_b   two slots taking turns: optimizer state, iteration counter and torch
                           RNG state of one complete epoch (attr ``epoch``)

While training runs the file is ``<out>.partial``; an epoch's group gets ``complete = True`` only
after its data and its resume slot are flushed, and the file is renamed to ``<out>`` only when
training has finished, so a crash never leaves a file that looks complete. No pickle anywhere.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

import metalandscape
from metalandscape.functional import Params

FORMAT = "metalandscape-run-1"
RESUME_SLOTS = ("resume_a", "resume_b")


class CheckpointError(ValueError):
    """A run file is missing, unreadable, or not of this format."""


def epoch_group_name(epoch: int) -> str:
    """``epoch_0007`` for epoch 7."""
    return f"epoch_{epoch:04d}"


def partial_path(path: str | Path) -> Path:
    """Where the run file lives while training is in progress."""
    path = Path(path)
    return path.with_name(path.name + ".partial")


def git_commit() -> str:
    """The source tree's git commit, or ``unknown``."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


@dataclass(frozen=True)
class ResumeState:
    """Exact training state after a complete epoch."""

    epoch: int
    params: Params
    optimizer_state: dict[str, Any]
    iteration: int
    torch_rng_state: torch.Tensor


def _write_params(group: h5py.Group, params: Params) -> None:
    for name, value in params.items():
        group.create_dataset(name.replace(".", "/"), data=value.detach().cpu().numpy())


def _read_params(group: h5py.Group, names: list[str]) -> Params:
    return {name: torch.from_numpy(np.asarray(group[name.replace(".", "/")][()])) for name in names}


class RunWriter:
    """Appends epochs to a run's partial file; see the module docstring for the layout."""

    def __init__(self, path: str | Path, config_json: str, epochs_planned: int) -> None:
        self.final_path = Path(path)
        self.path = partial_path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            with h5py.File(self.path, "w") as handle:
                handle.attrs["format"] = FORMAT
                handle.attrs["config"] = config_json
                handle.attrs["package_version"] = str(metalandscape.__version__)
                handle.attrs["torch_version"] = str(torch.__version__)
                handle.attrs["git_commit"] = git_commit()
                handle.attrs["finished"] = False
                handle.attrs["epochs_planned"] = epochs_planned
        else:
            with _open(self.path, "r") as handle:
                if handle.attrs["config"] != config_json:
                    raise CheckpointError(
                        f"{self.path} was started with another config; delete it to start over"
                    )

    def last_complete_epoch(self) -> int | None:
        """The newest epoch whose group and resume slot are both complete, or None."""
        with _open(self.path, "r") as handle:
            return _last_complete_epoch(handle)

    def load_resume(self) -> ResumeState | None:
        """The state after the last complete epoch, or None for a fresh file."""
        with _open(self.path, "r") as handle:
            epoch = _last_complete_epoch(handle)
            if epoch is None:
                return None
            slot = _slot_for_epoch(handle, epoch)
            names = json.loads(handle.attrs["parameter_names"])
            params = _read_params(handle[epoch_group_name(epoch)]["params"], names)
            state = json.loads(slot.attrs["optimizer_json"])
            tensors = slot["optimizer"]
            for index, entry in state["state"].items():
                for key in list(entry):
                    entry[key] = torch.from_numpy(np.asarray(tensors[f"{index}/{key}"][()]))
            state["state"] = {int(k): v for k, v in state["state"].items()}
            return ResumeState(
                epoch=epoch,
                params=params,
                optimizer_state=state,
                iteration=int(slot.attrs["iteration"]),
                torch_rng_state=torch.from_numpy(np.asarray(slot["torch_rng_state"][()])),
            )

    def write_epoch(
        self,
        epoch: int,
        params: Params,
        optimizer_state: dict[str, Any],
        iteration: int,
        statistics: dict[str, float],
    ) -> None:
        """Write one epoch and its resume slot, flush, then mark the epoch complete."""
        with _open(self.path, "a") as handle:
            handle.attrs["parameter_names"] = json.dumps(list(params))
            name = epoch_group_name(epoch)
            if name in handle:  # left incomplete by a crash
                del handle[name]
            group = handle.create_group(name)
            group.attrs["epoch"] = epoch
            group.attrs["complete"] = False
            for key, value in statistics.items():
                group.attrs[key] = float(value)
            _write_params(group.create_group("params"), params)
            slot = handle.require_group(RESUME_SLOTS[epoch % 2])
            slot.attrs["epoch"] = -1
            handle.flush()
            _write_optimizer(slot, optimizer_state)
            slot.attrs["iteration"] = iteration
            _overwrite(slot, "torch_rng_state", torch.get_rng_state().numpy())
            handle.flush()
            slot.attrs["epoch"] = epoch
            group.attrs["complete"] = True
            handle.flush()

    def finish(self) -> Path:
        """Mark training finished and move the file to its final name."""
        with _open(self.path, "a") as handle:
            handle.attrs["finished"] = True
            handle.flush()
        os.replace(self.path, self.final_path)
        return self.final_path


def _overwrite(group: h5py.Group, name: str, array: np.ndarray) -> None:
    """Write ``array`` in place when a dataset of that shape exists, so the file does not grow."""
    existing = group.get(name)
    if existing is not None and existing.shape == array.shape and existing.dtype == array.dtype:
        existing[...] = array
        return
    if existing is not None:
        del group[name]
    group.create_dataset(name, data=array)


def _write_optimizer(slot: h5py.Group, optimizer_state: dict[str, Any]) -> None:
    skeleton: dict[str, Any] = {"param_groups": optimizer_state["param_groups"], "state": {}}
    tensors = slot.require_group("optimizer")
    for index, entry in optimizer_state["state"].items():
        skeleton["state"][str(index)] = {}
        for key, value in entry.items():
            array = value.detach().cpu().numpy() if torch.is_tensor(value) else np.asarray(value)
            _overwrite(tensors, f"{index}/{key}", np.ascontiguousarray(array))
            skeleton["state"][str(index)][key] = None
    slot.attrs["optimizer_json"] = json.dumps(skeleton)


def _slot_for_epoch(handle: h5py.File, epoch: int) -> h5py.Group:
    slot = handle.get(RESUME_SLOTS[epoch % 2])
    if slot is None or int(slot.attrs.get("epoch", -1)) != epoch:
        raise CheckpointError(f"{handle.filename}: resume state of epoch {epoch} is missing")
    return slot


def _last_complete_epoch(handle: h5py.File) -> int | None:
    epochs = sorted(
        int(group.attrs["epoch"])
        for name, group in handle.items()
        if name.startswith("epoch_") and bool(group.attrs.get("complete", False))
    )
    for epoch in reversed(epochs):
        slot = handle.get(RESUME_SLOTS[epoch % 2])
        if slot is not None and int(slot.attrs.get("epoch", -1)) == epoch:
            return epoch
    return None


@contextmanager
def _open(path: Path, mode: str) -> Iterator[h5py.File]:
    try:
        handle = h5py.File(path, mode)
    except FileNotFoundError:
        raise CheckpointError(f"run file {path} not found; train it first") from None
    except OSError as error:
        raise CheckpointError(
            f"run file {path} is not a readable HDF5 file ({error}); delete it and retrain"
        ) from None
    try:
        if handle.attrs.get("format") != FORMAT:
            raise CheckpointError(f"{path} is not a metalandscape run file (format {FORMAT})")
        yield handle
    finally:
        handle.close()


@dataclass(frozen=True)
class RunInfo:
    """What a finished (or partial) run file holds."""

    path: Path
    config: dict[str, Any]
    epochs: tuple[int, ...]
    finished: bool
    statistics: dict[int, dict[str, float]]


def read_run_info(path: str | Path) -> RunInfo:
    """Config, complete epochs and per-epoch training statistics of a run file."""
    path = Path(path)
    with _open(path, "r") as handle:
        epochs, statistics = [], {}
        for name, group in handle.items():
            if name.startswith("epoch_") and bool(group.attrs.get("complete", False)):
                epoch = int(group.attrs["epoch"])
                epochs.append(epoch)
                statistics[epoch] = {
                    key: float(value)
                    for key, value in group.attrs.items()
                    if key not in ("epoch", "complete")
                }
        return RunInfo(
            path=path,
            config=json.loads(handle.attrs["config"]),
            epochs=tuple(sorted(epochs)),
            finished=bool(handle.attrs["finished"]),
            statistics=statistics,
        )


def load_epoch_params(path: str | Path, epoch: int) -> Params:
    """``{name: tensor}`` of one complete epoch."""
    path = Path(path)
    with _open(path, "r") as handle:
        group = handle.get(epoch_group_name(epoch))
        if group is None or not bool(group.attrs.get("complete", False)):
            available = [
                int(g.attrs["epoch"])
                for n, g in handle.items()
                if n.startswith("epoch_") and g.attrs.get("complete", False)
            ]
            raise CheckpointError(
                f"{path} has no complete epoch {epoch}; available: "
                f"{min(available, default='none')}..{max(available, default='none')}"
            )
        names = json.loads(handle.attrs["parameter_names"])
        return _read_params(group["params"], names)
