"""A local GPU lease: give each concurrently running GPU job of one machine its own device.

Snakemake counts GPUs (``--resources gpu=4``) but does not say *which* GPU a job should use
(snakemake/snakemake#281). Each GPU job therefore takes a non-blocking ``fcntl.flock`` on one of
``N`` lock files ``gpu0.lock … gpu{N-1}.lock`` in a lock folder and sets ``CUDA_VISIBLE_DEVICES``
to that slot's device before PyTorch initialises CUDA. The lock's file descriptor stays open for
the life of the process, so the kernel releases the lock when the process ends, even on SIGKILL:
a killed job never leaves a GPU reserved.

Where ``CUDA_VISIBLE_DEVICES`` is already set (SLURM sets it for a job that asked for a GPU, or
the user chose a device) the lease takes no lock and leaves it alone.

Environment:

``METALANDSCAPE_GPUS``
    the GPUs to share: a count (``4`` → devices 0–3) or a comma list of device ids
    (``0,2,3``); ``0`` turns the lease off. Unset: one per line of ``nvidia-smi -L``, or none
    when ``nvidia-smi`` is missing.
``METALANDSCAPE_GPU_LOCK_DIR``
    the lock folder; default ``$TMPDIR/metalandscape-gpu-locks-<uid>``, one per user and
    machine, so two workflows of one user on one machine share the GPUs correctly. It must be
    on a local file system (``flock`` over NFS is unreliable).
``METALANDSCAPE_GPU_WAIT``
    seconds to wait for a free GPU before giving up (default: wait as long as it takes).

No PyTorch import here: the lease must run before anything initialises CUDA.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)

GPUS_ENV = "METALANDSCAPE_GPUS"
LOCK_DIR_ENV = "METALANDSCAPE_GPU_LOCK_DIR"
WAIT_ENV = "METALANDSCAPE_GPU_WAIT"
VISIBLE_ENV = "CUDA_VISIBLE_DEVICES"
POLL_SECONDS = 0.2
REPORT_EVERY_SECONDS = 60.0

# Leases taken by lease_for_device live as long as the process: the open descriptor is the lock.
_PROCESS_LEASES: list[GpuLease] = []


class GpuLeaseError(RuntimeError):
    """No GPU could be leased (all busy past the wait, or a bad setting); the message says why."""


class GpuLease:
    """A held slot: its lock descriptor stays open until :meth:`release` or process exit."""

    def __init__(self, slot: int, device: str, lock_path: Path, fd: int) -> None:
        self.slot = slot
        self.device = device
        self.lock_path = lock_path
        self._fd: int | None = fd
        self._previous_visible: str | None = None
        self._applied = False

    @property
    def held(self) -> bool:
        """Whether the lock is still held by this object."""
        return self._fd is not None

    def apply(self) -> None:
        """Set ``CUDA_VISIBLE_DEVICES`` to the leased device (before CUDA is initialised)."""
        _warn_if_cuda_initialised()
        if not self._applied:
            self._previous_visible = os.environ.get(VISIBLE_ENV)
            self._applied = True
        os.environ[VISIBLE_ENV] = self.device

    def release(self) -> None:
        """Give the slot back and restore ``CUDA_VISIBLE_DEVICES`` (idempotent)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        if self._applied:
            if self._previous_visible is None:
                os.environ.pop(VISIBLE_ENV, None)
            else:
                os.environ[VISIBLE_ENV] = self._previous_visible
            self._applied = False

    def __enter__(self) -> GpuLease:
        self.apply()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "held" if self.held else "released"
        return f"GpuLease(slot={self.slot}, device={self.device!r}, {state}, {self.lock_path})"


def default_lock_dir() -> Path:
    """``$METALANDSCAPE_GPU_LOCK_DIR``, else a per-user folder in the temporary directory."""
    configured = os.environ.get(LOCK_DIR_ENV)
    if configured:
        return Path(configured)
    return Path(tempfile.gettempdir()) / f"metalandscape-gpu-locks-{os.getuid()}"


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    # Who holds it, for whoever looks at the lock folder; the content is not part of the lock.
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
    return fd


