"""The local GPU lease: exclusive slots across processes, release on SIGKILL, SLURM respected."""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
import time
from collections import defaultdict
from pathlib import Path

import pytest

from metalandscape import gpu_lease
from metalandscape.gpu_lease import GpuLeaseError, acquire_gpu, lease_for_device

# fork: the children need nothing but fcntl and the clock, and start in milliseconds.
FORK = multiprocessing.get_context("fork")


@pytest.fixture
def lease_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A private lock folder, no GPU settings inherited, and no lease left behind."""
    lock_dir = tmp_path / "locks"
    monkeypatch.setenv(gpu_lease.LOCK_DIR_ENV, str(lock_dir))
    for name in (gpu_lease.GPUS_ENV, gpu_lease.WAIT_ENV, gpu_lease.VISIBLE_ENV):
        monkeypatch.delenv(name, raising=False)
    yield lock_dir
    while gpu_lease._PROCESS_LEASES:
        gpu_lease._PROCESS_LEASES.pop().release()


def _hold_slot(lock_dir: str, slots: int, hold: float, record: str) -> None:
    lease = acquire_gpu(slots, lock_dir, wait_seconds=60)
    assert lease is not None
    with lease:
        start = time.monotonic()
        visible = os.environ[gpu_lease.VISIBLE_ENV]
        time.sleep(hold)
        end = time.monotonic()
    Path(record).write_text(f"{lease.slot} {visible} {start!r} {end!r}\n")


def test_concurrent_processes_never_share_a_slot(lease_env: Path, tmp_path: Path) -> None:
    slots, workers = 2, 6
    records = [tmp_path / f"record{i}.txt" for i in range(workers)]
    processes = [
        FORK.Process(target=_hold_slot, args=(str(lease_env), slots, 0.3, str(record)))
        for record in records
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    intervals: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for record in records:
        slot, visible, start, end = record.read_text().split()
        assert visible == slot  # CUDA_VISIBLE_DEVICES named the leased slot
        intervals[int(slot)].append((float(start), float(end)))
    assert set(intervals) <= set(range(slots))
    assert sum(len(v) for v in intervals.values()) == workers
    for slot, spans in intervals.items():
        spans.sort()
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert start >= end, f"slot {slot} held by two processes at once: {spans}"
    # six 0.3 s holders on two slots: well under the 1.8 s one slot would need
    everything = [span for spans in intervals.values() for span in spans]
    assert len(intervals) == slots
    assert max(e for _, e in everything) - min(s for s, _ in everything) < 1.8


def _hold_forever(lock_dir: str, ready: multiprocessing.synchronize.Event) -> None:
    lease = acquire_gpu(1, lock_dir, wait_seconds=10)
    assert lease is not None
    ready.set()
    time.sleep(120)


def test_lock_released_when_holder_is_killed(lease_env: Path) -> None:
    ready = FORK.Event()
    holder = FORK.Process(target=_hold_forever, args=(str(lease_env), ready))
    holder.start()
    try:
        assert ready.wait(timeout=30)
        with pytest.raises(GpuLeaseError, match="busy"):
            acquire_gpu(1, lease_env, wait_seconds=0.3)
    finally:
        assert holder.pid is not None
        os.kill(holder.pid, signal.SIGKILL)
        holder.join(timeout=30)
    assert holder.exitcode == -signal.SIGKILL
    lease = acquire_gpu(1, lease_env, wait_seconds=5)
    assert lease is not None and lease.slot == 0
    lease.release()


def test_slurm_cuda_visible_devices_is_respected(
    lease_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(gpu_lease.VISIBLE_ENV, "3")
    monkeypatch.setenv(gpu_lease.GPUS_ENV, "4")
    assert lease_for_device("cuda") is None
    assert os.environ[gpu_lease.VISIBLE_ENV] == "3"
    assert not lease_env.exists() or not any(lease_env.iterdir())


def test_lease_for_device_takes_distinct_gpus_for_the_process(
    lease_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(gpu_lease.GPUS_ENV, "5,7")
    first = lease_for_device("cuda")
    assert first is not None and first.device == "5"
    assert os.environ[gpu_lease.VISIBLE_ENV] == "5"
    monkeypatch.delenv(gpu_lease.VISIBLE_ENV)  # as in another process of the machine
    second = lease_for_device("cuda")
    assert second is not None and second.device == "7"
    monkeypatch.delenv(gpu_lease.VISIBLE_ENV)
    monkeypatch.setenv(gpu_lease.WAIT_ENV, "0.2")
    with pytest.raises(GpuLeaseError, match="busy"):
        lease_for_device("cuda")
    assert [first, second] == gpu_lease._PROCESS_LEASES


def test_no_lease_without_gpus_or_on_cpu(lease_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(gpu_lease.GPUS_ENV, "0")
    assert lease_for_device("cuda") is None
    assert gpu_lease.VISIBLE_ENV not in os.environ
    monkeypatch.setenv(gpu_lease.GPUS_ENV, "2")
    assert lease_for_device("cpu") is None
    assert lease_for_device("cuda:1") is None
    assert acquire_gpu(0, lease_env) is None
    assert gpu_lease.VISIBLE_ENV not in os.environ


def test_context_manager_sets_and_restores_visible_devices(
    lease_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lease = acquire_gpu(2, lease_env, devices=["a", "b"])
    assert lease is not None
    with lease:
        assert os.environ[gpu_lease.VISIBLE_ENV] == "a"
        other = acquire_gpu(2, lease_env, wait_seconds=0, devices=["a", "b"])
        assert other is not None and other.device == "b"
        other.release()
    assert not lease.held
    assert gpu_lease.VISIBLE_ENV not in os.environ
    again = acquire_gpu(2, lease_env, wait_seconds=0)
    assert again is not None and again.slot == 0
    again.release()


def test_gpu_count_from_nvidia_smi(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(gpu_lease.GPUS_ENV, raising=False)
    monkeypatch.setattr(gpu_lease.shutil, "which", lambda name: None)
    assert gpu_lease.gpu_ids_from_environment() == []

    class Listing:
        stdout = "GPU 0: NVIDIA H100 (UUID: GPU-1)\nGPU 1: NVIDIA H100 (UUID: GPU-2)\n"

    monkeypatch.setattr(gpu_lease.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(gpu_lease.subprocess, "run", lambda *a, **k: Listing())
    assert gpu_lease.gpu_ids_from_environment() == ["0", "1"]
    monkeypatch.setenv(gpu_lease.GPUS_ENV, "3")
    assert gpu_lease.gpu_ids_from_environment() == ["0", "1", "2"]


def test_auto_takes_a_free_gpu_or_runs_on_the_cpu(
    lease_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    monkeypatch.setenv(gpu_lease.GPUS_ENV, "1")
    monkeypatch.setattr(torch.version, "cuda", None)
    assert lease_for_device("auto") is None  # a CPU-only PyTorch build leases nothing
    assert gpu_lease.VISIBLE_ENV not in os.environ
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    first = lease_for_device("auto")
    assert first is not None and os.environ[gpu_lease.VISIBLE_ENV] == "0"
    monkeypatch.delenv(gpu_lease.VISIBLE_ENV)  # as in another process of the machine

    def no_waiting(seconds: float) -> None:
        raise AssertionError(f"auto waited {seconds} s for a busy GPU")

    monkeypatch.setattr(gpu_lease.time, "sleep", no_waiting)
    assert lease_for_device("auto") is None  # busy: no waiting, and no GPU visible
    assert os.environ[gpu_lease.VISIBLE_ENV] == ""
