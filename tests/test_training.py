"""Training runs, HDF5 checkpoints, exact resume and the train CLI."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from metalandscape.algorithms import algorithm_names
from metalandscape.checkpoints import (
    CheckpointError,
    load_epoch_params,
    partial_path,
    read_run_info,
)
from metalandscape.cli import main
from metalandscape.config import ConfigError, resolve_run_config
from metalandscape.training import TrainingDiverged, train_run

SINUSOID = {"dataset": "sinusoid", "seed": 3, "epochs": 4, "iterations_per_epoch": 10}


def sinusoid_config(algorithm: str = "maml", **overrides):
    return resolve_run_config({**SINUSOID, "algorithm": algorithm, **overrides})


def all_params_equal(first: Path, second: Path, epoch: int) -> bool:
    a, b = load_epoch_params(first, epoch), load_epoch_params(second, epoch)
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_run_file_layout(tmp_path):
    config = sinusoid_config()
    path = train_run(config, tmp_path / "run.h5", progress=False)
    assert path == tmp_path / "run.h5" and not partial_path(path).exists()
    info = read_run_info(path)
    assert info.finished and info.epochs == (0, 1, 2, 3, 4)
    assert info.config == config.to_dict()
    assert set(info.statistics[4]) == {"train_loss", "train_mse"}
    with h5py.File(path) as handle:
        assert handle.attrs["torch_version"] == torch.__version__
        assert "git_commit" in handle.attrs and "package_version" in handle.attrs
        assert bool(handle["epoch_0002"].attrs["complete"])
    params = load_epoch_params(path, 0)
    assert params["head.weight"].shape == (1, 40)
    assert not torch.equal(params["head.weight"], load_epoch_params(path, 4)["head.weight"])
    with pytest.raises(CheckpointError, match="no complete epoch 9"):
        load_epoch_params(path, 9)


@pytest.mark.parametrize("algorithm", algorithm_names())
def test_resume_is_bit_identical(tmp_path, algorithm):
    config = sinusoid_config(algorithm, regularizer_gamma=0.01)
    whole = train_run(config, tmp_path / "whole.h5", progress=False)
    first_part = train_run(config, tmp_path / "split.h5", progress=False, stop_after_epoch=2)
    assert first_part == partial_path(tmp_path / "split.h5")
    assert not (tmp_path / "split.h5").exists()
    assert read_run_info(first_part).epochs == (0, 1, 2)
    resumed = train_run(config, tmp_path / "split.h5", progress=False)
    for epoch in range(5):
        assert all_params_equal(whole, resumed, epoch)


def test_resume_refuses_a_different_config(tmp_path):
    train_run(sinusoid_config(), tmp_path / "run.h5", progress=False, stop_after_epoch=1)
    with pytest.raises(CheckpointError, match="another config"):
        train_run(sinusoid_config(seed=4), tmp_path / "run.h5", progress=False)


def test_finished_run_is_not_retrained(tmp_path):
    path = train_run(sinusoid_config(), tmp_path / "run.h5", progress=False)
    stamp = path.stat().st_mtime_ns
    train_run(sinusoid_config(), path, progress=False)
    assert path.stat().st_mtime_ns == stamp


def test_killed_training_resumes_exactly(tmp_path):
    """SIGKILL mid-run loses at most the current epoch; rerunning gives the same bytes."""
    settings = [
        "--set",
        "dataset=sinusoid",
        "--set",
        "algorithm=maml",
        "--set",
        "seed=5",
        "--set",
        "epochs=12",
        "--set",
        "iterations_per_epoch=20",
    ]
    command = [sys.executable, "-m", "metalandscape.cli", "train", *settings, "--quiet"]
    killed = tmp_path / "killed.h5"
    process = subprocess.Popen([*command, "--out", str(killed)], stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    deadline = time.monotonic() + 120
    for line in process.stderr:
        if "epoch 3/12" in line or time.monotonic() > deadline:
            break
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not killed.exists() and partial_path(killed).exists()
    completed = read_run_info(partial_path(killed)).epochs
    assert 3 <= max(completed) < 12
    subprocess.run([*command, "--out", str(killed)], check=True, capture_output=True)
    whole = tmp_path / "whole.h5"
    subprocess.run([*command, "--out", str(whole)], check=True, capture_output=True)
    assert all_params_equal(killed, whole, 12)


def test_diverging_training_names_epoch_and_keeps_completed_epochs(tmp_path):
    config = sinusoid_config("maml", inner_step_size=1e30, epochs=2)
    with pytest.raises(TrainingDiverged, match="epoch 1, iteration 0"):
        train_run(config, tmp_path / "run.h5", progress=False)
    assert read_run_info(partial_path(tmp_path / "run.h5")).epochs == (0,)


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="'inner_step_size'"):
        resolve_run_config({"dataset": "sinusoid", "algorithm": "maml", "inner_step_size": -1})
    with pytest.raises(ConfigError, match="bogus"):
        resolve_run_config({"dataset": "sinusoid", "algorithm": "maml", "bogus": 1})
    with pytest.raises(ConfigError, match="'train_phase'"):
        resolve_run_config({"dataset": "sinusoid", "algorithm": "maml", "train_phase": [2, 1]})
    with pytest.raises(ConfigError, match="'n_way'"):
        resolve_run_config({"dataset": "sinusoid", "algorithm": "maml", "n_way": 5})
    with pytest.raises(ConfigError, match="data_path"):
        resolve_run_config({"dataset": "omniglot", "algorithm": "maml"})


def test_paper_defaults_depend_on_dataset_and_shot():
    one = resolve_run_config({"dataset": "fontglot", "algorithm": "maml", "k_shot": 1})
    five = resolve_run_config({"dataset": "fontglot", "algorithm": "maml", "k_shot": 5})
    mini = resolve_run_config(
        {"dataset": "miniimagenet", "algorithm": "maml", "data_path": "x", "k_shot": 1}
    )
    sine = resolve_run_config({"dataset": "sinusoid", "algorithm": "maml"})
    assert (one.inner_steps, one.inner_step_size, one.meta_batch_size) == (5, 0.1, 16)
    assert five.meta_batch_size == 8 and five.query == 5
    assert (mini.inner_step_size, mini.meta_batch_size, mini.query, mini.filters) == (
        0.01,
        4,
        15,
        32,
    )
    assert (sine.inner_steps, sine.inner_step_size, sine.meta_batch_size, sine.k_shot) == (
        1,
        0.01,
        25,
        10,
    )


def test_cli_reports_user_errors_in_one_line(tmp_path, capsys):
    code = main(["train", "--set", "dataset=sinusoid", "--set", "algorithm=bogus", "--out", "x.h5"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "algorithm" in err[0]
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(CheckpointError, match="not a readable HDF5"):
        read_run_info(bad)


def test_cli_train_writes_a_run(tmp_path, caplog):
    config = tmp_path / "run.yaml"
    config.write_text(json.dumps({**SINUSOID, "algorithm": "fomaml", "epochs": 1}))
    with caplog.at_level("INFO", logger="metalandscape"):
        assert (
            main(["train", "--config", str(config), "--out", str(tmp_path / "r.h5"), "--quiet"])
            == 0
        )
    assert read_run_info(tmp_path / "r.h5").epochs == (0, 1)
    # The exact CPU time of the job, for benchmarks/study_report.py (Snakemake samples it).
    used = re.search(r"resources: cpu ([0-9.]+) s \(user", caplog.text)
    assert used and float(used.group(1)) > 0


@pytest.fixture(scope="module")
def small_fontglot(tmp_path_factory):
    from metalandscape.data.fontglot import build_fontglot

    path = tmp_path_factory.mktemp("fontglot") / "fontglot.npz"
    return build_fontglot(path, classes=120, workers=1, progress=False)


def test_short_fontglot_maml_run_beats_chance(tmp_path, small_fontglot):
    from metalandscape.algorithms.maml import meta_gradient
    from metalandscape.data.tasks import TaskSampler
    from metalandscape.experiment import make_model, make_task_source, meta_settings

    config = resolve_run_config(
        {
            "dataset": "fontglot",
            "data_path": str(small_fontglot),
            "algorithm": "maml",
            "n_way": 5,
            "k_shot": 1,
            "inner_steps": 1,
            "meta_batch_size": 4,
            "epochs": 2,
            "iterations_per_epoch": 40,
            "filters": 32,
        }
    )
    path = train_run(config, tmp_path / "fontglot.h5", progress=False)
    source = make_task_source(config)
    model = make_model(config, source)
    tasks = TaskSampler(source, seed=99).batch("test", range(100))
    accuracy = [
        meta_gradient(
            model, load_epoch_params(path, epoch), tasks, "classification", meta_settings(config)
        ).target_score
        for epoch in (0, 2)
    ]
    # Chance is 0.2; the trained initialisation must do clearly better, and better than θ0.
    assert accuracy[1] > 0.35 and accuracy[1] > accuracy[0], accuracy
    assert np.isfinite(read_run_info(path).statistics[2]["train_loss"])
    assert os.path.getsize(path) > 0
