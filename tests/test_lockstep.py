"""Seeds in lockstep: the same meta-gradients, steps, run files and resumes as one by one."""

from __future__ import annotations

import pytest
import torch

from metalandscape.algorithms.maml import MetaSettings, meta_gradient
from metalandscape.checkpoints import load_epoch_params, partial_path, read_run_info
from metalandscape.cli import main
from metalandscape.config import resolve_run_config
from metalandscape.data.tasks import TaskBatch
from metalandscape.functional import flatten, parameters_of
from metalandscape.lockstep import lockstep_meta_gradients, lockstep_refusal
from metalandscape.models import Conv4, SinusoidMLP
from metalandscape.training import train_run, train_runs_in_lockstep

KIND = "classification"


def conv_batches(seeds: int, tasks: int, dtype=torch.float64) -> list[TaskBatch]:
    generator = torch.Generator().manual_seed(7)
    labels = torch.arange(3).repeat_interleave(2).repeat(tasks, 1)
    return [
        TaskBatch(
            torch.randn(tasks, 6, 1, 8, 8, dtype=dtype, generator=generator),
            labels,
            torch.randn(tasks, 6, 1, 8, 8, dtype=dtype, generator=generator),
            labels,
        )
        for _ in range(seeds)
    ]


def conv_params(seeds: int, dtype=torch.float64) -> tuple[Conv4, list[dict]]:
    params = []
    for seed in range(seeds):
        torch.manual_seed(seed)
        params.append(parameters_of(Conv4((1, 8, 8), 3, filters=4).to(dtype)))
    return Conv4((1, 8, 8), 3, filters=4).to(dtype), params


@pytest.mark.parametrize("second_order", [True, False])
@pytest.mark.parametrize(("steps", "chunk"), [(1, 1), (2, 2), (2, None)])
def test_each_seeds_meta_gradient_equals_its_solo_one_in_float64(second_order, steps, chunk):
    """Conv-4 with BatchNorm, three seeds of three tasks: MAML and First-Order MAML."""
    model, params = conv_params(3)
    batches = conv_batches(3, 3)
    settings = MetaSettings(steps, 0.3, task_chunk_size=chunk, second_order=second_order)
    together = lockstep_meta_gradients(model, params, batches, KIND, settings)
    for seed in range(3):
        alone = meta_gradient(model, params[seed], batches[seed], KIND, settings)
        got, want = flatten(together[seed].gradients), flatten(alone.gradients)
        assert torch.allclose(got, want, rtol=1e-12, atol=1e-14), (got - want).abs().max()
        assert together[seed].target_loss == pytest.approx(alone.target_loss, rel=1e-12)
        assert together[seed].target_score == pytest.approx(alone.target_score, rel=1e-12)


def test_float32_meta_gradients_agree_to_one_part_in_1e5():
    model, params = conv_params(4, torch.float32)
    batches = conv_batches(4, 4, torch.float32)
    settings = MetaSettings(3, 0.2, task_chunk_size=4)
    together = lockstep_meta_gradients(model, params, batches, KIND, settings)
    for seed in range(4):
        alone = flatten(meta_gradient(model, params[seed], batches[seed], KIND, settings).gradients)
        error = (flatten(together[seed].gradients) - alone).norm() / alone.norm()
        assert error <= 1e-5


def test_regression_seeds_in_lockstep():
    torch.manual_seed(0)
    model = SinusoidMLP().double()
    params = []
    for seed in range(2):
        torch.manual_seed(seed)
        params.append(parameters_of(SinusoidMLP().double()))
    generator = torch.Generator().manual_seed(3)
    batches = [
        TaskBatch(
            *(torch.randn(5, 10, 1, dtype=torch.float64, generator=generator) for _ in range(4))
        )
        for _ in range(2)
    ]
    settings = MetaSettings(2, 0.01, task_chunk_size=None)
    together = lockstep_meta_gradients(model, params, batches, "regression", settings)
    for seed in range(2):
        alone = meta_gradient(model, params[seed], batches[seed], "regression", settings)
        assert torch.allclose(
            flatten(together[seed].gradients), flatten(alone.gradients), rtol=1e-12, atol=1e-15
        )


def test_only_runs_that_differ_by_seed_in_a_covered_algorithm_go_in_lockstep():
    def config(**changes):
        return resolve_run_config({"dataset": "sinusoid", "algorithm": "maml", **changes})

    assert lockstep_refusal([config(seed=0), config(seed=1)]) is None
    assert (
        lockstep_refusal([config(seed=0, algorithm="fomaml"), config(seed=2, algorithm="fomaml")])
        is None
    )
    assert "at least two" in lockstep_refusal([config(seed=0)])
    assert "distinct seeds" in lockstep_refusal([config(seed=0), config(seed=0)])
    assert "inner_step_size" in lockstep_refusal(
        [config(seed=0), config(seed=1, inner_step_size=0.1)]
    )
    for algorithm in ("regmaml", "reptile", "finetune", "metasgd", "anil"):
        refusal = lockstep_refusal(
            [config(seed=0, algorithm=algorithm), config(seed=1, algorithm=algorithm)]
        )
        assert refusal is not None and "no lockstep path" in refusal, algorithm


# --- the training driver: one run file per seed ---------------------------------------------


def sinusoid_configs(seeds=(0, 1, 2), **overrides):
    base = {"dataset": "sinusoid", "algorithm": "maml", "epochs": 20, "iterations_per_epoch": 1}
    return [resolve_run_config({**base, "seed": seed, **overrides}) for seed in seeds]


def epoch_params(path, epoch):
    return flatten(load_epoch_params(path, epoch))


