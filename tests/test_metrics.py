"""Metric formulas, the shared evaluation context, output files and third-party plugins."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from plugin_package import install_package

from metalandscape.config import resolve_run_config
from metalandscape.data.sinusoid import SinusoidSource
from metalandscape.data.tasks import TaskSampler
from metalandscape.functional import adapt, flatten, gradient, parameters_of
from metalandscape.metrics.base import (
    EvaluationContext,
    MetricError,
    available_metrics,
    make_metric,
)
from metalandscape.metrics.builtin import off_diagonal_mean
from metalandscape.metrics.evaluate import evaluate, write_netcdf
from metalandscape.models import SinusoidMLP
from metalandscape.runs import RUN_DIMS
from metalandscape.training import train_run

BUILTINS = {"accuracy", "support_loss", "hessian", "trajectory_coherence", "gradient_coherence"}


def test_off_diagonal_mean_uses_pairs_i_neq_j_only():
    vectors = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]], dtype=torch.float64)
    gram = vectors @ vectors.T
    # Pairs (0,1)=0, (0,2)=3, (1,2)=0, each counted twice, over 3*2 ordered pairs.
    assert off_diagonal_mean(gram) == pytest.approx(6 / 6)
    with pytest.raises(MetricError):
        off_diagonal_mean(gram[:1, :1])


@pytest.fixture(scope="module")
def sinusoid_context():
    torch.manual_seed(0)
    model = SinusoidMLP().double()
    params = parameters_of(model)
    sampler = TaskSampler(SinusoidSource(k_shot=5, target_points=5), seed=0)
    return EvaluationContext(
        model, params, sampler, "regression", inner_steps=2, inner_step_size=0.05
    )


def by_hand(context, count):
    tasks = context.tasks("test", count)
    adapted = [
        adapt(
            context.model,
            context.start_params,
            task.support_inputs.double(),
            task.support_labels.double(),
            kind="regression",
            steps=2,
            step_size=0.05,
            create_graph=False,
        )
        for task in tasks
    ]
    steps = torch.stack([flatten(a) - flatten(context.start_params) for a in adapted]).double()
    gradients = torch.stack(
        [
            -flatten(
                gradient(
                    context.model,
                    context.start_params,
                    task.support_inputs.double(),
                    task.support_labels.double(),
                    "regression",
                )
            )
            for task in tasks
        ]
    ).double()
    return steps, gradients


def test_coherence_metrics_match_a_hand_computation(sinusoid_context):
    count = 6
    steps, gradients = by_hand(sinusoid_context, count)
    units = steps / steps.norm(dim=1, keepdim=True)
    expected_trajectory = np.mean(
        [float(units[i] @ units[j]) for i in range(count) for j in range(count) if i != j]
    )
    expected_gradient = np.mean(
        [float(gradients[i] @ gradients[j]) for i in range(count) for j in range(count) if i != j]
    )
    trajectory = make_metric("trajectory_coherence", {"tasks": count}).compute(sinusoid_context)
    coherence = make_metric("gradient_coherence", {"tasks": count}).compute(sinusoid_context)
    assert trajectory["trajectory_coherence"].values == pytest.approx(expected_trajectory, rel=1e-9)
    assert np.allclose(trajectory["trajectory_norm"].values, steps.norm(dim=1).numpy())
    assert coherence["gradient_coherence"].values == pytest.approx(expected_gradient, rel=1e-9)


def test_context_adapts_each_task_once(sinusoid_context):
    context = EvaluationContext(
        sinusoid_context.model,
        sinusoid_context.start_params,
        sinusoid_context.sampler,
        "regression",
        inner_steps=2,
        inner_step_size=0.05,
        task_chunk_size=4,
    )
    for name, settings in [
        ("accuracy", {"tasks": 10, "splits": ["test"]}),
        ("support_loss", {"tasks": 10}),
        ("trajectory_coherence", {"tasks": 8}),
        ("hessian", {"tasks": 3}),
    ]:
        make_metric(name, settings).compute(context)
    assert context.adaptations == 10
    make_metric("accuracy", {"tasks": 12, "splits": ["test", "train"]}).compute(context)
    assert context.adaptations == 12 + 12


@pytest.mark.parametrize("chunk", [1, 4, None])
def test_start_gradients_are_kept_from_the_adaptations_first_step(
    sinusoid_context, monkeypatch, chunk
):
    from metalandscape.metrics import base

    calls = []
    monkeypatch.setattr(base, "gradient", lambda *a, **k: calls.append(1) or gradient(*a, **k))

    def context(step_size, wanted):
        return EvaluationContext(
            sinusoid_context.model,
            sinusoid_context.start_params,
            sinusoid_context.sampler,
            "regression",
            inner_steps=2,
            inner_step_size=step_size,
            task_chunk_size=chunk,
            start_gradient_tasks=wanted,
        )

    computed = context(0.05, {}).start_gradients("test", 7)
    assert calls
    calls.clear()
    sharing = context(0.05, {"test": 7})
    sharing.adapted("test", 10)  # the adaptations of 10 tasks keep the first 7 gradients
    assert len(sharing._start_gradients["test"]) == 7
    assert torch.allclose(sharing.start_gradients("test", 7), computed, rtol=1e-12, atol=0)
    assert not calls
    # Only the last layer adapts (ANIL): its first step is not the whole gradient at θs.
    head = list(sinusoid_context.start_params)[-2:]
    partial = context(dict.fromkeys(head, 0.05), {"test": 7})
    partial.adapted("test", 10)
    assert torch.allclose(partial.start_gradients("test", 7), computed, rtol=1e-12, atol=0)
    assert calls


def test_batched_and_looped_adaptation_agree(sinusoid_context):
    looped = EvaluationContext(
        sinusoid_context.model,
        sinusoid_context.start_params,
        sinusoid_context.sampler,
        "regression",
        inner_steps=2,
        inner_step_size=0.05,
        task_chunk_size=1,
    )
    a = looped.displacements("test", 7)
    b = sinusoid_context.displacements("test", 7)
    assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


def test_unknown_metric_and_bad_settings_are_named():
    with pytest.raises(MetricError, match=r"available metrics: .*accuracy"):
        make_metric("nope")
    with pytest.raises(MetricError, match="no setting"):
        make_metric("hessian", {"taks": 3})
    with pytest.raises(MetricError, match="'tasks'"):
        make_metric("hessian", {"tasks": "many"})
    with pytest.raises(MetricError, match="backend"):
        make_metric("hessian", {"backend": "magic"})


def test_builtins_are_registered_as_entry_points():
    assert set(available_metrics()) >= BUILTINS


@pytest.fixture
def broken_plugin(monkeypatch):
    """The registered metric entry points plus ``broken`` (a module that is gone) and ``stale``
    (a name that is not a Metric class)."""
    from importlib.metadata import EntryPoint

    import metalandscape.metrics as metrics_package

    registered = list(metrics_package.entry_points(group=metrics_package.ENTRY_POINT_GROUP))
    extra = [
        EntryPoint(
            "broken", "metalandscape_gone_plugin.metrics:Gone", metrics_package.ENTRY_POINT_GROUP
        ),
        EntryPoint("stale", "math:pi", metrics_package.ENTRY_POINT_GROUP),
    ]
    monkeypatch.setattr(metrics_package, "entry_points", lambda group: [*registered, *extra])


def test_a_broken_plugin_breaks_only_itself(broken_plugin, sinusoid_context):
    """The metrics job loads only the plugins it asks for: a broken one elsewhere is harmless."""
    values = make_metric("support_loss", {"tasks": 2}).compute(sinusoid_context)
    assert values["support_loss"].values.shape == (2,)
    with pytest.raises(MetricError) as caught:
        make_metric("broken")
    message = str(caught.value)
    assert "\n" not in message
    assert "'broken'" in message and "metalandscape_gone_plugin.metrics:Gone" in message
    assert "ModuleNotFoundError" in message and "pip install -e ." in message
    with pytest.raises(MetricError, match=r"'stale' \(entry point math:pi\) is not a Metric"):
        make_metric("stale")
    with pytest.raises(MetricError, match=r"available metrics: .*broken.*stale"):
        make_metric("nope")


def test_listing_names_every_broken_plugin_in_one_line(broken_plugin):
    with pytest.raises(MetricError) as caught:
        available_metrics()
    message = str(caught.value)
    assert "\n" not in message
    assert "'broken'" in message and "'stale'" in message and "'accuracy'" not in message


def test_the_metrics_job_runs_beside_a_broken_plugin(broken_plugin, tmp_path, sinusoid_run, capsys):
    from metalandscape.cli import main

    common = ["metrics", "--checkpoint", str(sinusoid_run), "--epoch", "1", "--quiet"]
    assert (
        main(
            [
                *common,
                "--metric",
                "accuracy",
                "--set",
                "accuracy.tasks=2",
                "--out",
                str(tmp_path / "a.nc"),
            ]
        )
        == 0
    )
    assert (tmp_path / "a.nc").exists()
    capsys.readouterr()
    code = main([*common, "--metric", "broken", "--out", str(tmp_path / "b.nc")])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "'broken'" in lines[0], lines
    assert not (tmp_path / "b.nc").exists()


@pytest.fixture(scope="module")
def sinusoid_run(tmp_path_factory):
    config = resolve_run_config(
        {"dataset": "sinusoid", "algorithm": "maml", "epochs": 2, "iterations_per_epoch": 5}
    )
    return train_run(config, tmp_path_factory.mktemp("run") / "run.h5", progress=False)


def test_every_builtin_metric_writes_a_netcdf_file(tmp_path, sinusoid_run):
    metrics = [make_metric(name, {"tasks": 4}) for name in sorted(BUILTINS)]
    results = evaluate(sinusoid_run, [2, 0], metrics)
    for name, dataset in results.items():
        path = write_netcdf(dataset, tmp_path / f"{name}.nc")
        loaded = xr.open_dataset(path, engine="h5netcdf").load()
        for dim in RUN_DIMS:
            assert loaded.sizes[dim] == 1
        assert loaded["epoch"].values.tolist() == [0, 2] and loaded["algorithm"].item() == "maml"
        assert loaded.attrs["metric"] == name
        for variable in loaded.data_vars.values():
            assert variable.attrs["long_name"] and "units" in variable.attrs
            if "task" in variable.dims:
                assert variable.attrs["tasks"] == 4
        assert json.loads(loaded.attrs["run_config"])["dataset"] == "sinusoid"
        xr.testing.assert_identical(loaded, dataset)


def test_one_metrics_call_adapts_each_task_once_per_epoch(tmp_path, sinusoid_run, monkeypatch):
    """A bundle of metrics shares one context per epoch: accuracy's 6 tasks cover the others'."""
    from metalandscape import cli
    from metalandscape.metrics import evaluate as evaluate_module

    contexts = []

    class CountingContext(EvaluationContext):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            contexts.append(self)

    monkeypatch.setattr(evaluate_module, "EvaluationContext", CountingContext)
    from metalandscape.metrics import base

    gradients_at_start = []
    monkeypatch.setattr(
        base, "gradient", lambda *a, **k: gradients_at_start.append(1) or gradient(*a, **k)
    )
    settings = {name: {"tasks": 4} for name in BUILTINS}
    settings["accuracy"] = {"tasks": 6, "splits": ["test"]}
    argv = ["metrics", "--checkpoint", str(sinusoid_run), "--out-dir", str(tmp_path)]
    argv += ["--settings-json", json.dumps(settings), "--device", "cpu", "--quiet"]
    for name in sorted(BUILTINS):
        argv += ["--metric", name]
    assert cli.main([*argv, "--epoch", "2", "--epoch", "0", "--epoch", "1"]) == 0
    assert [context.adaptations for context in contexts] == [6, 6, 6]
    assert not gradients_at_start  # gradient coherence's ∇L(Dᵢ; θs): the adaptations' first step
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        f"{name}.nc" for name in BUILTINS
    )
    with xr.open_dataset(tmp_path / "hessian.nc", engine="h5netcdf") as hessian:
        assert hessian["epoch"].values.tolist() == [0, 1, 2]
        assert hessian["hessian_top_eigenvalue"].sizes["task"] == 4


def test_hessian_warm_starts_from_the_previous_epoch(sinusoid_run):
    settings = {"tasks": 3, "tol": 1e-6}
    warm, cold = (
        evaluate(sinusoid_run, [0, 1, 2], [make_metric("hessian", {**settings, **extra})])[
            "hessian"
        ]
        for extra in ({}, {"warm_start": False})
    )
    np.testing.assert_allclose(
        warm["hessian_top_eigenvalue"].values, cold["hessian_top_eigenvalue"].values, rtol=1e-5
    )
    products = {
        name: data["hessian_vector_products"].sel(epoch=[1, 2]).sum().item()
        for name, data in (("warm", warm), ("cold", cold))
    }
    assert products["warm"] < products["cold"]
    first = warm["hessian_vector_products"].sel(epoch=0)
    assert first.sum().item() == cold["hessian_vector_products"].sel(epoch=0).sum().item()


def test_light_subcommands_never_import_torch(tmp_path):
    script = textwrap.dedent(
        """
        import sys
        from metalandscape.cli import main
        codes = [
            main(["aggregate", "--inputs", "absent.nc", "--out", "x.nc"]),
            main(["claims", "--input", "absent.nc", "--out-csv", "c.csv", "--out-md", "c.md"]),
            main(["figure", "--list"]),
        ]
        print("RESULT", codes, "torch" in sys.modules)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert result.stdout.splitlines()[-1] == "RESULT [2, 2, 0] False", result.stderr


