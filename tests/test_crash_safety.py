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


def sinusoid_config(**overrides):
    from metalandscape.config import resolve_run_config

    base = {"dataset": "sinusoid", "algorithm": "maml", "seed": 3, "epochs": 3}
    return resolve_run_config({**base, "iterations_per_epoch": 3, **overrides})


def damage_zero(path: Path, dataset: str) -> None:
    with h5py.File(path, "r+") as handle:
        handle[dataset][...] = 0


def damage_flip_bit(path: Path, dataset: str) -> None:
    with h5py.File(path, "r") as handle:
        offset = handle[dataset].id.get_offset()
    with open(path, "r+b") as file:
        file.seek(offset + 3)
        byte = file.read(1)[0]
        file.seek(offset + 3)
        file.write(bytes([byte ^ 0x10]))


def damage_delete(path: Path, dataset: str) -> None:
    with h5py.File(path, "r+") as handle:
        del handle[dataset]


DAMAGE = {"zeroed": damage_zero, "bit flip": damage_flip_bit, "deleted": damage_delete}


@pytest.mark.parametrize("kind", DAMAGE)
def test_damaged_newest_epoch_of_a_partial_is_retrained(tmp_path, kind, caplog):
    from metalandscape.training import train_run

    config = sinusoid_config()
    expected = run_contents(train_run(config, tmp_path / "whole.h5", progress=False))
    out = tmp_path / "run.h5"
    train_run(config, out, progress=False, stop_after_epoch=2)
    damaged = partial_path(out) / "epoch_0002.h5"
    DAMAGE[kind](damaged, "params/head/weight")
    with pytest.raises(CheckpointError, match=r"epoch_0002\.h5: epoch 2 is damaged"):
        load_epoch_params(partial_path(out), 2)
    train_run(config, out, progress=False)
    assert f"{damaged}: epoch 2 is damaged" in caplog.text
    assert run_contents(out) == expected


@pytest.mark.parametrize("kind", DAMAGE)
def test_damaged_epoch_of_a_finished_run_is_named(tmp_path, kind):
    from metalandscape.training import train_run

    out = train_run(sinusoid_config(), tmp_path / "run.h5", progress=False)
    DAMAGE[kind](out, "epoch_0001/params/body/0/weight")
    with pytest.raises(CheckpointError, match=rf"{out}: epoch 1 is damaged"):
        load_epoch_params(out, 1)
    assert load_epoch_params(out, 2).keys() == load_epoch_params(out, 0).keys()


