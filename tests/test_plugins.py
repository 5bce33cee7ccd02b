"""Third-party plugins: a model (a small residual network) and an algorithm, each installed as a
package of its own (a module plus its dist-info on the path), used with no edit of metalandscape."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from plugin_package import install_package
from workflow_copy import copy_workflow

from metalandscape.config import ConfigError, resolve_run_config
from metalandscape.experiment import make_model, make_task_source

REPO = Path(__file__).resolve().parents[1]

PLUGIN = '''
"""A throw-away third-party package: a tiny residual network and a First-Order MAML variant."""

from dataclasses import dataclass

from torch import nn

from metalandscape.algorithms import AlgorithmSpec
from metalandscape.algorithms.fomaml import ALGORITHM as FOMAML
from metalandscape.models.base import Model
from metalandscape.settings import setting


class _Block(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels, track_running_stats=False)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels, track_running_stats=False)

    def forward(self, x):
        out = self.bn1(self.conv1(x)).relu()
        return (x + self.bn2(self.conv2(out))).relu()


class _ResNet(nn.Module):
    def __init__(self, in_channels, channels, blocks, outputs):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(channels, track_running_stats=False),
            nn.ReLU(),
        )
        self.blocks = nn.Sequential(*(_Block(channels) for _ in range(blocks)))
        self.head = nn.Linear(channels, outputs)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))


class TinyResNet(Model):
    name = "tinyres"
    kind = "classification"
    description = "a stem and residual blocks, averaged features, linear head"

    @dataclass(frozen=True)
    class Settings:
        channels: int = setting(8, minimum=1, description="channels of every layer")
        blocks: int = setting(1, minimum=1, description="residual blocks")

    def build(self, input_shape, outputs):
        return _ResNet(input_shape[0], self.settings.channels, self.settings.blocks, outputs)


class Headless(Model):
    name = "headless"
    kind = "classification"

    def build(self, input_shape, outputs):
        return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[-1] * input_shape[-2], outputs))


SPEC = AlgorithmSpec("myfomaml", "meta-learner", "My First-Order MAML", "tiny_plugins:ALGORITHM")
ALGORITHM = FOMAML
'''

ENTRY_POINTS = """[metalandscape.models]
tinyres = tiny_plugins:TinyResNet
headless = tiny_plugins:Headless

