"""One HDF5 file per training run: every epoch's parameters, and what an exact resume needs.

Finished run, ``<run>.h5``::

    /                      attrs: format, config (JSON), package_version, torch_version,
                                  git_commit, finished (True), epochs_planned, parameter_names
    /epoch_0000            θ0 before any meta-update; attrs: epoch, iteration (meta-iterations
                           done), complete, train_loss, ...
        params/<name>      one dataset per parameter (dots in names become '/'); attr sha256
    /epoch_0001 ...

While training runs, ``<run>.h5.partial`` is a folder holding ``run.json`` (the root attributes),
``lock`` (flock'ed by the training process) and one small HDF5 file per complete epoch,
``epoch_NNNN.h5``: the epoch's parameters and statistics plus its exact resume state (Adam's
state, the iteration counter and the torch RNG state). ``finish()`` builds ``<run>.h5`` from the
epoch files and removes the folder.

Crash safety: every file is built in memory, written to a temporary name, fsync'ed and renamed
over its final name (then the folder is fsync'ed), so each name holds either nothing or a
complete file; a SIGKILL at any moment loses at most the epoch being written. Every dataset
carries the SHA-256 of its dtype, shape and bytes, checked on every read: damaged epochs are
reported naming file and epoch, and a resume restarts after the last intact epoch. Writing a
whole small file per epoch keeps the cost per epoch constant (no rewrite of earlier epochs).
No pickle anywhere.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

import metalandscape
from metalandscape.functional import Params

FORMAT = "metalandscape-run-2"
log = logging.getLogger(__name__)

HEADER = "run.json"
LOCK = "lock"


class CheckpointError(ValueError):
    """A run file is missing, unreadable, damaged, in use or cannot be written."""


def epoch_group_name(epoch: int) -> str:
    """``epoch_0007`` for epoch 7."""
    return f"epoch_{epoch:04d}"


def partial_path(path: str | Path) -> Path:
    """The folder holding a run while training is in progress."""
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


class _Damaged(Exception):
    """An epoch's data fails its checksum or is missing (message: what is wrong)."""


# ---------------------------------------------------------------------------------------------
# Checksummed datasets


def _digest(array: np.ndarray) -> str:
    array = np.ascontiguousarray(array)
    hasher = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    hasher.update(array.tobytes())
    return hasher.hexdigest()


def _put(group: h5py.Group, name: str, array: np.ndarray) -> None:
    array = np.ascontiguousarray(array)
    dataset = group.create_dataset(name, data=array)
    dataset.attrs["sha256"] = _digest(array)


def _get(group: h5py.Group, name: str) -> np.ndarray:
    dataset = group.get(name)
    if not isinstance(dataset, h5py.Dataset):
        raise _Damaged(f"dataset {name} is missing")
    array = np.asarray(dataset[()])
    if dataset.attrs.get("sha256") != _digest(array):
        raise _Damaged(f"dataset {name} fails its checksum")
    return array


def _write_params(group: h5py.Group, params: Params) -> None:
    for name, value in params.items():
        _put(group, name.replace(".", "/"), value.detach().cpu().numpy())


def _read_params(group: h5py.Group, names: list[str]) -> Params:
    return {name: torch.from_numpy(_get(group, name.replace(".", "/"))) for name in names}


# ---------------------------------------------------------------------------------------------
# Whole-or-nothing files


def _file_error(path: Path, error: OSError, action: str) -> CheckpointError:
    """One line for a file-system error while writing ``path``."""
    code = error.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        return CheckpointError(
            f"no space left on the device while writing {path}; free space and rerun the same "
            "command: training resumes after the last complete epoch"
        )
    if code in (errno.EROFS, errno.EACCES, errno.EPERM):
        reason = "read-only file system" if code == errno.EROFS else "permission denied"
        return CheckpointError(
            f"cannot {action} {path} ({reason}); make {path.parent} writable or choose another "
            "--out"
        )
    return CheckpointError(f"cannot {action} {path}: {error.strerror or error}")


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _write_whole(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary name beside ``path``, fsync, rename over ``path``."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            view, offset = memoryview(data), 0
            while offset < len(data):
                offset += os.pwrite(descriptor, view[offset:], offset)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temporary, path)
        _fsync_folder(path.parent)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise _file_error(path, error, "write") from None


