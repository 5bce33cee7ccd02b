"""Reptile, ANIL and Meta-SGD as registered algorithms: config keys, checkpoints, the landscape
metrics' adaptation (asked of the algorithm, never its name), and refused metric pairings."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml

from metalandscape import algorithms
from metalandscape.algorithms import (
    ALGORITHMS,
    algorithm_names,
    anil,
    load_algorithm,
    metasgd,
    reptile,
)
from metalandscape.checkpoints import load_epoch_params
from metalandscape.config import ConfigError, resolve_run_config
from metalandscape.grid import GridError, build_grid
from metalandscape.metrics.evaluate import make_context
from metalandscape.models import HEAD_PREFIX
from metalandscape.training import train_run

REPO = Path(__file__).resolve().parents[1]
SINUSOID = {"dataset": "sinusoid", "seed": 2, "epochs": 2, "iterations_per_epoch": 4}


def test_new_algorithms_are_registered_meta_learners():
    for name in ("reptile", "anil", "metasgd"):
        assert ALGORITHMS[name].role == "meta-learner"
        assert name in algorithm_names("meta-learner")
        assert load_algorithm(name) is getattr(algorithms, name).ALGORITHM


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (
            "reptile_inner_optimizer",
            "rmsprop",
            "'reptile_inner_optimizer' must be one of sgd, adam",
        ),
        ("reptile_outer_step_size", 0, "'reptile_outer_step_size' must be a finite number > 0"),
        ("reptile_anneal", "yes", "'reptile_anneal' must be true or false"),
        ("anil_first_order", 1, "'anil_first_order' must be true or false"),
        ("metasgd_step_size_init", "normal", "'metasgd_step_size_init' must be one of uniform"),
        ("metasgd_step_size_range", [0.1, 0.01], "'metasgd_step_size_range' = \\[0.1, 0.01\\]"),
        ("metasgd_step_size_range", [-0.1, 0.1], "must have low ≥ 0"),
    ],
)
def test_bad_algorithm_keys_name_the_key(key, value, message):
    with pytest.raises(ConfigError, match=message):
        resolve_run_config({**SINUSOID, "algorithm": "reptile", key: value})


def test_unknown_algorithm_lists_the_registered_ones():
    with pytest.raises(
        ConfigError, match=r"unknown algorithm 'protonet'; registered: .*reptile, anil, metasgd"
    ):
        resolve_run_config({**SINUSOID, "algorithm": "protonet"})


def test_algorithm_settings_come_from_the_run_config():
    config = resolve_run_config(
        {
            **SINUSOID,
            "algorithm": "reptile",
            "reptile_outer_step_size": 0.5,
            "reptile_inner_optimizer": "adam",
        }
    )
    settings = reptile.ALGORITHM.settings(config)
    assert settings.anneal_iterations == 8 and settings.inner_optimizer == "adam"
    assert settings.outer_step_size_at(4) == 0.25
    fixed = resolve_run_config({**SINUSOID, "algorithm": "reptile", "reptile_anneal": False})
    assert reptile.ALGORITHM.settings(fixed).anneal_iterations is None
    assert anil.ALGORITHM.settings(
        resolve_run_config({**SINUSOID, "algorithm": "anil", "anil_first_order": True})
    ).first_order
    meta_sgd = metasgd.ALGORITHM.settings(
        resolve_run_config(
            {**SINUSOID, "algorithm": "metasgd", "metasgd_step_size_range": [0.01, 0.02]}
        )
    )
    assert meta_sgd.step_size_range == (0.01, 0.02) and meta_sgd.step_size_init == "uniform"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("family")
    return {
        name: train_run(
            resolve_run_config({**SINUSOID, "algorithm": name}),
            folder / f"{name}.h5",
            progress=False,
        )
        for name in ("reptile", "anil", "metasgd")
    }


def test_meta_sgd_checkpoints_hold_the_learned_step_sizes(runs):
    first, last = load_epoch_params(runs["metasgd"], 0), load_epoch_params(runs["metasgd"], 2)
    theta, alpha = metasgd.split_step_sizes(last)
    assert alpha.keys() == theta.keys() and len(alpha) > 0
    assert all(alpha[n].shape == theta[n].shape for n in theta)
    assert not torch.equal(alpha["head.weight"], metasgd.split_step_sizes(first)[1]["head.weight"])


@pytest.mark.parametrize("name", ["reptile", "anil", "metasgd"])
def test_metrics_adapt_with_the_algorithms_own_evaluation_adaptation(runs, name):
    """The context's θ̃ᵢ are the module's adapt_for_evaluation of each task, from the checkpoint."""
    config, context = make_context(runs[name], 2, evaluation_seed=5)
    saved = load_epoch_params(runs[name], 2)
    settings = load_algorithm(name).settings(config)  # type: ignore[attr-defined]
    module = getattr(algorithms, name)
    batch = context.tasks("test", 3)
    adapted = context.adapted("test", 3)
    for index in range(3):
        expected = module.adapt_for_evaluation(
            context.model,
            saved,
            batch.support_inputs[index],
            batch.support_labels[index],
            kind=context.kind,
            settings=settings,
        )
        assert expected.keys() == adapted[index].keys()
        for key in expected:
            torch.testing.assert_close(adapted[index][key], expected[key], rtol=1e-6, atol=1e-7)
    assert not any(key.startswith(metasgd.STEP_SIZE_PREFIX) for key in context.start_params)


def test_anil_displacements_live_in_the_head(runs):
    _, context = make_context(runs["anil"], 2)
    names = list(context.start_params)
    sizes = [p.numel() for p in context.start_params.values()]
    displacement = context.displacements("test", 4)
    offset = 0
    for name, size in zip(names, sizes, strict=True):
        block = displacement[:, offset : offset + size]
        assert (block.abs().sum() > 0) == name.startswith(HEAD_PREFIX), name
        offset += size


def grid_config(algorithms_: list[str], metrics: list[str]) -> dict:
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    experiment = {
        "dataset": "sinusoid",
        "shots": [5],
        "algorithms": algorithms_,
        "seeds": [0],
        "metrics": metrics,
        "overrides": {"epochs": 1, "iterations_per_epoch": 1},
    }
    return {**config, "experiments": [experiment], "figures": []}


def test_every_metric_is_supported_by_every_registered_algorithm():
    """No registered algorithm declares an unsupported metric today (see docs/extending.md)."""
    assert all(not spec.unsupported_metrics for spec in ALGORITHMS.values())
    build_grid(grid_config(list(ALGORITHMS), ["accuracy", "trajectory_coherence"]))


def test_an_unsupported_pairing_is_refused_at_config_time_in_one_line(monkeypatch):
    reason = "its inner loop never moves the body"
    refusing = dataclasses.replace(
        ALGORITHMS["anil"], unsupported_metrics=(("gradient_coherence", reason),)
    )
    monkeypatch.setitem(ALGORITHMS, "anil", refusing)
    with pytest.raises(GridError) as error:
        build_grid(grid_config(["maml", "anil"], ["accuracy", "gradient_coherence"]))
    message = str(error.value)
    assert "\n" not in message
    assert "'anil' cannot be measured with metric 'gradient_coherence'" in message
    assert reason in message
    build_grid(grid_config(["maml", "anil"], ["accuracy"]))


@pytest.mark.parametrize("name", ["fomaml_sgd", "Maml", "maml2", "reptile-x"])
def test_an_algorithm_name_that_cannot_be_a_run_id_field_is_refused(name):
    from metalandscape.algorithms import AlgorithmSpec

    with pytest.raises(ValueError, match=rf"algorithm name '{name}' must be lowercase letters"):
        AlgorithmSpec(name, "meta-learner", "X", "metalandscape.algorithms.maml:ALGORITHM")
