"""Device placement: nothing falls back to CPU tensors (``meta`` here), and CUDA checks (``cuda``)."""

from __future__ import annotations

import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import xarray as xr

from metalandscape.data.sinusoid import SinusoidSource
from metalandscape.data.tasks import TaskSampler
from metalandscape.devices import task_chunk_size
from metalandscape.functional import parameters_of
from metalandscape.metrics.base import EvaluationContext
from metalandscape.metrics.eigen import BatchedHessianVectorProduct, top_eigenvalues_batched
from metalandscape.models import SinusoidMLP

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def sinusoid_context(device: str) -> EvaluationContext:
    torch.manual_seed(0)
    model = SinusoidMLP()
    sampler = TaskSampler(SinusoidSource(k_shot=5, target_points=10), 0)
    return EvaluationContext(
        model,
        parameters_of(model),
        sampler,
        "regression",
        inner_steps=1,
        inner_step_size=0.01,
        device=device,
        task_chunk_size=None,
    )


def test_context_tensors_stay_on_the_meta_device():
    context = sinusoid_context("meta")
    assert all(p.device.type == "meta" for p in context.start_params.values())
    assert context.tasks("test", 3).support_inputs.device.type == "meta"
    adapted = context.adapted("test", 3)
    assert all(p.device.type == "meta" for params in adapted for p in params.values())
    assert context.displacements("test", 3).device.type == "meta"
    assert context.start_gradients("test", 3).device.type == "meta"


def test_batched_hessian_vector_products_stay_on_the_meta_device():
    context = sinusoid_context("meta")
    batch = context.tasks("test", 2)
    product = BatchedHessianVectorProduct(
        context.model,
        context.adapted("test", 2),
        batch.support_inputs,
        batch.support_labels,
        F.mse_loss,
    )
    size = context.displacements("test", 2).shape[1]
    assert product(torch.ones(2, size, device="meta")).device.type == "meta"


def test_task_chunk_default_depends_on_the_device():
    assert task_chunk_size(1, "cpu") == 1
    assert task_chunk_size(None, "cpu") is None
    assert task_chunk_size(1, "cuda") is None
    assert task_chunk_size(4, torch.device("cuda", 0)) is None


@pytest.mark.cuda
@needs_cuda
def test_context_on_cuda_equals_cpu():
    cpu, cuda = sinusoid_context("cpu"), sinusoid_context("cuda")
    for method in ("displacements", "start_gradients"):
        expected = getattr(cpu, method)("test", 8)
        found = getattr(cuda, method)("test", 8)
        assert found.device.type == "cuda"
        torch.testing.assert_close(found.cpu(), expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        cuda.target_results("test", 8), cpu.target_results("test", 8), rtol=1e-4, atol=1e-6
    )


@pytest.mark.cuda
@needs_cuda
def test_batched_lanczos_on_cuda_equals_cpu():
    values = {}
    for device in ("cpu", "cuda"):
        context = sinusoid_context(device)
        batch = context.tasks("test", 4)
        results = top_eigenvalues_batched(
            context.model,
            context.adapted("test", 4),
            batch.support_inputs,
            batch.support_labels,
            F.mse_loss,
            tol=1e-6,
        )
        assert all(r.vector is not None and r.vector.device.type == device for r in results)
        values[device] = [r.value for r in results]
    np.testing.assert_allclose(values["cuda"], values["cpu"], rtol=1e-4)


GPU_CHECK = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"


def write_aggregate_file(path: Path, values: list[float]) -> Path:
    xr.Dataset({"x_mean": ("epoch", np.asarray(values))}, coords={"epoch": [0, 1]}).to_netcdf(
        path, engine="h5netcdf"
    )
    return path


def test_gpu_check_compares_aggregates_to_float_tolerance(tmp_path):
    reference = write_aggregate_file(tmp_path / "cpu.nc", [1.0, 2.0])
    close = write_aggregate_file(tmp_path / "close.nc", [1.0 + 1e-6, 2.0])
    far = write_aggregate_file(tmp_path / "far.nc", [1.1, 2.0])
    run = partial(subprocess.run, capture_output=True, text=True)
    assert run(["bash", str(GPU_CHECK), "--compare", str(close), str(reference)]).returncode == 0
    differs = run(["bash", str(GPU_CHECK), "--compare", str(far), str(reference)])
    assert differs.returncode == 1 and "DIFFERS: x_mean" in differs.stdout


def test_gpu_check_dry_run_prints_its_plan_and_runs_the_cuda_tests(tmp_path):
    result = subprocess.run(
        ["bash", str(GPU_CHECK), "--dry"],
        capture_output=True,
        text=True,
        env={**os.environ, "GPU_CHECK_WORK": str(tmp_path)},
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    table = result.stdout[result.stdout.index("gpu_check on: none") :]
    steps = ("cuda-tests", "bench-maml", "bench-hessian", "bench-hessian-warm", "bench-throughput")
    for step in (*steps, "tiny-preset"):
        assert f"\n{step} " in table
    assert "skipped" in (tmp_path / "cuda-tests.log").read_text()
    assert "--walk-epochs 3" in (tmp_path / "bench-hessian-warm.log").read_text()
    assert "--seeds 5" in (tmp_path / "bench-throughput.log").read_text()


FAULTS_PROBE = """
import resource, sys, torch
from metalandscape.devices import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
def round_of_blocks():
    blocks = [torch.empty(2**18).fill_(1) for _ in range(64)]  # 64 blocks of 1 MiB, then freed
    del blocks
round_of_blocks()  # warm up
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    round_of_blocks()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")
def test_keeping_freed_memory_stops_the_page_faults_of_reallocation():
    """Rounds of 64 MiB allocated and freed: by default glibc returns part of it to the kernel
    and each round faults those pages in again (Debian 12: about 650 a round); kept, the memory
    is reused."""
    results = {}
    for mode in ("default", "keep"):
        done = subprocess.run(
            [sys.executable, "-c", FAULTS_PROBE, mode], capture_output=True, text=True, check=True
        )
        applied, faults = done.stdout.split()
        results[mode] = (applied, int(faults))
    assert results["keep"][0] == "True"
    assert results["keep"][1] * 5 <= results["default"][1]


def test_keeping_freed_memory_is_a_no_op_off_linux(monkeypatch):
    from metalandscape import devices

    monkeypatch.setattr(devices.sys, "platform", "darwin")
    assert devices.keep_freed_memory() is False