def test_finetune_runs_are_measured_with_a_fresh_head(tmp_path):
    from metalandscape.data.fontglot import build_fontglot

    data = build_fontglot(tmp_path / "glyphs.npz", classes=80, workers=1, progress=False)
    config = resolve_run_config(
        {
            "dataset": "fontglot",
            "data_path": str(data),
            "algorithm": "finetune",
            "n_way": 3,
            "epochs": 1,
            "iterations_per_epoch": 2,
            "filters": 8,
            "inner_steps": 1,
        }
    )
    run = train_run(config, tmp_path / "finetune.h5", progress=False)
    result = evaluate(run, 1, [make_metric("accuracy", {"tasks": 3, "splits": ["test"]})])
    accuracy = result["accuracy"]["test_target_accuracy"].values
    assert accuracy.shape[-1] == 3 and np.all((accuracy >= 0) & (accuracy <= 1))


PLUGIN = textwrap.dedent(
    '''
    from dataclasses import dataclass
    from metalandscape.metrics.base import Metric, Quantity


    class ParameterNorm(Metric):
        """‖θs‖: a toy third-party measure."""

        name = "parameter_norm"
        description = "norm of the meta-train solution"

        @dataclass(frozen=True)
        class Settings:
            scale: float = 1.0

        def compute(self, context):
            norm = sum(float((p.double() ** 2).sum()) for p in context.start_params.values())
            return {"parameter_norm": Quantity(self.settings.scale * norm ** 0.5, "norm", "1")}
    '''
)


