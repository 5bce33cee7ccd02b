"""The finetune baseline's evaluation head chosen end to end: CLI flag, config key, rule."""

from __future__ import annotations

from pathlib import Path

import pytest
import xarray as xr
import yaml

from metalandscape.cli import main
from metalandscape.config import resolve_run_config
from metalandscape.training import train_run

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def finetune_run(tmp_path_factory):
    from metalandscape.data.fontglot import build_fontglot

    folder = tmp_path_factory.mktemp("head")
    data = build_fontglot(folder / "fontglot.npz", classes=120, workers=1, progress=False)
    config = resolve_run_config(
        {
            "dataset": "fontglot",
            "data_path": str(data),
            "algorithm": "finetune",
            "n_way": 3,
            "filters": 8,
            "inner_steps": 1,
            "finetune_batch_size": 8,
            "epochs": 1,
            "iterations_per_epoch": 2,
        }
    )
    return train_run(config, folder / "run.h5", progress=False)


def _measure(run: Path, out: Path, *head: str) -> xr.Dataset:
    arguments = ["metrics", "--checkpoint", str(run), "--metric", "gradient_coherence"]
    arguments += ["--epoch", "1", "--settings-json", '{"gradient_coherence": {"tasks": 4}}']
    code = main([*arguments, "--out", str(out), "--device", "cpu", "--quiet", *head])
    assert code == 0
    return xr.load_dataset(out, engine="h5netcdf")


def test_metrics_cli_measures_with_either_head(tmp_path, finetune_run):
    default = _measure(finetune_run, tmp_path / "default.nc")
    per_task = _measure(finetune_run, tmp_path / "per_task.nc", "--evaluation-head", "per_task")
    shared = _measure(finetune_run, tmp_path / "shared.nc", "--evaluation-head", "shared")
    assert default.attrs["evaluation_head"] == "per_task"
    assert shared.attrs["evaluation_head"] == "shared"
    assert default["gradient_coherence"].item() == per_task["gradient_coherence"].item()
    assert shared["gradient_coherence"].item() != per_task["gradient_coherence"].item()


def test_unknown_head_is_a_usage_error(tmp_path, finetune_run, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["metrics", "--checkpoint", str(finetune_run), "--evaluation-head", "fresh"])
    assert exit_info.value.code == 2
    assert "--evaluation-head" in capsys.readouterr().err


def test_workflow_passes_the_config_key_to_the_metrics_rule():
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    assert config["evaluation_head"] == "per_task"
    assert schema["properties"]["evaluation_head"]["enum"] == ["per_task", "shared"]
    rule = (REPO / "workflow/rules/metrics.smk").read_text()
    assert 'evaluation_head=config["evaluation_head"]' in rule
    assert "--evaluation-head {params.evaluation_head:q}" in rule
