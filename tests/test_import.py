"""`metalandscape import`: checkpoints written elsewhere with plain PyTorch become a run file that
metrics, aggregate, figures and claims read; every bad input is one line naming file and fix."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file
from torch import nn
from workflow_copy import copy_workflow

from metalandscape.checkpoints import load_epoch_params, read_run_info
from metalandscape.cli import main
from metalandscape.config import resolve_run_config
from metalandscape.experiment import make_model, make_task_source
from metalandscape.functional import load_parameters
from metalandscape.importing import CheckpointImportError, import_run, map_names

REPO = Path(__file__).resolve().parents[1]
FILTERS = 8
# learn2learn's OmniglotCNN rules (docs/extending.md), v0.1.3 and later.
L2L_RENAMES = [
    *(
        (f"base.{i}.{part}.", f"features.{i}.{index}.")
        for i in range(4)
        for part, index in (("conv", 0), ("normalize", 1))
    ),
    ("classifier.", "head."),
]
L2L_DROPS = [
    r"^features\.1\.[0-3]\.",
    r"\.normalize\.(running_mean|running_var|num_batches_tracked)$",
    r"\.conv\.bias$",
]


class Block(nn.Module):
    """learn2learn's ConvBlock (stride 2, no pooling): conv with bias, BatchNorm, ReLU."""

    def __init__(self, channels_in: int, channels_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels_in, channels_out, 3, stride=2, padding=1, bias=True)
        self.normalize = nn.BatchNorm2d(channels_out)  # running statistics tracked, as theirs
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.normalize(self.conv(x)))


class LearnToLearnCNN(nn.Module):
    """learn2learn's OmniglotCNN layout: ``base`` aliased as ``features.1``, ``classifier``."""

    def __init__(self, outputs: int, filters: int) -> None:
        super().__init__()
        channels = [1, filters, filters, filters, filters]
        self.base = nn.Sequential(*(Block(channels[i], channels[i + 1]) for i in range(4)))
        self.features = nn.Sequential(nn.Identity(), self.base)
        self.classifier = nn.Linear(filters, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean(dim=(2, 3)))


def run_values(data: Path) -> dict:
    return {
        "dataset": "fontglot",
        "data_path": str(data),
        "algorithm": "maml",
        "n_way": 5,
        "k_shot": 1,
        "filters": FILTERS,
        "inner_steps": 1,
        "inner_step_size": 0.4,
        "variant": "l2l",
    }


@pytest.fixture
def l2l_checkpoints(tmp_path) -> list[tuple[int, Path]]:
    """Three checkpoints of a learn2learn-style network, as its users save them."""
    torch.manual_seed(0)
    network = LearnToLearnCNN(5, FILTERS)
    files = []
    for number, iteration in enumerate((0, 500, 1000)):
        with torch.no_grad():
            for parameter in network.parameters():
                parameter.add_(0.01 * torch.randn_like(parameter))
        file = tmp_path / f"epoch{number}.pt"
        torch.save(network.state_dict(), file)
        files.append((iteration, file))
    return files


def test_an_imported_run_computes_what_the_original_network_computes(
    tmp_path, tiny_fontglot, l2l_checkpoints
):
    out = import_run(
        run_values(tiny_fontglot),
        l2l_checkpoints,
        tmp_path / "run.h5",
        renames=L2L_RENAMES,
        drops=L2L_DROPS,
    )
    info = read_run_info(out)
    assert info.finished and info.epochs == (0, 1, 2)
    assert info.iterations == {0: 0, 1: 500, 2: 1000}
    config = resolve_run_config(info.config)
    ours = make_model(config, make_task_source(config))
    theirs = LearnToLearnCNN(5, FILTERS)
    theirs.load_state_dict(torch.load(l2l_checkpoints[2][1], weights_only=True))
    load_parameters(ours, load_epoch_params(out, 2))
    images = torch.rand(10, 1, 28, 28)
    theirs.train()  # learn2learn meta-learns with batch statistics
    assert torch.allclose(ours(images), theirs(images), atol=1e-5)


def test_safetensors_and_nested_state_dicts_are_read(tmp_path, tiny_fontglot, l2l_checkpoints):
    state = torch.load(l2l_checkpoints[0][1], weights_only=True)
    # safetensors refuses aliased tensors: its users save each once (safetensors.torch.save_model)
    unique = {name: value for name, value in state.items() if not name.startswith("features.")}
    save_file(unique, tmp_path / "epoch0.safetensors")
    torch.save({"state_dict": state, "epoch": 0}, tmp_path / "nested.pt")
    for file in ("epoch0.safetensors", "nested.pt"):
        out = import_run(
            run_values(tiny_fontglot),
            [(0, tmp_path / file)],
            tmp_path / f"{file}.h5",
            renames=L2L_RENAMES,
            drops=L2L_DROPS,
        )
        assert torch.equal(load_epoch_params(out, 0)["head.weight"], state["classifier.weight"])


