"""Cost of writing one epoch of a Conv-4 (64 filters) run, now and before the crash-safe layout.

Compared in the same run on the same parameters and Adam state (112,005 parameters, float32):

* ``now``: :class:`metalandscape.checkpoints.RunWriter` writes each epoch as its own file in
  ``<run>.h5.partial/`` (built in memory, temp name, fsync, rename), and ``finish()`` builds
  ``<run>.h5`` once;
* ``whole file``: what a design that rewrites the whole run file every epoch would pay (built the
  same way from the first *e* epochs);
* ``before``: the previous ``RunWriter`` (one growing HDF5 ``.partial`` updated in place, no
  fsync), read from git revision ``--before`` (default a1b15f7); skipped when git has no such
  revision.

Usage: ``python benchmarks/bench_checkpoint_write.py [--epochs 100] [--before REV]``. Times are
wall-clock milliseconds (median of the epochs in each band), sizes in bytes; run it on a quiet
machine and quote the load average it prints.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from metalandscape.checkpoints import RunWriter, partial_path
from metalandscape.models import Conv4

ROOT = Path(__file__).resolve().parent.parent
CONFIG = '{"bench": "conv4-64"}'


def conv4_state() -> tuple[dict[str, torch.Tensor], dict]:
    """Conv-4 (1×28×28, 5 outputs, 64 filters) parameters and a one-step Adam state."""
    torch.manual_seed(0)
    model = Conv4((1, 28, 28), 5, filters=64)
    params = {
        name: value.detach().clone().requires_grad_() for name, value in model.named_parameters()
    }
    optimizer = torch.optim.Adam(params.values(), lr=1e-3)
    for value in params.values():
        value.grad = torch.randn_like(value)
    optimizer.step()
    return {k: v.detach() for k, v in params.items()}, optimizer.state_dict()


def old_checkpoints(revision: str):
    """The ``checkpoints`` module of ``revision``, or None."""
    source = subprocess.run(
        ["git", "show", f"{revision}:src/metalandscape/checkpoints.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if source.returncode != 0:
        return None
    path = Path(tempfile.mkdtemp()) / "checkpoints_before.py"
    path.write_text(source.stdout)
    spec = importlib.util.spec_from_file_location("checkpoints_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def timed(call, *arguments) -> float:
    start = time.perf_counter()
    call(*arguments)
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--before", default="a1b15f7")
    args = parser.parse_args()
    params, optimizer_state = conv4_state()
    stats = {"train_loss": 1.0, "train_accuracy": 0.5}
    bands = [
        (1, 1),
        (2, 10),
        (args.epochs // 2 - 4, args.epochs // 2 + 5),
        (args.epochs - 9, args.epochs),
    ]
    work = Path(tempfile.mkdtemp(prefix="bench-ckpt-"))
    try:
        now_ms, now_bytes = {}, {}
        writer = RunWriter(work / "now.h5", CONFIG, args.epochs)
        for epoch in range(args.epochs + 1):
            now_ms[epoch] = timed(writer.write_epoch, epoch, params, optimizer_state, epoch, stats)
            now_bytes[epoch] = (
                (partial_path(work / "now.h5") / f"epoch_{epoch:04d}.h5").stat().st_size
            )
        whole = {}
        for _, last in bands:
            copy = work / f"whole{last}.h5"
            shutil.copytree(partial_path(work / "now.h5"), partial_path(copy))
            for file in partial_path(copy).glob("epoch_*.h5"):
                if int(file.stem[6:]) > last:
                    file.unlink()
            (partial_path(copy) / "lock").unlink()
            copy_writer = RunWriter(copy, CONFIG, args.epochs)
            whole[last] = (timed(copy_writer.finish), copy.stat().st_size)
        writer.close()
        finish_ms = whole[args.epochs][0]

        before_ms, before_bytes = {}, {}
        old = old_checkpoints(args.before)
        if old is not None:
            old_writer = old.RunWriter(work / "before.h5", CONFIG, args.epochs)
            size = old_writer.path.stat().st_size
            for epoch in range(args.epochs + 1):
                before_ms[epoch] = timed(
                    old_writer.write_epoch, epoch, params, optimizer_state, epoch, stats
                )
                grown = old_writer.path.stat().st_size
                before_bytes[epoch], size = grown - size, grown
            before_finish = timed(old_writer.finish)

        print(
            f"Conv-4, 64 filters, {sum(p.numel() for p in params.values()):,} parameters; "
            f"{args.epochs} epochs; load average {os.getloadavg()[0]:.2f}; python {sys.version.split()[0]}"
        )
        print(
            f"{'epochs':>10} | {'now ms':>7} {'now bytes':>10} | {'whole file ms':>13} {'bytes':>10} | "
            f"{'before ms':>9} {'bytes added':>11}"
        )
        for first, last in bands:
            epochs = range(first, last + 1)
            row = f"{first:>4}..{last:<4} | {statistics.median(now_ms[e] for e in epochs):7.1f} "
            row += f"{statistics.median(now_bytes[e] for e in epochs):10,.0f} | "
            row += f"{whole[last][0]:13.1f} {whole[last][1]:10,} | "
            if before_ms:
                row += f"{statistics.median(before_ms[e] for e in epochs):9.1f} "
                row += f"{statistics.median(before_bytes[e] for e in epochs):11,.0f}"
            else:
                row += "   (no git revision)"
            print(row)
        total_now = sum(now_ms.values()) + finish_ms
        print(
            f"total over the run: now {total_now / 1000:.2f} s (finish {finish_ms:.0f} ms)", end=""
        )
        if before_ms:
            print(
                f"; before {(sum(before_ms.values()) + before_finish) / 1000:.2f} s "
                f"(finish {before_finish:.0f} ms)"
            )
        else:
            print()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