[metalandscape.algorithms]
myfomaml = tiny_plugins:SPEC
"""


def install_plugins(root: Path) -> Path:
    """The plugin package and its dist-info on ``root``, found by importlib.metadata."""
    return install_package(root, "tiny_plugins", PLUGIN, ENTRY_POINTS)


@pytest.fixture
def plugins(tmp_path, monkeypatch) -> Path:
    root = install_plugins(tmp_path / "site")
    monkeypatch.syspath_prepend(str(root))
    return root


def fontglot_config(data: Path, **values):
    return resolve_run_config(
        {
            "dataset": "fontglot",
            "algorithm": "maml",
            "n_way": 3,
            "data_path": str(data),
            **values,
        }
    )


def test_a_registered_model_builds_with_its_settings(plugins, tiny_fontglot):
    config = fontglot_config(tiny_fontglot, model="tinyres", model_settings={"channels": 4})
    source = make_task_source(config)
    network = make_model(config, source)
    assert network.head.out_features == 3 and network.stem[0].out_channels == 4
    batch = torch.zeros(2, *source.input_shape)
    assert network(batch).shape == (2, 3)
    again = make_model(config, source)  # seeded: the same weights
    assert all(a.equal(b) for a, b in zip(network.parameters(), again.parameters()))


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"model": "tinyres", "model_settings": {"channels": 0}}, "setting 'channels' must be"),
        ({"model": "tinyres", "model_settings": {"width": 3}}, "has no setting(s) ['width']"),
        ({"model": "headless"}, "without an nn.Linear module 'head'"),
        ({"model": "mlp"}, "is a regression model but fontglot tasks are classification"),
    ],
)
def test_model_problems_are_one_line_config_errors(plugins, tiny_fontglot, values, message):
    config = fontglot_config(tiny_fontglot, **values)
    with pytest.raises(ConfigError) as caught:
        make_model(config, make_task_source(config))
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_an_unregistered_model_is_refused_when_the_config_is_read(tiny_fontglot):
    with pytest.raises(ConfigError, match="'resnet', which no installed package registers"):
        fontglot_config(tiny_fontglot, model="resnet")


def test_the_builtins_are_registered_models():
    from metalandscape.models import model_entry_points
    from metalandscape.models.base import model_class

    assert {"conv4", "mlp"} <= set(model_entry_points())
    assert model_class("conv4").kind == "classification"
    assert model_class("mlp").kind == "regression"


@pytest.mark.slow
def test_a_third_party_model_trains_is_measured_aggregated_and_drawn_by_the_workflow(tmp_path):
    """tinyres on fontglot through the whole workflow: train, metrics, aggregate, figure."""
    plugin_root = install_plugins(tmp_path / "site")
    directory = copy_workflow(tmp_path / "wf")
    config = yaml.safe_load((REPO / "workflow/presets/tiny.yaml").read_text())
    config["experiments"] = [
        {
            "dataset": "fontglot",
            "family": "resnet",
            "ways": [3],
            "shots": [1],
            "algorithms": ["maml"],
            "seeds": [0],
            "metrics": ["accuracy", "hessian", "trajectory_coherence"],
            "overrides": {
                "model": "tinyres",
                "model_settings": {"channels": 4},
                "epochs": 2,
                "iterations_per_epoch": 2,
                "meta_batch_size": 2,
                "inner_steps": 1,
                "inner_step_size": 0.4,
                "task_chunk_size": 1,
            },
        }
    ]
    config["figures"] = ["fig2"]
    (directory / "resnet.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONPATH": str(plugin_root)}
    command = [sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", "resnet.yaml"]
    result = subprocess.run(
        command, cwd=directory, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run = directory / "results/runs/fontglot-default-3way1shot-maml-seed0.h5"
    from metalandscape.checkpoints import load_epoch_params, read_run_info

    info = read_run_info(run)
    assert info.config["model"] == "tinyres" and info.config["model_settings"] == {"channels": 4}
    assert "blocks.0.conv1.weight" in load_epoch_params(run, 2)
    import xarray as xr

    with xr.open_dataset(directory / "results/aggregate/resnet.nc") as aggregate:
        assert aggregate["test_target_accuracy"].notnull().all()
        assert (aggregate["hessian_top_eigenvalue"] > 0).all()
    assert (directory / "results/figures/fig2.png").stat().st_size > 0
    # A misspelt model setting stops the workflow at planning, in one line naming the key.
    config["experiments"][0]["overrides"]["model_settings"] = {"channels": 0}
    (directory / "bad.yaml").write_text(yaml.safe_dump(config))
    bad = subprocess.run(
        [*command[:-1], "bad.yaml", "-n"], cwd=directory, env=env, capture_output=True, text=True
    )
    assert bad.returncode != 0
    assert "config experiments[0].overrides.model_settings.channels: 0 is below the minimum 1" in (
        bad.stdout + bad.stderr
    )


def test_a_third_party_algorithm_joins_the_registry_and_trains(plugins, tmp_path):
    """The registry is read at import: a fresh process sees the plugin's algorithm."""
    env = {**os.environ, "PYTHONPATH": str(plugins)}
    out = tmp_path / "run.h5"
    command = [sys.executable, "-m", "metalandscape.cli", "train", "--quiet", "--out", str(out)]
    command += ["--set", "dataset=sinusoid", "--set", "algorithm=myfomaml"]
    command += ["--set", "epochs=1", "--set", "iterations_per_epoch=3", "--set", "k_shot=5"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    from metalandscape.checkpoints import read_run_info

    assert read_run_info(out).config["algorithm"] == "myfomaml"
    check = "from metalandscape.algorithms import ALGORITHMS; print(ALGORITHMS['myfomaml'].title)"
    listed = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True)
    assert listed.stdout.strip() == "My First-Order MAML"