def one_line_error(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_second_train_on_the_same_run_is_reported_in_use(tmp_path, capsys):
    from metalandscape.training import train_run

    out = tmp_path / "run.h5"
    config = sinusoid_config(**{"seed": 7, "epochs": 2, "iterations_per_epoch": 2})
    train_run(config, out, progress=False, stop_after_epoch=1)
    holder = RunWriter(out, config.to_json(), config.epochs)  # as a running train holds it
    try:
        assert train(out) == 2
        line = one_line_error(capsys)
        assert "in use" in line and str(out) in line and "delete" not in line
    finally:
        holder.close()
    assert train(out) == 0 and read_run_info(out).finished


def fake_fontglot(path: Path, classes: int) -> Path:
    from metalandscape.data.fontglot import GENERATOR_VERSION, _images_sha256

    images = np.random.default_rng(0).integers(0, 2, (classes, 20, 28, 28), dtype=np.uint8)
    np.savez(
        path,
        images=images,
        code_points=np.arange(65, 65 + classes),
        alphabet_ids=np.zeros(classes, dtype=np.int64),
        alphabet_names=np.array(["Basic Latin"]),
        generator_version=np.array(GENERATOR_VERSION),
        seed=np.array(0),
        library_versions=np.array("{}"),
        sha256=np.array(_images_sha256(images)),
    )
    return path


@pytest.mark.parametrize(
    ("case", "settings", "message"),
    [
        ("way > classes", ["--set", "n_way=20"], "fewer than n_way=20"),
        ("zero-byte npz", [], "unreadable or corrupt"),
        ("threads 0", ["--threads", "0"], "argument --threads: must be an integer >= 1"),
        ("threads -3", ["--threads", "-3"], "argument --threads: must be an integer >= 1"),
    ],
)
def test_bad_train_inputs_fail_before_any_run_file(tmp_path, capsys, case, settings, message):
    data = tmp_path / "fontglot.npz"
    if case == "zero-byte npz":
        data.write_bytes(b"")
    else:
        fake_fontglot(data, classes=40)
    out = tmp_path / "runs" / "run.h5"
    common = ["train", "--set", "dataset=fontglot", "--set", "algorithm=maml"]
    common += ["--set", f"data_path={data}"]
    common += ["--set", "n_way=2", "--set", "k_shot=1", "--set", "epochs=1"]
    common += ["--set", "iterations_per_epoch=1", "--set", "filters=4", "--quiet"]
    try:  # argument errors leave through argparse's SystemExit(2), config errors return 2
        code = main([*common, *settings, "--out", str(out)])
    except SystemExit as exit_:
        code = exit_.code
    assert code == 2
    assert message in one_line_error(capsys)
    assert not out.exists() and not partial_path(out).exists()
    fake_fontglot(data, classes=40)
    assert main([*common, "--out", str(out)]) == 0  # the corrected rerun is not blocked


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 160 KiB tmpfs (root only); skipped where it cannot be mounted."""
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_disk_full_is_one_line_and_the_rerun_resumes(tmp_path, small_tmpfs, capsys):
    reference = tmp_path / "reference.h5"
    assert main(["train", *TINY, "--set", "epochs=3", "--out", str(reference)]) == 0
    assert read_run_info(reference).epochs == (0, 1, 2, 3)
    capsys.readouterr()
    out = small_tmpfs / "run.h5"
    command = ["train", *TINY, "--set", "epochs=3", "--out", str(out)]
    assert main(command) == 2
    line = one_line_error(capsys)
    assert "no space left" in line and "rerun" in line
    assert not out.exists()
    written = read_run_info(partial_path(out)).epochs
    assert written and written == tuple(range(len(written)))
    assert not [p for p in partial_path(out).iterdir() if p.name.endswith(".tmp")]
    subprocess.run(["mount", "-o", "remount,size=2m", str(small_tmpfs)], check=True)
    assert main(command) == 0
    assert run_contents(out) == run_contents(reference)


def test_read_only_output_folder_is_one_line(small_tmpfs, capsys):
    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    out = small_tmpfs / "runs" / "run.h5"
    assert train(out) == 2
    line = one_line_error(capsys)
    assert "read-only file system" in line and str(small_tmpfs) in line
    assert not out.exists() and not partial_path(out).exists()


def test_a_metrics_job_killed_at_its_write_leaves_no_temporary_after_the_rerun(tmp_path):
    """SIGKILL at the rename that puts a metric file in place leaves its temporary file;
    the rerun writes the file and removes what the killed job left."""
    if shutil.which("strace") is None:
        if os.environ.get("CI"):
            pytest.fail("strace is required in CI (apt-get install strace)")
        pytest.skip("strace not installed")
    run = tmp_path / "run.h5"
    assert train(run) == 0
    out = tmp_path / "metrics"
    command = [
        "metalandscape",
        "metrics",
        "--checkpoint",
        str(run),
        "--metric",
        "support_loss",
        "--epoch",
        "0",
        "--epoch",
        "2",
        "--settings-json",
        '{"support_loss": {"tasks": 3}}',
        "--out-dir",
        str(out),
        "--quiet",
    ]
    renames = "rename,renameat,renameat2"
    killed = subprocess.run(
        [
            "strace",
            "-f",
            "-qq",
            "-o",
            "/dev/null",
            "-e",
            f"trace={renames}",
            "-e",
            f"inject={renames}:signal=SIGKILL:when=1",
            *command,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode != 0
    left = [p.name for p in out.iterdir()]
    assert left and all(name.startswith(".support_loss.nc.") for name in left), left
    assert subprocess.run(command, capture_output=True, timeout=300).returncode == 0
    assert sorted(p.name for p in out.iterdir()) == ["support_loss.nc"]