def _hdf5_bytes(fill: Callable[[h5py.File], None]) -> bytes:
    """The bytes of an HDF5 file built in memory by ``fill``."""
    with h5py.File(f"in-memory-{id(fill)}.h5", "w", driver="core", backing_store=False) as handle:
        fill(handle)
        handle.flush()
        return handle.id.get_file_image()


def _remove_stale_temporaries(folder: Path, name: str) -> None:
    for stale in folder.glob(f".{name}.*.tmp"):
        stale.unlink(missing_ok=True)


@contextmanager
def _open(path: Path) -> Iterator[h5py.File]:
    try:
        handle = h5py.File(path, "r")
    except FileNotFoundError:
        raise CheckpointError(f"run file {path} not found; train it first") from None
    except OSError as error:
        raise CheckpointError(
            f"run file {path} is not a readable HDF5 file ({error}); delete it and retrain"
        ) from None
    try:
        yield handle
    finally:
        handle.close()


# ---------------------------------------------------------------------------------------------
# The partial folder


def _epoch_file(folder: Path, epoch: int) -> Path:
    return folder / f"{epoch_group_name(epoch)}.h5"


def _epoch_files(folder: Path) -> dict[int, Path]:
    files = {}
    for path in folder.glob("epoch_*.h5"):
        suffix = path.stem.removeprefix("epoch_")
        if suffix.isdigit():
            files[int(suffix)] = path
    return dict(sorted(files.items()))


def _read_header(folder: Path) -> dict[str, Any]:
    path = folder / HEADER
    try:
        header = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{folder} has no {HEADER}; delete it and retrain") from None
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{path} is damaged ({error}); delete {folder} and retrain") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a metalandscape run header (format {FORMAT})")
    return header


@dataclass(frozen=True)
class _Epoch:
    params: Params
    statistics: dict[str, float]
    iteration: int
    resume: ResumeState | None


def _read_epoch_file(path: Path, epoch: int, *, with_resume: bool) -> _Epoch:
    """Read and verify one epoch file; damage raises ``_Damaged``."""
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise _Damaged(f"not a readable HDF5 file ({error})") from None
    with handle:
        try:
            if int(handle.attrs["epoch"]) != epoch:
                raise _Damaged(f"holds epoch {int(handle.attrs['epoch'])}")
            names = json.loads(handle.attrs["parameter_names"])
            statistics = json.loads(handle.attrs["statistics"])
            params = _read_params(_group(handle, "params"), names)
            slot = _group(handle, "resume")
            iteration = int(slot.attrs["iteration"])
            resume = None
            if with_resume:
                state = json.loads(slot.attrs["optimizer_json"])
                tensors = _group(slot, "optimizer")
                for index, entry in state["state"].items():
                    for key in list(entry):
                        entry[key] = torch.from_numpy(_get(tensors, f"{index}/{key}"))
                state["state"] = {int(k): v for k, v in state["state"].items()}
                resume = ResumeState(
                    epoch=epoch,
                    params=params,
                    optimizer_state=state,
                    iteration=iteration,
                    torch_rng_state=torch.from_numpy(_get(slot, "torch_rng_state")),
                )
        except (KeyError, ValueError, TypeError, OSError) as error:
            raise _Damaged(f"unreadable ({error})") from None
    return _Epoch(params=params, statistics=statistics, iteration=iteration, resume=resume)


def _group(parent: h5py.Group, name: str) -> h5py.Group:
    group = parent.get(name)
    if not isinstance(group, h5py.Group):
        raise _Damaged(f"group {name} is missing")
    return group


def _optimizer_skeleton(slot: h5py.Group, optimizer_state: dict[str, Any]) -> str:
    skeleton: dict[str, Any] = {"param_groups": optimizer_state["param_groups"], "state": {}}
    tensors = slot.create_group("optimizer")
    for index, entry in optimizer_state["state"].items():
        skeleton["state"][str(index)] = {}
        for key, value in entry.items():
            array = value.detach().cpu().numpy() if torch.is_tensor(value) else np.asarray(value)
            _put(tensors, f"{index}/{key}", array)
            skeleton["state"][str(index)][key] = None
    return json.dumps(skeleton)


