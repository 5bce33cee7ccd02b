"""Checkpoint schedules in meta-iterations: resolution, stored iterations, exact resume."""

from __future__ import annotations

import pytest
import torch

from metalandscape.checkpoints import load_epoch_params, partial_path, read_run_info
from metalandscape.config import ConfigError, checkpoint_schedule, resolve_run_config
from metalandscape.metrics.base import make_metric
from metalandscape.metrics.evaluate import evaluate
from metalandscape.training import train_run


def test_log_spaced_then_regular_schedule():
    schedule = {"log_spaced_until": 100, "points": 5, "then_every": 50, "until": 260}
    # geomspace(1, 100, 5) = 1, 3.16, 10, 31.6, 100; then 150, 200, 250 and the end, 260.
    assert checkpoint_schedule(schedule) == (0, 1, 3, 10, 32, 100, 150, 200, 250, 260)
    assert checkpoint_schedule([5, 10, 40]) == (0, 5, 10, 40)
    assert checkpoint_schedule([0, 7]) == (0, 7)


@pytest.mark.parametrize(
    "value",
    [
        [3, 3],
        [5, 2],
        [],
        {"points": 3},
        {"log_spaced_until": 10, "points": 2, "then_every": 0, "until": 20},
        "often",
    ],
)
def test_bad_schedules_name_the_key(value):
    with pytest.raises(ConfigError, match="config key 'checkpoints'"):
        resolve_run_config({"dataset": "sinusoid", "algorithm": "maml", "checkpoints": value})


def test_default_schedule_is_one_checkpoint_per_epoch():
    config = resolve_run_config(
        {"dataset": "sinusoid", "algorithm": "maml", "epochs": 3, "iterations_per_epoch": 7}
    )
    assert config.checkpoint_iterations() == (0, 7, 14, 21)
    assert "checkpoints" not in config.to_dict()


SCHEDULED = {
    "dataset": "sinusoid",
    "algorithm": "maml",
    "seed": 2,
    "meta_batch_size": 4,
    "checkpoints": [1, 2, 4, 8, 13],
}


def test_iterations_are_stored_with_each_checkpoint_and_in_metric_files(tmp_path):
    config = resolve_run_config(SCHEDULED)
    assert config.epochs == 5
    path = train_run(config, tmp_path / "run.h5", progress=False)
    info = read_run_info(path)
    assert info.iterations == {0: 0, 1: 1, 2: 2, 3: 4, 4: 8, 5: 13}
    assert "iteration" not in info.statistics[3]
    results = evaluate(path, [0, 3, 5], [make_metric("accuracy", {"tasks": 3})])
    assert results["accuracy"]["iteration"].values.tolist() == [0, 4, 13]


def test_resume_with_a_schedule_is_bit_identical(tmp_path):
    config = resolve_run_config(SCHEDULED)
    whole = train_run(config, tmp_path / "whole.h5", progress=False)
    part = train_run(config, tmp_path / "split.h5", progress=False, stop_after_epoch=3)
    assert part == partial_path(tmp_path / "split.h5")
    assert read_run_info(part).iterations == {0: 0, 1: 1, 2: 2, 3: 4}
    resumed = train_run(config, tmp_path / "split.h5", progress=False)
    assert read_run_info(resumed).iterations == read_run_info(whole).iterations
    for epoch in range(6):
        first, second = load_epoch_params(whole, epoch), load_epoch_params(resumed, epoch)
        assert all(torch.equal(first[k], second[k]) for k in first)


def test_a_schedule_equal_to_epochs_trains_the_same_parameters(tmp_path):
    by_epoch = resolve_run_config(
        {**SCHEDULED, "checkpoints": None, "epochs": 3, "iterations_per_epoch": 4}
    )
    by_schedule = resolve_run_config({**SCHEDULED, "checkpoints": [4, 8, 12]})
    first = train_run(by_epoch, tmp_path / "a.h5", progress=False)
    second = train_run(by_schedule, tmp_path / "b.h5", progress=False)
    for epoch in range(4):
        a, b = load_epoch_params(first, epoch), load_epoch_params(second, epoch)
        assert all(torch.equal(a[k], b[k]) for k in a)