def test_lockstep_seeds_follow_their_solo_runs_step_by_step(tmp_path):
    """Each seed's first 20 steps (one checkpoint per step) equal its solo run's to 1e-5
    relative in float32; the files have the solo layout."""
    configs = sinusoid_configs()
    paths = [tmp_path / f"lockstep{seed}.h5" for seed in range(3)]
    assert train_runs_in_lockstep(configs, paths, progress=False) == paths
    for config, path in zip(configs, paths, strict=True):
        solo = train_run(config, tmp_path / f"solo{config.seed}.h5", progress=False)
        info, solo_info = read_run_info(path), read_run_info(solo)
        assert info.finished and info.epochs == solo_info.epochs == tuple(range(21))
        assert info.config == config.to_dict()
        for epoch in range(21):
            got, want = epoch_params(path, epoch), epoch_params(solo, epoch)
            assert (got - want).norm() <= 1e-5 * want.norm(), (config.seed, epoch)
        for epoch in range(1, 21):
            assert info.statistics[epoch]["train_loss"] == pytest.approx(
                solo_info.statistics[epoch]["train_loss"], rel=1e-4
            )
    assert not torch.equal(epoch_params(paths[0], 20), epoch_params(paths[1], 20))


def all_equal(first, second, epoch):
    a, b = load_epoch_params(first, epoch), load_epoch_params(second, epoch)
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_lockstep_resume_is_bit_identical(tmp_path):
    configs = sinusoid_configs(seeds=(4, 5), epochs=5, iterations_per_epoch=3)
    whole = [tmp_path / f"whole{seed}.h5" for seed in (4, 5)]
    train_runs_in_lockstep(configs, whole, progress=False)
    split = [tmp_path / f"split{seed}.h5" for seed in (4, 5)]
    stopped = train_runs_in_lockstep(configs, split, progress=False, stop_after_epoch=2)
    assert stopped == [partial_path(path) for path in split]
    assert train_runs_in_lockstep(configs, split, progress=False) == split
    for a, b in zip(whole, split, strict=True):
        assert all(all_equal(a, b, epoch) for epoch in range(6))


def test_runs_resumed_at_different_epochs_catch_up_then_go_together(tmp_path):
    """After a crash between two runs' writes one run is ahead: the other catches up alone,
    then both go on in lockstep; each ends within round-off of its uninterrupted run."""
    configs = sinusoid_configs(seeds=(4, 5), epochs=5, iterations_per_epoch=3)
    whole = [tmp_path / f"whole{seed}.h5" for seed in (4, 5)]
    train_runs_in_lockstep(configs, whole, progress=False)
    split = [tmp_path / f"split{seed}.h5" for seed in (4, 5)]
    train_runs_in_lockstep(configs, split, progress=False, stop_after_epoch=1)
    train_run(configs[1], split[1], progress=False, stop_after_epoch=3)
    assert read_run_info(partial_path(split[1])).epochs == (0, 1, 2, 3)
    train_runs_in_lockstep(configs, split, progress=False)
    for a, b in zip(whole, split, strict=True):
        assert read_run_info(b).finished and all_equal(a, b, 1)
        got, want = epoch_params(b, 5), epoch_params(a, 5)
        assert (got - want).norm() <= 1e-5 * want.norm()


def test_a_finished_run_is_left_alone_and_the_other_trains(tmp_path):
    configs = sinusoid_configs(seeds=(0, 1), epochs=2, iterations_per_epoch=2)
    paths = [tmp_path / "a.h5", tmp_path / "b.h5"]
    train_run(configs[0], paths[0], progress=False)
    stamp = paths[0].stat().st_mtime_ns
    assert train_runs_in_lockstep(configs, paths, progress=False) == paths
    assert paths[0].stat().st_mtime_ns == stamp and read_run_info(paths[1]).finished


def test_runs_that_cannot_go_in_lockstep_train_one_by_one(tmp_path, caplog):
    configs = sinusoid_configs(seeds=(0, 1), algorithm="reptile", epochs=2, iterations_per_epoch=2)
    paths = [tmp_path / "a.h5", tmp_path / "b.h5"]
    with caplog.at_level("INFO"):
        assert train_runs_in_lockstep(configs, paths, progress=False) == paths
    assert "one run at a time" in caplog.text
    for config, path in zip(configs, paths, strict=True):
        solo = train_run(config, tmp_path / f"solo{config.seed}.h5", progress=False)
        assert torch.equal(epoch_params(path, 2), epoch_params(solo, 2))


def test_cli_trains_seeds_in_lockstep_one_file_each(tmp_path):
    out = [tmp_path / "s0.h5", tmp_path / "s1.h5"]
    argv = ["train", "--set", "dataset=sinusoid", "--set", "algorithm=maml", "--set", "epochs=2"]
    argv += ["--set", "iterations_per_epoch=3", "--seeds", "0", "1", "--quiet"]
    argv += ["--out", str(out[0]), "--out", str(out[1])]
    assert main(argv) == 0
    assert [read_run_info(path).config["seed"] for path in out] == [0, 1]
    assert main(["train", "--set", "dataset=sinusoid", "--seeds", "0", "1", "--out", "x.h5"]) == 2


def test_wide_convolutions_train_one_seed_at_a_time_on_a_cpu_only():
    def config(seed, filters):
        return resolve_run_config(
            {"dataset": "fontglot", "algorithm": "maml", "seed": seed, "filters": filters}
        )

    wide = [config(0, 64), config(1, 64)]
    assert "one seed at a time" in lockstep_refusal(wide, "cpu")
    assert lockstep_refusal(wide, "cuda") is None
    assert lockstep_refusal([config(0, 32), config(1, 32)], "cpu") is None