class RunWriter:
    """Writes a run's epochs into its partial folder; see the module docstring for the layout.

    The writer holds an exclusive lock on the folder from construction until ``finish()`` or
    ``close()``; a second writer on the same run is refused as "in use".
    """

    def __init__(self, path: str | Path, config_json: str, epochs_planned: int) -> None:
        self.final_path = Path(path)
        self.path = partial_path(path)
        self._lock: int | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.is_file():
                raise CheckpointError(
                    f"{self.path} is a run file of an older version of metalandscape; delete it "
                    "and retrain"
                )
            self.path.mkdir(exist_ok=True)
            self._lock = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as error:
            raise _file_error(self.path, error, "create") from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.close()
            raise CheckpointError(
                f"{self.final_path} is in use by another 'metalandscape train' (lock "
                f"{self.path / LOCK}); wait for it to finish or stop it"
            ) from None
        try:
            self.header = self._prepare(config_json, epochs_planned)
        except BaseException:
            self.close()
            raise

    def _prepare(self, config_json: str, epochs_planned: int) -> dict[str, Any]:
        """Clear stale temporaries; check the header or write a new one."""
        _remove_stale_temporaries(self.path, "*")
        _remove_stale_temporaries(self.final_path.parent, self.final_path.name)
        if (self.path / HEADER).exists():
            header = _read_header(self.path)
            if header["config"] != config_json:
                raise CheckpointError(
                    f"{self.path} was started with another config; delete it to start over"
                )
            return header
        header = {
            "format": FORMAT,
            "config": config_json,
            "package_version": str(metalandscape.__version__),
            "torch_version": str(torch.__version__),
            "git_commit": git_commit(),
            "epochs_planned": epochs_planned,
        }
        _write_whole(self.path / HEADER, json.dumps(header, indent=1).encode())
        return header

    def close(self) -> None:
        """Release the lock (the partial folder stays for a later resume)."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def load_resume(self) -> ResumeState | None:
        """The state after the last intact epoch, or None when training starts afresh.

        Every epoch file is verified; from the first damaged (or missing) epoch on, the files
        are reported (one warning line each) and removed, to be trained again.
        """
        files = _epoch_files(self.path)
        resume = None
        for epoch, path in files.items():
            expected = 0 if resume is None else resume.epoch + 1
            if epoch != expected:
                self._drop(files, epoch, f"epoch {expected} is missing")
                break
            try:
                resume = _read_epoch_file(path, epoch, with_resume=True).resume
            except _Damaged as damage:
                self._drop(files, epoch, f"epoch {epoch} is damaged: {damage}")
                break
        return resume

    def _drop(self, files: dict[int, Path], first: int, reason: str) -> None:
        dropped = [epoch for epoch in files if epoch >= first]
        log.warning("%s: %s; retraining from epoch %d", files[first], reason, first)
        for epoch in dropped:
            files[epoch].unlink(missing_ok=True)

    def write_epoch(
        self,
        epoch: int,
        params: Params,
        optimizer_state: dict[str, Any],
        iteration: int,
        statistics: dict[str, float],
    ) -> None:
        """Write one epoch with its resume state as a new file (whole or not at all)."""

        def fill(handle: h5py.File) -> None:
            handle.attrs["epoch"] = epoch
            handle.attrs["parameter_names"] = json.dumps(list(params))
            handle.attrs["statistics"] = json.dumps({k: float(v) for k, v in statistics.items()})
            _write_params(handle.create_group("params"), params)
            slot = handle.create_group("resume")
            slot.attrs["optimizer_json"] = _optimizer_skeleton(slot, optimizer_state)
            slot.attrs["iteration"] = iteration
            _put(slot, "torch_rng_state", torch.get_rng_state().numpy())

        _write_whole(_epoch_file(self.path, epoch), _hdf5_bytes(fill))

    def finish(self) -> Path:
        """Build ``<run>.h5`` from the verified epoch files, then remove the partial folder."""
        epochs = {}
        for epoch, path in _epoch_files(self.path).items():
            try:
                epochs[epoch] = _read_epoch_file(path, epoch, with_resume=False)
            except _Damaged as damage:
                raise CheckpointError(
                    f"{path}: epoch {epoch} is damaged ({damage}); rerun the same command to "
                    "retrain from there"
                ) from None
        names = list(next(iter(epochs.values())).params) if epochs else []

        def fill(handle: h5py.File) -> None:
            for key, value in self.header.items():
                if key != "format":
                    handle.attrs[key] = value
            handle.attrs["format"] = FORMAT
            handle.attrs["finished"] = True
            handle.attrs["parameter_names"] = json.dumps(names)
            for epoch, content in epochs.items():
                group = handle.create_group(epoch_group_name(epoch))
                group.attrs["epoch"] = epoch
                group.attrs["iteration"] = content.iteration
                group.attrs["complete"] = True
                for key, value in content.statistics.items():
                    group.attrs[key] = float(value)
                _write_params(group.create_group("params"), content.params)

        _write_whole(self.final_path, _hdf5_bytes(fill))
        remove_partial(self.final_path, self)
        return self.final_path


def remove_partial(path: str | Path, writer: RunWriter | None = None) -> None:
    """Remove the partial folder of a finished run, unless another process holds its lock."""
    folder = partial_path(path)
    if writer is not None:
        lock = writer._lock
    else:
        if not folder.is_dir():
            return
        try:
            lock = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:
            return
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(lock)
            return
    try:
        shutil.rmtree(folder)
    except OSError as error:
        if writer is not None:
            raise _file_error(folder, error, "remove") from None
    finally:
        if lock is not None:
            os.close(lock)
        if writer is not None:
            writer._lock = None


# ---------------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True)
class RunInfo:
    """What a finished (or partial) run file holds.

    ``iterations``: the meta-iterations done at each epoch's checkpoint.
    """

    path: Path
    config: dict[str, Any]
    epochs: tuple[int, ...]
    finished: bool
    statistics: dict[int, dict[str, float]]
    iterations: dict[int, int]


def _check_format(handle: h5py.File, path: Path) -> None:
    found = handle.attrs.get("format")
    if found != FORMAT:
        raise CheckpointError(
            f"{path} is not a metalandscape run file of format {FORMAT} (found {found}); "
            "retrain it with this version"
        )


def read_run_info(path: str | Path) -> RunInfo:
    """Config, complete epochs and per-epoch training statistics of a run file or partial folder.

    Epochs of a partial folder are listed as written (not verified; ``load_epoch_params`` and a
    resume verify them).
    """
    path = Path(path)
    if path.is_dir():
        header = _read_header(path)
        statistics, iterations = {}, {}
        for epoch, file in _epoch_files(path).items():
            with _open(file) as handle:
                statistics[epoch] = json.loads(handle.attrs.get("statistics", "{}"))
                slot = handle.get("resume")
                if slot is not None and "iteration" in slot.attrs:
                    iterations[epoch] = int(slot.attrs["iteration"])
        config = json.loads(header["config"])
        return RunInfo(
            path=path,
            config=config,
            epochs=tuple(statistics),
            finished=False,
            statistics=statistics,
            iterations=_with_default_iterations(iterations, statistics, config),
        )
    with _open(path) as handle:
        _check_format(handle, path)
        epochs, statistics, iterations = [], {}, {}
        for name, group in handle.items():
            if name.startswith("epoch_") and bool(group.attrs.get("complete", False)):
                epoch = int(group.attrs["epoch"])
                epochs.append(epoch)
                if "iteration" in group.attrs:
                    iterations[epoch] = int(group.attrs["iteration"])
                statistics[epoch] = {
                    key: float(value)
                    for key, value in group.attrs.items()
                    if key not in ("epoch", "complete", "iteration")
                }
        config = json.loads(handle.attrs["config"])
        return RunInfo(
            path=path,
            config=config,
            epochs=tuple(sorted(epochs)),
            finished=bool(handle.attrs["finished"]),
            statistics=statistics,
            iterations=_with_default_iterations(iterations, statistics, config),
        )


def _with_default_iterations(
    found: dict[int, int], epochs: dict[int, Any], config: dict[str, Any]
) -> dict[int, int]:
    """``found`` completed for files without the attribute: epoch × iterations_per_epoch."""
    per_epoch = int(config.get("iterations_per_epoch", 500))
    return {epoch: found.get(epoch, epoch * per_epoch) for epoch in sorted(epochs)}


def load_epoch_params(path: str | Path, epoch: int) -> Params:
    """``{name: tensor}`` of one complete epoch, verified against its checksums."""
    path = Path(path)
    if path.is_dir():
        file = _epoch_file(path, epoch)
        if not file.exists():
            raise CheckpointError(f"{path} has no complete epoch {epoch}")
        try:
            return _read_epoch_file(file, epoch, with_resume=False).params
        except _Damaged as damage:
            raise CheckpointError(f"{file}: epoch {epoch} is damaged ({damage})") from None
    with _open(path) as handle:
        _check_format(handle, path)
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
        try:
            names = json.loads(handle.attrs["parameter_names"])
            return _read_params(_group(group, "params"), names)
        except _Damaged as damage:
            raise CheckpointError(
                f"{path}: epoch {epoch} is damaged ({damage}); retrain the run (delete it and "
                "rerun train)"
            ) from None