def install_toy_plugin(root: Path) -> Path:
    """A package and its dist-info on ``root``, found by importlib.metadata entry points."""
    entry_points = "[metalandscape.metrics]\nparameter_norm = toy_metric_plugin:ParameterNorm\n"
    return install_package(root, "toy_metric_plugin", PLUGIN, entry_points)


def test_a_third_party_metric_runs_through_the_cli(tmp_path, sinusoid_run):
    plugin_root = install_toy_plugin(tmp_path / "site")
    env = {**os.environ, "PYTHONPATH": str(plugin_root)}
    command = [sys.executable, "-m", "metalandscape.cli", "metrics"]
    listing = subprocess.run([*command, "--list"], env=env, capture_output=True, text=True)
    assert "parameter_norm" in listing.stdout
    out = tmp_path / "norm.nc"
    subprocess.run(
        [
            *command,
            "--checkpoint",
            str(sinusoid_run),
            "--epoch",
            "1",
            "--metric",
            "parameter_norm",
            "--set",
            "parameter_norm.scale=2.0",
            "--out",
            str(out),
            "--device",
            "cpu",
            "--quiet",
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    loaded = xr.open_dataset(out, engine="h5netcdf").load()
    from metalandscape.checkpoints import load_epoch_params

    params = load_epoch_params(sinusoid_run, 1)
    expected = 2.0 * float(sum((p.double() ** 2).sum() for p in params.values())) ** 0.5
    assert float(loaded["parameter_norm"].squeeze()) == pytest.approx(expected, rel=1e-6)


def test_metrics_cli_errors_are_one_line(tmp_path, sinusoid_run):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "metalandscape.cli",
            "metrics",
            "--checkpoint",
            str(sinusoid_run),
            "--epoch",
            "1",
            "--metric",
            "nope",
            "--out",
            str(tmp_path / "x.nc"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "available metrics" in result.stderr
    assert not (tmp_path / "x.nc").exists()


def test_batched_context_equals_looped_context_with_batchnorm():
    from metalandscape.data.tasks import ClassImages, ImageClassificationSource
    from metalandscape.models import Conv4

    rng = np.random.default_rng(0)
    splits = {
        split: ClassImages(
            rng.integers(0, 256, (10, 6, 8, 8), dtype=np.uint8),
            tuple(f"{split}{i}" for i in range(10)),
        )
        for split in ("train", "val", "test")
    }
    sampler = TaskSampler(ImageClassificationSource(splits, 3, 2, 2), 0)
    torch.manual_seed(0)
    model = Conv4((1, 8, 8), 3, filters=4).double()
    contexts = [
        EvaluationContext(
            model,
            parameters_of(model),
            sampler,
            "classification",
            inner_steps=2,
            inner_step_size=0.3,
            task_chunk_size=chunk,
        )
        for chunk in (1, 4)
    ]
    for method in ("start_gradients", "displacements"):
        looped, batched = (getattr(c, method)("test", 7) for c in contexts)
        assert torch.allclose(looped, batched, rtol=1e-12, atol=1e-15), method


def test_hessian_at_start_and_adapted_in_one_pass_with_alpha_and_steps(sinusoid_run):
    """``at: [adapted, start]``: λmax at θs and at θ̃ᵢ, each equal to a dense eigensolve, plus
    the run's α and T for reading λmax(θ̃) against 2/α."""
    settings = {"tasks": 3, "tol": 1e-8, "at": ["adapted", "start"]}
    both = evaluate(sinusoid_run, [1], [make_metric("hessian", settings)])["hessian"]
    adapted_only = evaluate(sinusoid_run, [1], [make_metric("hessian", {"tasks": 3, "tol": 1e-8})])[
        "hessian"
    ]
    assert "hessian_start_top_eigenvalue" not in adapted_only
    np.testing.assert_allclose(
        both["hessian_top_eigenvalue"].values, adapted_only["hessian_top_eigenvalue"].values, 1e-6
    )
    config = resolve_run_config(
        {"dataset": "sinusoid", "algorithm": "maml", "epochs": 2, "iterations_per_epoch": 5}
    )
    assert both["inner_step_size"].item() == config.inner_step_size
    assert both["inner_steps"].item() == config.inner_steps
    # λmax at θs by a dense Hessian of each task's support loss.
    from metalandscape.metrics.evaluate import make_context

    _, context = make_context(sinusoid_run, 1, device="cpu")
    batch = context.tasks("test", 3)
    names = list(context.start_params)
    flat_start = flatten(context.start_params)

    def unflatten(vector):
        out, offset = {}, 0
        for name in names:
            size = context.start_params[name].numel()
            out[name] = vector[offset : offset + size].view_as(context.start_params[name])
            offset += size
        return out

    from metalandscape.functional import loss_from_outputs

    for task in range(3):
        inputs = batch.support_inputs[task].double()
        labels = batch.support_labels[task].double()

        def loss(vector, inputs=inputs, labels=labels):
            model = context.model.double()
            outputs = torch.func.functional_call(model, unflatten(vector), (inputs,))
            return loss_from_outputs(outputs, labels, kind=context.kind)

        dense = torch.autograd.functional.hessian(loss, flat_start.double().clone())
        top = torch.linalg.eigvalsh(dense).max().item()
        value = both["hessian_start_top_eigenvalue"].isel(epoch=0).values.ravel()[task]
        assert value == pytest.approx(top, rel=1e-4)
    assert not np.allclose(
        both["hessian_start_top_eigenvalue"].values, both["hessian_top_eigenvalue"].values
    )