@pytest.mark.parametrize(
    ("entry", "source", "message"),
    [
        (
            "bad",
            "SPEC = 3\n",
            "entry point bad_algorithm:SPEC must be an instance of AlgorithmSpec named 'bad'",
        ),
        ("gone", "import not_a_module\n", "failed to load (ModuleNotFoundError"),
        (
            "upper",
            "from metalandscape.algorithms import AlgorithmSpec\n"
            "SPEC = AlgorithmSpec('Upper', 'meta-learner', 'U', 'x:Y')\n",
            "must be lowercase letters a-z only",
        ),
        ("maml", "SPEC = 3\n", "its name is a built-in algorithm's; rename it"),
    ],
)
def test_a_broken_algorithm_plugin_is_one_line_naming_it(tmp_path, entry, source, message):
    entry_points = f"[metalandscape.algorithms]\n{entry} = bad_algorithm:SPEC\n"
    root = install_package(tmp_path / "site", "bad_algorithm", source, entry_points)
    env = {**os.environ, "PYTHONPATH": str(root)}
    if entry == "maml":  # the built-in wins; the plugin is left out, its reason kept
        check = "from metalandscape.algorithms import BROKEN_ALGORITHM_PLUGINS as b; print(b)"
        listed = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True)
        assert message in listed.stdout.decode()
        return
    command = [sys.executable, "-m", "metalandscape.cli", "train", "--out", str(tmp_path / "r.h5")]
    command += ["--set", "dataset=sinusoid", "--set", f"algorithm={entry}"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if "error" in line]
    assert len(lines) == 1 and message in lines[0], done.stderr