def test_a_run_import_is_measured_by_the_metrics_command(
    tmp_path, tiny_fontglot, l2l_checkpoints, capsys
):
    run = import_run(
        run_values(tiny_fontglot),
        l2l_checkpoints,
        tmp_path / "run.h5",
        renames=L2L_RENAMES,
        drops=L2L_DROPS,
    )
    out = tmp_path / "accuracy.nc"
    status = main(
        [
            "metrics",
            "--checkpoint",
            str(run),
            "--epoch",
            "0",
            "--epoch",
            "2",
            "--metric",
            "accuracy",
            "--set",
            "accuracy.tasks=4",
            "--out",
            str(out),
            "--device",
            "cpu",
            "--quiet",
        ]
    )
    assert status == 0 and out.is_file()
    import xarray as xr

    with xr.open_dataset(out) as measured:
        assert list(measured["iteration"].values) == [0, 1000]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"renames": []}, "lacks the model's tensor(s) ['features.0.0.weight'"),
        ({"drops": L2L_DROPS[1:]}, "has tensor(s) the model does not: ['features.1.0.conv.weight'"),
        (
            {"values": {"filters": 4}},
            "tensor 'features.0.0.weight' has shape [8, 1, 3, 3] but the model needs [4, 1, 3, 3]",
        ),
        ({"checkpoints": "reversed"}, "must be strictly increasing"),
        ({"checkpoints": "missing"}, "does not exist; check the path"),
        ({"checkpoints": "module"}, "cannot be read with torch.load(weights_only=True)"),
        ({"checkpoints": "garbage"}, "cannot be read with torch.load(weights_only=True)"),
        ({"checkpoints": "bad.safetensors"}, "is not a readable safetensors file"),
        ({"checkpoints": "mixed"}, "holds non-tensor entries ['note']"),
    ],
)
def test_bad_checkpoints_are_refused_in_one_line_and_write_nothing(
    tmp_path, tiny_fontglot, l2l_checkpoints, change, message
):
    values = {**run_values(tiny_fontglot), **change.get("values", {})}
    checkpoints = l2l_checkpoints
    special = change.get("checkpoints")
    if special == "reversed":
        checkpoints = [(1000, l2l_checkpoints[0][1]), (0, l2l_checkpoints[1][1])]
    elif special == "missing":
        checkpoints = [(0, tmp_path / "nope.pt")]
    elif special == "module":  # a whole pickled nn.Module, not weights
        torch.save(LearnToLearnCNN(5, FILTERS), tmp_path / "module.pt")
        checkpoints = [(0, tmp_path / "module.pt")]
    elif special == "garbage":
        (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
        checkpoints = [(0, tmp_path / "garbage.pt")]
    elif special == "bad.safetensors":
        (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 20)
        checkpoints = [(0, tmp_path / "bad.safetensors")]
    elif special == "mixed":
        state = torch.load(l2l_checkpoints[0][1], weights_only=True)
        torch.save({**state, "note": "epoch 0"}, tmp_path / "mixed.pt")
        checkpoints = [(0, tmp_path / "mixed.pt")]
    out = tmp_path / "run.h5"
    with pytest.raises(CheckpointImportError) as caught:
        import_run(
            values,
            checkpoints,
            out,
            renames=change.get("renames", L2L_RENAMES),
            drops=change.get("drops", L2L_DROPS),
        )
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert not out.exists() and not Path(f"{out}.partial").exists()


def test_renames_take_the_first_matching_rule_and_drops_see_original_names():
    tensors = {"a.b.w": torch.zeros(1), "a.c.w": torch.ones(1), "x.w": torch.zeros(2)}
    mapped = map_names(tensors, [("a.b.", "B."), ("a.", "A.")], [r"^x\."])
    assert sorted(mapped) == ["A.c.w", "B.w"]
    with pytest.raises(CheckpointImportError, match=r"two tensors are renamed to 'same\.w'"):
        map_names(
            {"a.w": torch.zeros(1), "b.w": torch.zeros(1)}, [("a.", "same."), ("b.", "same.")]
        )


def test_the_cli_names_a_bad_checkpoint_argument(tmp_path, capsys):
    status = main(
        [
            "import",
            "--set",
            "dataset=sinusoid",
            "--set",
            "algorithm=maml",
            "--checkpoint",
            "first.pt",
            "--out",
            str(tmp_path / "r.h5"),
        ]
    )
    assert status == 2
    assert "--checkpoint 'first.pt' is not ITERATION=FILE" in capsys.readouterr().err


@pytest.mark.slow
def test_imported_runs_are_a_family_of_the_workflow(tmp_path, l2l_checkpoints):
    """Two seeds of learn2learn checkpoints: imported, measured, aggregated, drawn and judged."""
    directory = copy_workflow(tmp_path / "wf")
    seeds = []
    for seed in (0, 1):
        folder = directory / f"l2l{seed}"
        folder.mkdir()
        listed = []
        for iteration, file in l2l_checkpoints:
            state = torch.load(file, weights_only=True)
            state = {name: value + 0.01 * seed for name, value in state.items()}
            torch.save(state, folder / file.name)
            listed.append(f"{iteration}={folder.name}/{file.name}")
        seeds.append(listed)
    config = yaml.safe_load((REPO / "workflow/presets/tiny.yaml").read_text())
    config["experiments"] = [
        {
            "dataset": "fontglot",
            "family": "mine",
            "variant": "l2l",
            "ways": [5],
            "shots": [1],
            "algorithms": ["maml"],
            "seeds": [0, 1],
            "metrics": ["accuracy", "hessian", "trajectory_coherence"],
            "overrides": {"filters": FILTERS, "inner_steps": 1, "inner_step_size": 0.4},
            "imported": {
                "checkpoints": seeds,
                "rename": [f"{old}={new}" for old, new in L2L_RENAMES],
                "drop": L2L_DROPS,
            },
        }
    ]
    config["figures"] = ["fig2", "fig5"]
    (directory / "mine.yaml").write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", "mine.yaml"]
    result = subprocess.run(
        command, cwd=directory, capture_output=True, text=True, timeout=900, env=dict(os.environ)
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "import_run" in output and "rule train" not in output
    for seed in (0, 1):
        run = directory / f"results/runs/fontglot-l2l-5way1shot-maml-seed{seed}.h5"
        assert read_run_info(run).iterations == {0: 0, 1: 500, 2: 1000}
    import xarray as xr

    with xr.open_dataset(directory / "results/aggregate/mine.nc") as aggregate:
        iterations = aggregate["iteration"].values
        assert sorted(set(iterations[~np.isnan(iterations)].tolist())) == [0.0, 500.0, 1000.0]
        assert aggregate["test_target_accuracy"].notnull().all()
    assert (directory / "results/figures/fig2.png").stat().st_size > 0
    assert "fontglot" in (directory / "results/claims.md").read_text()


def test_the_plan_lists_imported_runs_and_charges_them_no_training(tmp_path):
    from metalandscape.grid import build_grid
    from metalandscape.plan import job_lines, workflow_config

    a, b, c, d = (tmp_path / f"{name}.pt" for name in "abcd")
    for file in (a, b, c, d):
        file.write_bytes(b"")
    preset = yaml.safe_load((REPO / "workflow/presets/tiny.yaml").read_text())
    preset["experiments"] = [
        {
            "dataset": "fontglot",
            "ways": [5],
            "shots": [1],
            "algorithms": ["maml"],
            "seeds": [0, 1],
            "metrics": ["accuracy"],
            "imported": {"checkpoints": [[f"0={a}", f"500={b}"], [f"0={c}", f"500={d}"]]},
        },
        {
            "dataset": "sinusoid",
            "shots": [5],
            "algorithms": ["maml"],
            "seeds": [0],
            "metrics": ["accuracy"],
            "overrides": {"epochs": 1, "iterations_per_epoch": 5},
        },
    ]
    (tmp_path / "preset.yaml").write_text(yaml.safe_dump(preset))
    grid = build_grid(workflow_config(REPO / "config.yaml", [tmp_path / "preset.yaml"]))
    lines = "\n".join(job_lines(grid))
    assert "train          1" in lines and "import         2" in lines
    run = grid.runs["fontglot-default-5way1shot-maml-seed1"]
    assert run.epochs == 1 and run.meta_iterations == 500
    assert run.import_arguments()[-2:] == [f"--checkpoint=0={c}", f"--checkpoint=500={d}"]
    assert grid.solo_run_ids() == ["sinusoid-default-1way5shot-maml-seed0"]
    assert grid.lockstep_groups() == {}
    d.unlink()
    from metalandscape.grid import GridError

    with pytest.raises(GridError, match=f"imported checkpoint {d} does not exist"):
        build_grid(workflow_config(REPO / "config.yaml", [tmp_path / "preset.yaml"]))