def acquire_gpu(
    slots: int,
    lock_dir: Path | str,
    wait_seconds: float = math.inf,
    *,
    devices: Sequence[str] | None = None,
) -> GpuLease | None:
    """Lease one of ``slots`` GPUs; ``None`` when ``slots`` is 0 (no GPU to share).

    Tries ``gpu0.lock`` … in order without blocking and polls until one is free or
    ``wait_seconds`` have passed (then :class:`GpuLeaseError`). ``devices`` maps slot ``i`` to
    the id put in ``CUDA_VISIBLE_DEVICES`` (default ``str(i)``). The returned lease is held but
    not applied: use it as a context manager, or call :meth:`GpuLease.apply`.
    """
    if slots < 0:
        raise GpuLeaseError(f"GPU slots must be ≥ 0, got {slots}")
    if slots == 0:
        return None
    ids = [str(i) for i in range(slots)] if devices is None else [str(d) for d in devices]
    if len(ids) != slots:
        raise GpuLeaseError(f"{slots} GPU slots but {len(ids)} device ids: {ids}")
    lock_dir = Path(lock_dir)
    lock_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    next_report = start + REPORT_EVERY_SECONDS
    while True:
        for slot in range(slots):
            path = lock_dir / f"gpu{slot}.lock"
            fd = _try_lock(path)
            if fd is not None:
                log.info("leased GPU %s (slot %d, %s)", ids[slot], slot, path)
                return GpuLease(slot, ids[slot], path, fd)
        now = time.monotonic()
        if now - start >= wait_seconds:
            raise GpuLeaseError(
                f"all {slots} GPU slots in {lock_dir} stayed busy for {wait_seconds:g} s; "
                f"run fewer GPU jobs at once (snakemake --resources gpu={slots}) or set "
                f"{WAIT_ENV}"
            )
        if now >= next_report:
            log.info("waiting for a free GPU: all %d slots in %s are busy", slots, lock_dir)
            next_report = now + REPORT_EVERY_SECONDS
        time.sleep(min(POLL_SECONDS, max(wait_seconds - (now - start), 0.0)))


def gpu_ids_from_environment() -> list[str]:
    """The device ids to share: ``$METALANDSCAPE_GPUS`` (count or list), else ``nvidia-smi -L``."""
    configured = os.environ.get(GPUS_ENV, "").strip()
    if configured:
        if "," not in configured:
            try:
                count = int(configured)
            except ValueError:
                return [configured]  # one device id such as a GPU UUID
            if count < 0:
                raise GpuLeaseError(f"{GPUS_ENV} must be a count ≥ 0 or a list, got {configured}")
            return [str(i) for i in range(count)]
        return [part.strip() for part in configured.split(",") if part.strip()]
    return [str(i) for i in range(count_nvidia_gpus())]


def count_nvidia_gpus() -> int:
    """GPUs listed by ``nvidia-smi -L`` (0 without the tool or when it fails)."""
    executable = shutil.which("nvidia-smi")
    if executable is None:
        return 0
    try:
        listing = subprocess.run(
            [executable, "-L"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in listing.splitlines() if line.startswith("GPU "))


def _wait_from_environment() -> float:
    text = os.environ.get(WAIT_ENV, "").strip()
    if not text:
        return math.inf
    try:
        value = float(text)
    except ValueError:
        raise GpuLeaseError(f"{WAIT_ENV} must be a number of seconds, got {text!r}") from None
    if value < 0:
        raise GpuLeaseError(f"{WAIT_ENV} must be ≥ 0, got {text!r}")
    return value


def _warn_if_cuda_initialised() -> None:
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    is_initialized = getattr(cuda, "is_initialized", None)
    if callable(is_initialized) and is_initialized():
        log.warning(
            "CUDA was initialised before the GPU lease set %s; the lease cannot move this "
            "process to its GPU",
            VISIBLE_ENV,
        )


def lease_for_device(device: str) -> GpuLease | None:
    """Take a GPU for this process when ``device`` may use one; call before touching CUDA.

    ``cpu`` and explicit ``cuda:N`` take nothing; with ``CUDA_VISIBLE_DEVICES`` already set
    (SLURM, or the user) nothing is taken either. Otherwise one of the machine's GPUs is leased
    for the rest of the process and ``CUDA_VISIBLE_DEVICES`` set to it:

    * ``cuda`` waits for a free GPU (``$METALANDSCAPE_GPU_WAIT`` seconds, default unbounded);
    * ``auto`` takes a GPU only if one is free now; when all are busy it hides them
      (``CUDA_VISIBLE_DEVICES=""``) and the job runs on the CPU instead of waiting.

    With no GPU found: ``None`` (``auto`` runs on the CPU, ``cuda`` fails in
    :func:`metalandscape.devices.resolve_device`).
    """
    if device == "cpu" or device.startswith("cuda:"):
        return None
    if device not in ("auto", "cuda"):
        return None  # resolve_device names the bad device
    torch = sys.modules.get("torch")
    if device == "auto" and torch is not None and getattr(torch.version, "cuda", "") is None:
        return None  # a CPU-only PyTorch build: no GPU to lease
    visible = os.environ.get(VISIBLE_ENV)
    if visible is not None:
        log.info("%s=%r is set (SLURM or the user); no GPU lease taken", VISIBLE_ENV, visible)
        return None
    ids = gpu_ids_from_environment()
    if not ids:
        return None
    if device == "auto":
        try:
            lease = acquire_gpu(len(ids), default_lock_dir(), 0.0, devices=ids)
        except GpuLeaseError:
            log.info("all %d GPUs are leased to other jobs; device auto runs on the CPU", len(ids))
            os.environ[VISIBLE_ENV] = ""
            return None
    else:
        lease = acquire_gpu(len(ids), default_lock_dir(), _wait_from_environment(), devices=ids)
    assert lease is not None
    lease.apply()
    _PROCESS_LEASES.append(lease)
    return lease