def test_the_algorithm_registry_does_not_import_the_config():
    """config.py reads the algorithm registry; no algorithm module imports config.py."""
    code = (
        "import sys, metalandscape.algorithms as a\n"
        "for name in a.ALGORITHMS: a.load_algorithm(name)\n"
        "print('metalandscape.config' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr


def write_class_folders(root: Path, classes: int = 6, images: int = 3, size: int = 14) -> Path:
    """``root/<split>/<class>/<image>.png``: grey images of distinct brightness per class."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        for number in range(classes):
            folder = root / split / f"{split}{number:02d}"
            folder.mkdir(parents=True)
            for image in range(images):
                pixels = rng.integers(0, 256, size=(size + image, size), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{image}.png")
    return root


def test_class_folders_train_through_the_cli(tmp_path):
    root = write_class_folders(tmp_path / "data")
    out = tmp_path / "run.h5"
    arguments = ["train", "--quiet", "--out", str(out), "--set", "dataset=folders"]
    arguments += ["--set", f"data_path={root}", "--set", "algorithm=maml", "--set", "n_way=3"]
    arguments += ["--set", "image_size=[14, 14]", "--set", "filters=4", "--set", "epochs=1"]
    arguments += [
        "--set",
        "iterations_per_epoch=2",
        "--set",
        "query=1",
        "--set",
        "meta_batch_size=2",
    ]
    from metalandscape.cli import main

    assert main(arguments) == 0
    from metalandscape.checkpoints import load_epoch_params

    assert load_epoch_params(out, 1)["features.0.0.weight"].shape == (4, 1, 3, 3)


def test_class_folders_need_an_image_size_when_sizes_differ(tmp_path, capsys):
    root = write_class_folders(tmp_path / "data")
    from metalandscape.cli import main

    status = main(["data", "inspect", "--dataset", "folders", "--path", str(root), "--ways", "3"])
    error = capsys.readouterr().err
    assert status == 2 and "images differ in size" in error and "image_size" in error
    assert (
        main(
            [
                "data",
                "inspect",
                "--dataset",
                "folders",
                "--path",
                str(root),
                "--image-size",
                "14",
                "14",
            ]
        )
        == 0
    )


DATASET_PLUGIN = """
import numpy as np

from metalandscape.data import DatasetSpec

NOISE = DatasetSpec(
    "noise", "classification", "random noise", "images", loader="noise_data:load"
)


def load(path, options):
    from metalandscape.data.tasks import ClassImages

    rng = np.random.default_rng(0)
    return {
        split: ClassImages(rng.integers(0, 256, (5, 4, 12, 12), dtype=np.uint8), tuple("abcde"))
        for split in ("train", "val", "test")
    }
"""


def test_a_third_party_data_set_registers_and_trains(tmp_path):
    entry_points = "[metalandscape.datasets]\nnoise = noise_data:NOISE\n"
    root = install_package(tmp_path / "site", "noise_data", DATASET_PLUGIN, entry_points)
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = tmp_path / "run.h5"
    command = [sys.executable, "-m", "metalandscape.cli", "train", "--quiet", "--out", str(out)]
    command += ["--set", "dataset=noise", "--set", f"data_path={tmp_path}", "--set", "n_way=3"]
    command += ["--set", "algorithm=fomaml", "--set", "epochs=1", "--set", "iterations_per_epoch=2"]
    command += ["--set", "filters=4", "--set", "query=1", "--set", "meta_batch_size=2"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    missing = subprocess.run(
        [*command[:-2], "--set", "dataset=nothing"], env=env, capture_output=True, text=True
    )
    assert "unknown data set 'nothing'; registered: sinusoid, fontglot" in missing.stderr
    assert "noise" in missing.stderr


def test_the_workflow_checks_a_class_folder_data_set_as_its_runs_read_it(tmp_path):
    root = write_class_folders(tmp_path / "data")
    directory = copy_workflow(tmp_path / "wf")
    config = yaml.safe_load((REPO / "workflow/presets/tiny.yaml").read_text())
    config["data"]["paths"] = {"folders": str(root)}
    config["experiments"] = [
        {
            "dataset": "folders",
            "ways": [3],
            "shots": [1],
            "algorithms": ["maml"],
            "seeds": [0],
            "metrics": ["accuracy"],
            "overrides": {"image_size": [14, 14], "filters": 4, "epochs": 1, "query": 1},
        }
    ]
    config["figures"] = []
    (directory / "folders.yaml").write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", "folders.yaml"]
    result = subprocess.run(command, cwd=directory, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    check = directory / "results/data/folders.check.json"
    assert '"classes": 6' in check.read_text()
    assert (directory / "results/aggregate/folders.nc").is_file()


@pytest.mark.slow
def test_every_algorithm_and_builtin_metric_work_on_a_plugin_model(
    plugins, tiny_fontglot, tmp_path
):
    """Each registered algorithm trains tinyres one meta-iteration; each built-in metric
    measures the result (finite values)."""
    import numpy as np

    from metalandscape.algorithms import ALGORITHMS
    from metalandscape.metrics.base import make_metric
    from metalandscape.metrics.evaluate import evaluate
    from metalandscape.training import train_run

    metrics = [
        make_metric("accuracy", {"tasks": 2, "splits": ["test"]}),
        make_metric("support_loss", {"tasks": 2}),
        make_metric("hessian", {"tasks": 2, "max_hessian_vector_products": 6}),
        make_metric("trajectory_coherence", {"tasks": 3}),
        make_metric("gradient_coherence", {"tasks": 3}),
        make_metric("hessian_trace", {"tasks": 2, "probes": 2}),
        make_metric("function_coherence", {"tasks": 3, "probe_tasks": 2}),
    ]
    for algorithm in ALGORITHMS:
        config = fontglot_config(
            tiny_fontglot,
            algorithm=algorithm,
            model="tinyres",
            model_settings={"channels": 3},
            epochs=1,
            iterations_per_epoch=1,
            meta_batch_size=2,
            inner_steps=1,
            finetune_batch_size=8,
        )
        run = train_run(config, tmp_path / f"{algorithm}.h5", progress=False)
        results = evaluate(run, 1, metrics)
        for name, dataset in results.items():
            for variable in dataset.data_vars:
                if variable == "inner_step_size":  # NaN where α is per parameter (ANIL, Meta-SGD)
                    continue
                values = dataset[variable].values
                if np.issubdtype(values.dtype, np.floating):
                    assert np.isfinite(values).all(), (algorithm, name, variable)


def test_seeds_of_a_plugin_model_train_one_at_a_time(plugins, tiny_fontglot):
    from metalandscape.lockstep import lockstep_refusal

    configs = [fontglot_config(tiny_fontglot, model="tinyres", seed=seed) for seed in (0, 1)]
    assert "built-in models only, not on 'tinyres'" in lockstep_refusal(configs)
    narrow = [
        fontglot_config(tiny_fontglot, model_settings={"filters": 16}, seed=s) for s in (0, 1)
    ]
    assert lockstep_refusal(narrow) is None


def test_a_data_set_whose_loader_is_gone_is_one_line(tmp_path):
    source = (
        "from metalandscape.data import DatasetSpec\n"
        "GONE = DatasetSpec('gone', 'classification', 'gone', 'images', loader='nowhere:load')\n"
    )
    entry_points = "[metalandscape.datasets]\ngone = gone_data:GONE\n"
    root = install_package(tmp_path / "site", "gone_data", source, entry_points)
    command = [sys.executable, "-m", "metalandscape.cli", "train", "--out", str(tmp_path / "r.h5")]
    command += [
        "--set",
        "dataset=gone",
        "--set",
        f"data_path={tmp_path}",
        "--set",
        "algorithm=maml",
    ]
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "data set 'gone': its nowhere:load cannot be loaded (ModuleNotFoundError" in done.stderr
