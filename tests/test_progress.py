"""What a user sees while it runs: the training bar and epoch lines, measured values per epoch."""

from __future__ import annotations

import logging
import re

import numpy as np
import xarray as xr

from metalandscape.cli import main
from metalandscape.config import resolve_run_config
from metalandscape.metrics.report import epoch_lines
from metalandscape.training import TrainingProgress, progress_fields


def test_regression_shows_the_mse_once_and_classification_loss_and_accuracy() -> None:
    assert progress_fields("regression", 0.5, 0.5) == {"mse": "0.5000"}
    assert progress_fields("regression", 0.7, 0.5) == {"loss": "0.7000", "mse": "0.5000"}
    assert progress_fields("classification", 1.2, 0.25) == {"loss": "1.2000", "acc": "0.2500"}


def test_one_bar_over_every_iteration_of_the_run_resumed_where_it_stopped() -> None:
    config = resolve_run_config(
        {"dataset": "sinusoid", "algorithm": "maml", "epochs": 4, "iterations_per_epoch": 5}
    )
    schedule = config.checkpoint_iterations()
    progress = TrainingProgress(config, "regression", schedule, start_epoch=3, show_bar=False)
    assert (progress.bar.total, progress.bar.n) == (20, 10)
    for _ in range(5):
        progress.step(0.25, 0.25)
    line = progress.epoch_line(3, {"train_loss": 0.25, "train_mse": 0.25})
    assert re.fullmatch(
        r"epoch 3/4  iteration 15/20  mse 0\.2500  elapsed \d\d:\d\d  ETA \d\d:\d\d", line
    )
    progress.close()


def test_quiet_training_logs_one_line_per_epoch(tmp_path, caplog, capsys) -> None:
    caplog.set_level(logging.INFO)
    settings = ["dataset=sinusoid", "algorithm=maml", "epochs=3", "iterations_per_epoch=2"]
    settings += ["meta_batch_size=2"]
    arguments = [text for item in settings for text in ("--set", item)]
    assert main(["train", *arguments, "--out", str(tmp_path / "r.h5"), "--quiet"]) == 0
    epochs = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/3", "2/3", "3/3"]
    assert all(" ETA " in line and " mse " in line and " loss " not in line for line in epochs)
    assert "it/s" not in capsys.readouterr().err  # no bar under --quiet


def _metric(name: str, epochs: list[int], mean: list[float], ci: list[float]) -> xr.Dataset:
    lead = (1,) * 6
    dims = ("dataset", "variant", "way", "shot", "algorithm", "seed", "epoch")
    return xr.Dataset(
        {
            f"{name}_mean": (dims, np.reshape(mean, (*lead, len(epochs)))),
            f"{name}_ci95": (dims, np.reshape(ci, (*lead, len(epochs)))),
            name: ((*dims, "task"), np.zeros((*lead, len(epochs), 3))),
        },
        coords={"epoch": epochs},
    )


def test_measured_values_are_printed_per_epoch_with_their_interval() -> None:
    results = {
        "accuracy": _metric("test_target_accuracy", [0, 3], [0.5, 0.713], [0.02, 0.012]),
        "hessian": _metric("hessian_top_eigenvalue", [0, 3], [9.5, 7.88], [1.0, 0.5]),
    }
    assert epoch_lines(results) == [
        "epoch 0  test_target_accuracy 0.5 ±0.02  hessian_top_eigenvalue 9.5 ±1",
        "epoch 3  test_target_accuracy 0.713 ±0.012  hessian_top_eigenvalue 7.88 ±0.5",
    ]
