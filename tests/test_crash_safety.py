"""Run files under faults: SIGKILL at every write syscall, damaged epochs, locked, full or
read-only output folders, and bad inputs that must fail before any run file appears."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from metalandscape.checkpoints import (
    CheckpointError,
    RunWriter,
    load_epoch_params,
    partial_path,
    read_run_info,
)
from metalandscape.cli import main

TINY = ["--set", "dataset=sinusoid", "--set", "algorithm=maml", "--set", "seed=7"]
TINY += ["--set", "epochs=2", "--set", "iterations_per_epoch=2", "--quiet"]
# Every syscall of the write path that changes the file system (openat only opens what the
# next pwrite64 fills, so a kill there equals a kill at that pwrite64 or at the syscall before).
KILL_SYSCALLS = ("mkdir", "pwrite64", "fsync", "rename", "unlinkat", "rmdir")


def train(out: Path, *extra: str) -> int:
    return main(["train", *TINY, *extra, "--out", str(out)])


def run_contents(path: Path) -> dict:
    """Everything a finished run file holds that must match bit for bit."""
    info = read_run_info(path)
    assert info.finished
    params = {epoch: load_epoch_params(path, epoch) for epoch in info.epochs}
    return {
        "config": info.config,
        "statistics": info.statistics,
        "params": {e: {k: v.numpy().tobytes() for k, v in p.items()} for e, p in params.items()},
    }


def traced_train(out: Path, strace_options: list[str]) -> int:
    """Train in a forked child (torch already imported) with strace attached; its wait status."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(write_end)
        os.read(read_end, 1)
        try:
            code = train(out)
        except BaseException:
            code = 99
        os._exit(code)
    os.close(read_end)
    tracer = subprocess.Popen(
        ["strace", "-p", str(pid), *strace_options], stderr=subprocess.PIPE, text=True
    )
    assert tracer.stderr is not None
    attached = tracer.stderr.readline()
    if "attached" not in attached:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail(f"strace could not attach: {attached}{tracer.communicate()[1]}")
    os.write(write_end, b"go")
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    tracer.communicate(timeout=60)
    return status


def epochs_written_before(trace: list[str], syscall: str, occurrence: int) -> int:
    """How many epoch files were renamed into place before the given syscall occurrence."""
    seen = written = 0
    for line in trace:
        name = line.split("(", 1)[0]
        if name == syscall:
            seen += 1
            if seen == occurrence:
                return written
        if name == "rename" and re.search(r'epoch_\d+\.h5"\) = 0', line):
            written += 1
    raise AssertionError(f"no {syscall} #{occurrence} in the trace")


@pytest.fixture
def strace_available():
    if shutil.which("strace") is None:
        if os.environ.get("CI"):
            pytest.fail("strace is missing; .ci/run installs it (apt-get install strace)")
        pytest.skip("strace is not installed (apt-get install strace)")


@pytest.mark.slow
def test_sigkill_at_every_write_syscall_resumes_bit_identically(tmp_path, strace_available):
    reference = tmp_path / "reference.h5"
    assert train(reference) == 0  # also imports everything training needs before forking
    expected = run_contents(reference)

    log = tmp_path / "trace.log"
    status = traced_train(
        tmp_path / "traced.h5", ["-e", f"trace={','.join(KILL_SYSCALLS)}", "-o", str(log)]
    )
    assert os.waitstatus_to_exitcode(status) == 0
    trace = [line for line in log.read_text().splitlines() if "(" in line]
    counts = Counter(line.split("(", 1)[0] for line in trace)
    assert counts["pwrite64"] >= 5 and counts["rename"] >= 5, counts  # header, 3 epochs, final

    table = {}
    for syscall in KILL_SYSCALLS:
        resumed = 0
        for occurrence in range(1, counts[syscall] + 1):
            out = tmp_path / f"{syscall}-{occurrence}" / "run.h5"
            status = traced_train(
                out, ["-e", f"inject={syscall}:signal=KILL:when={occurrence}", "-o", os.devnull]
            )
            assert os.waitstatus_to_exitcode(status) == -9, (syscall, occurrence)
            kept = epochs_written_before(trace, syscall, occurrence)
            if not out.exists():
                epochs = read_run_info(partial_path(out)).epochs if kept else ()
                assert len(epochs) >= kept, (syscall, occurrence, epochs)
            assert train(out) == 0, (syscall, occurrence)
            assert run_contents(out) == expected, (syscall, occurrence)
            leftovers = sorted(p.name for p in out.parent.iterdir() if p.name != "run.h5")
            assert leftovers == [], (syscall, occurrence, leftovers)
            resumed += 1
        table[syscall] = (counts[syscall], resumed)
    print("syscall, points tried, resumed bit-identical:", table)
    assert all(tried == resumed for tried, resumed in table.values())
