"""Every class of bad input gets one line naming the key, file or path, exit code 2, and leaves
no output and no ``.partial`` behind: metric settings, argument types, file-system errors
(read-only folder, full disk) and damaged or incomplete Omniglot copies.

File-system cases mount small tmpfs folders and run as root only (skipped otherwise).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import yaml
from fake_datasets import write_omniglot_original, write_omniglot_torchvision

from metalandscape.cli import main, metric_settings_from_arguments, run_config_from_arguments
from metalandscape.metrics.base import available_metrics, settings_json_schema
from metalandscape.metrics.builtin import (
    Accuracy,
    GradientCoherence,
    Hessian,
    SupportLoss,
    TrajectoryCoherence,
)
from metalandscape.metrics.function_coherence import FunctionCoherence
from metalandscape.metrics.layer_curvature import LayerCurvature
from metalandscape.metrics.schema import ConfigSchemaError, config_schema, validate_config
from metalandscape.metrics.spectral_density import SpectralDensity
from metalandscape.metrics.trace import HessianTrace

REPO = Path(__file__).resolve().parents[1]
SINUSOID_RUN = ["--set", "dataset=sinusoid", "--set", "algorithm=maml", "--set", "seed=0"]


def run_cli(arguments: Sequence[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    """Exit code and non-empty stderr lines of ``metalandscape ARGUMENTS`` (in process)."""
    capsys.readouterr()
    try:
        code = main(list(arguments))
    except SystemExit as exit:  # argparse refuses an argument before any handler runs
        code = int(exit.code or 0)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return code, lines


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def assert_one_line_error(code: int, lines: list[str], *named: str) -> None:
    assert code == 2, lines
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0] and "error" in lines[0], lines
    for text in named:
        assert text in lines[0], (text, lines[0])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-epoch sinusoid run file."""
    out = tmp_path_factory.mktemp("run") / "run.h5"
    settings = [*SINUSOID_RUN, "--set", "epochs=1", "--set", "iterations_per_epoch=2"]
    assert main(["train", *settings, "--out", str(out), "--quiet"]) == 0
    return out


def metrics_arguments(checkpoint: Path, out_dir: Path, metric: str = "accuracy") -> list[str]:
    return [
        "metrics",
        "--checkpoint",
        str(checkpoint),
        "--epoch",
        "1",
        "--metric",
        metric,
        "--set",
        f"{metric}.tasks=3",
        "--out-dir",
        str(out_dir),
        "--quiet",
    ]


@pytest.fixture(scope="module")
def metric_file(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out_dir = tmp_path_factory.mktemp("metrics")
    assert main(metrics_arguments(checkpoint, out_dir)) == 0
    return out_dir / "accuracy.nc"


# ---- metric settings: typed, bounded, finite -----------------------------------------------


@pytest.mark.parametrize(
    ("metric", "settings", "named"),
    [
        ("hessian", ["--set", "hessian.tasks=0"], "hessian.tasks"),
        ("accuracy", ["--set", "accuracy.tasks=0"], "accuracy.tasks"),
        ("accuracy", ["--set", "accuracy.tasks=-5"], "accuracy.tasks"),
        ("hessian", ["--set", "hessian.tol=.nan"], "hessian.tol"),
        ("hessian", ["--settings-json", '{"hessian": {"tol": NaN}}'], "hessian.tol"),
        ("hessian", ["--set", "hessian.tol=.inf"], "hessian.tol"),
        ("hessian", ["--set", "hessian.tol=high"], "hessian.tol"),
        ("hessian", ["--set", "hessian.tol=0"], "hessian.tol"),
        ("hessian", ["--set", "hessian.backend=arpack"], "hessian.backend"),
        ("hessian", ["--set", "hessian.max_hessian_vector_products=0"], "hessian"),
        ("hessian", ["--set", "hessian.seed=-1"], "hessian.seed"),
        ("hessian", ["--set", "hessian.tasks=true"], "hessian.tasks"),
        ("accuracy", ["--set", "accuracy.splits=[]"], "accuracy.splits"),
        ("accuracy", ["--set", "accuracy.splits=[test, dev]"], "accuracy.splits"),
        ("support_loss", ["--set", "support_loss.split=dev"], "support_loss.split"),
        ("trajectory_coherence", ["--set", "trajectory_coherence.tasks=1"], "tasks"),
        ("gradient_coherence", ["--set", "gradient_coherence.tasks=2.5"], "tasks"),
        ("hessian", ["--set", "hessian.tasks"], "hessian.tasks"),
        ("hessian", ["--set", "hessian.bogus=1"], "bogus"),
        ("hessian", ["--settings-json", "{not json"], "--settings-json"),
    ],
)
def test_bad_metric_setting(
    checkpoint: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    metric: str,
    settings: list[str],
    named: str,
) -> None:
    out_dir = tmp_path / "out"
    arguments = [
        "metrics",
        "--checkpoint",
        str(checkpoint),
        "--epoch",
        "1",
        "--metric",
        metric,
        *settings,
        "--out-dir",
        str(out_dir),
        "--quiet",
    ]
    code, lines = run_cli(arguments, capsys)
    assert_one_line_error(code, lines, named)
    assert not out_dir.exists() or not files_under(out_dir)


SCHEMA = REPO / "workflow/schemas/config.schema.yaml"


def test_schema_bounds_are_the_settings_rules() -> None:
    """The built schema's metrics entries are what each Settings field declares; the file has none."""
    assert "properties" not in yaml.safe_load(SCHEMA.read_text())["properties"]["metrics"]
    entries = config_schema(SCHEMA)["properties"]["metrics"]["properties"]
    builtins = (
        Accuracy,
        SupportLoss,
        Hessian,
        TrajectoryCoherence,
        GradientCoherence,
        HessianTrace,
        SpectralDensity,
        LayerCurvature,
        FunctionCoherence,
    )
    assert set(entries) == {cls.name for cls in builtins}
    for cls in builtins:
        assert available_metrics()[cls.name] is cls
        assert entries[cls.name] == settings_json_schema(cls), cls.name
    # The rules as JSON schema, spelt out for two settings.
    assert entries["hessian"]["properties"]["tol"] == {
        "description": "relative tolerance of the eigensolver; null - the backend's default",
        "anyOf": [{"type": "null"}, {"type": "number", "exclusiveMinimum": 0, "maximum": 1}],
    }
    assert entries["accuracy"]["properties"]["splits"] == {
        "type": "array",
        "minItems": 1,
        "uniqueItems": True,
        "items": {"type": "string", "enum": ["train", "val", "test"]},
    }


def workflow_config(metrics: dict[str, object]) -> dict[str, object]:
    """config.yaml with its metric settings replaced by ``metrics``."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    return {**config, "metrics": metrics}


@pytest.mark.parametrize(
    ("metrics", "message"),
    [
        ({"hessian": {"tol": 0}}, "config metrics.hessian.tol: 0 must be above 0"),
        ({"hessian": {"tol": 2}}, "config metrics.hessian.tol: 2 is above the maximum 1"),
        ({"accuracy": {"tasks": 0}}, "config metrics.accuracy.tasks: 0 is below the minimum 1"),
        ({"spectral_density": {"sigma": "wide"}}, "config metrics.spectral_density.sigma: 'wide'"),
        ({"layer_curvature": {"bogus": 1}}, "config metrics.layer_curvature: unknown key(s)"),
        ({"not_installed": 3}, "config metrics.not_installed: 3 is not a mapping"),
    ],
)
def test_workflow_schema_refuses_a_bad_metric_setting(
    metrics: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigSchemaError) as caught:
        validate_config(workflow_config(metrics), SCHEMA)
    assert str(caught.value).startswith(message), caught.value
    assert "\n" not in str(caught.value)


def test_workflow_schema_passes_the_shipped_config_and_unknown_metrics() -> None:
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    validate_config(config, SCHEMA)
    validate_config(workflow_config({"not_installed": {"anything": 1}}), SCHEMA)


def test_workflow_schema_names_a_broken_plugin_it_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only plugins with settings in the config are loaded; a broken one is named in one line."""
    from importlib.metadata import EntryPoint

    import metalandscape.metrics as metrics_package

    broken = EntryPoint(
        "broken", "metalandscape_gone_plugin:Gone", metrics_package.ENTRY_POINT_GROUP
    )
    registered = list(metrics_package.entry_points(group=metrics_package.ENTRY_POINT_GROUP))
    monkeypatch.setattr(metrics_package, "entry_points", lambda group: [*registered, broken])
    validate_config(workflow_config({"hessian": {"tol": 0.1}}), SCHEMA)
    with pytest.raises(
        ConfigSchemaError, match=r"^metric plugin 'broken' .*pip install -e \."
    ) as caught:
        validate_config(workflow_config({"broken": {}}), SCHEMA)
    assert "\n" not in str(caught.value)


def test_exponent_numbers_are_numbers() -> None:
    """YAML 1.1 reads 1e-3 as text; --set reads it as the number it means."""
    raw = run_config_from_arguments(None, ["meta_learning_rate=1e-3", "inner_step_size=4E-1"])
    assert raw == {"meta_learning_rate": 0.001, "inner_step_size": 0.4}
    assert metric_settings_from_arguments(None, ["hessian.tol=1e-4"]) == {"hessian": {"tol": 1e-4}}
    assert run_config_from_arguments(None, ["variant=1e3x"]) == {"variant": "1e3x"}


# ---- argument types -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        (["metrics", "--threads", "0", "--list"], "--threads"),
        (["metrics", "--threads", "-3", "--list"], "--threads"),
        (["metrics", "--threads", "two", "--list"], "--threads"),
        (["train", *SINUSOID_RUN, "--threads", "0", "--out", "OUT/r.h5"], "--threads"),
        (["data", "fontglot", "--workers", "0", "--out", "OUT/f.npz"], "--workers"),
        (["data", "fontglot", "--classes", "-1", "--out", "OUT/f.npz"], "--classes"),
        (["metrics", "--epoch", "one", "--list"], "--epoch"),
    ],
)
def test_bad_argument(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], named: str
) -> None:
    arguments = [a.replace("OUT", str(tmp_path)) for a in arguments]
    code, lines = run_cli(arguments, capsys)
    assert_one_line_error(code, lines, named)
    assert not files_under(tmp_path)


# ---- file-system errors ---------------------------------------------------------------------


def mount_tmpfs(folder: Path, options: str) -> None:
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root")
    folder.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs with 4 KiB left; ``<it>/filler`` takes the rest (delete it to free)."""
    folder = tmp_path / "full"
    mount_tmpfs(folder, "size=1m")
    try:
        free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
        (folder / "filler").write_bytes(b"\0" * (free - 4096))
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "read_only"
    mount_tmpfs(folder, "ro,size=1m")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def file_system_commands(kind: str, checkpoint: Path, metric_file: Path, out: Path) -> list[str]:
    if kind == "metrics":
        return metrics_arguments(checkpoint, out / "m")
    if kind == "aggregate":
        return ["aggregate", "--inputs", str(metric_file), "--out", str(out / "agg.nc"), "--quiet"]
    return ["data", "fontglot", "--out", str(out / "fg.npz"), "--classes", "12", "--quiet"]


@pytest.mark.parametrize("kind", ["metrics", "aggregate", "fontglot"])
def test_read_only_output_folder(
    read_only: Path,
    checkpoint: Path,
    metric_file: Path,
    capsys: pytest.CaptureFixture[str],
    kind: str,
) -> None:
    arguments = file_system_commands(kind, checkpoint, metric_file, read_only)
    code, lines = run_cli(arguments, capsys)
    assert_one_line_error(code, lines, "Read-only file system", str(read_only))
    assert not files_under(read_only)


@pytest.mark.parametrize("kind", ["metrics", "aggregate", "fontglot"])
def test_full_disk_then_rerun_after_freeing_space(
    full_disk: Path,
    checkpoint: Path,
    metric_file: Path,
    capsys: pytest.CaptureFixture[str],
    kind: str,
) -> None:
    arguments = file_system_commands(kind, checkpoint, metric_file, full_disk)
    code, lines = run_cli(arguments, capsys)
    assert_one_line_error(code, lines, "No space left on device", str(full_disk), "free space")
    assert files_under(full_disk) == ["filler"]  # no half-written output, no temporary file
    (full_disk / "filler").unlink()
    code, lines = run_cli(arguments, capsys)
    assert code == 0, lines
    assert files_under(full_disk) and not [n for n in files_under(full_disk) if ".tmp" in n]


# ---- damaged or incomplete Omniglot ---------------------------------------------------------


def inspect_omniglot(root: Path, *extra: str) -> list[str]:
    return ["data", "inspect", "--dataset", "omniglot", "--path", str(root), *extra]


def corrupt_member(zip_path: Path, how: str) -> str:
    """Damage one PNG member of ``zip_path``; returns its name."""
    with zipfile.ZipFile(zip_path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(".png"))
    data = bytearray(zip_path.read_bytes())
    if how == "crc":  # the central directory's CRC-32 of the member no longer matches
        central = data.index(b"PK\x01\x02")
        while data[central + 46 : central + 46 + len(info.filename)] != info.filename.encode():
            central = data.index(b"PK\x01\x02", central + 4)
        data[central + 16 : central + 20] = struct.pack("<I", info.CRC ^ 0xFFFFFFFF)
    else:  # a reserved deflate block type: zlib refuses the stream
        name_length, extra_length = struct.unpack("<HH", data[info.header_offset + 26 :][:4])
        start = info.header_offset + 30 + name_length + extra_length
        data[start] = 0xFF
    zip_path.write_bytes(bytes(data))
    return info.filename


@pytest.mark.parametrize("how", ["crc", "deflate"])
def test_corrupt_zip_member_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    root = write_omniglot_original(tmp_path / "omniglot", alphabets=2, characters=2, zipped=True)
    member = corrupt_member(root / "images_background.zip", how)
    code, lines = run_cli(inspect_omniglot(root, "--omniglot-proportional-split"), capsys)
    assert_one_line_error(code, lines, "images_background.zip", member, "download")


def test_incomplete_omniglot_is_refused_unless_allowed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_omniglot_original(tmp_path / "omniglot", alphabets=2, characters=2, drawers=3)
    code, lines = run_cli(inspect_omniglot(root), capsys)
    assert_one_line_error(code, lines, str(root), "1623", "omniglot_proportional_split")
    code, lines = run_cli(inspect_omniglot(root, "--omniglot-proportional-split"), capsys)
    assert code == 0, lines


def test_half_extracted_folder_loses_to_its_zip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """torchvision keeps each zip beside its folder; an interrupted extraction must not win."""
    root = write_omniglot_torchvision(tmp_path / "tv", alphabets=2, characters=2, drawers=3)
    inner = root / "omniglot-py"
    write_omniglot_original(tmp_path / "zips", alphabets=2, characters=2, drawers=3, zipped=True)
    for half in ("images_background", "images_evaluation"):
        shutil.copy(tmp_path / "zips" / f"{half}.zip", inner / f"{half}.zip")
    broken = next((inner / "images_background").glob("*/*"))
    shutil.rmtree(broken)  # one character never extracted
    capsys.readouterr()
    assert main(inspect_omniglot(root, "--omniglot-proportional-split")) == 0
    out = capsys.readouterr().out
    layout = json.loads(out[: out.index("\n}\n") + 2])
    assert layout["layout"] == "torchvision" and layout["characters"] == 4
    assert str(inner / "images_background.zip") in layout["read"]
    assert any(str(inner / "images_background") in entry for entry in layout["ignored"])
    assert any("images_evaluation.zip" in entry for entry in layout["ignored"])  # same images


def test_workflow_schema_is_cached_without_torch(tmp_path: Path) -> None:
    """After one build, checking the config (each Snakemake start does) imports no torch; the
    cached schema equals the one built from the plugins."""
    script = (
        "import json, sys\n"
        "from metalandscape.metrics.schema import config_schema\n"
        f"schema = config_schema({str(SCHEMA)!r})\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'schema': schema}))\n"
    )
    env = {**os.environ, "METALANDSCAPE_CACHE": str(tmp_path / "cache")}
    runs = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
            ).stdout
        )
        for _ in range(2)
    ]
    assert runs[0]["torch"] and not runs[1]["torch"]
    assert runs[0]["schema"] == runs[1]["schema"] == config_schema(SCHEMA)
    assert (tmp_path / "cache" / "metric-settings-schemas.json").is_file()


def test_plugin_fingerprint_follows_every_file_of_its_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from importlib.metadata import EntryPoint

    from metalandscape.metrics.schema import _tree_digest, plugin_fingerprint

    package = tmp_path / "fingerprinted_plugin"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "helpers.py").write_text("LOW = 0\n")
    (package / "metric.py").write_text("class Metric: ...\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = EntryPoint("fingerprinted", "fingerprinted_plugin.metric:Metric", "group")
    first = plugin_fingerprint(entry)
    assert first is not None and plugin_fingerprint(entry) == first
    (package / "helpers.py").write_text("LOW = 1\n")  # a helper the Settings might use
    _tree_digest.cache_clear()
    assert plugin_fingerprint(entry) not in (None, first)
    assert plugin_fingerprint(EntryPoint("gone", "no_such_plugin_module:X", "group")) is None


def _resolve(schema: dict, node: dict) -> dict:
    """``node`` with a ``$ref`` (to ``#/$defs/...``) merged in."""
    while "$ref" in node:
        target = schema["$defs"][node["$ref"].split("/")[-1]]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _violations(schema: dict, node: dict):
    """(value, rule) pairs that break ``node``'s own rules, one per rule."""
    node = _resolve(schema, node)
    if "minimum" in node:
        yield node["minimum"] - 1, "minimum"
    if "exclusiveMinimum" in node:
        yield node["exclusiveMinimum"], "exclusiveMinimum"
    if "maximum" in node:
        yield node["maximum"] + 1, "maximum"
    if "enum" in node:
        yield "not-a-choice", "enum"
    if "pattern" in node:
        yield "bad-name!", "pattern"
    if node.get("minItems"):
        yield [], "minItems"
    kind = node.get("type")
    if kind in ("integer", "number"):
        yield "text", "type"
    elif kind == "boolean":
        yield "yes", "type"
    elif kind == "array":
        yield "text", "type"
    elif kind == "object" and node.get("additionalProperties") is False:
        yield {"no_such_key": 1}, "additionalProperties"


def _schema_cases():
    """(key path, parts, value, rule) for every rule of the top level, the data and claims
    sections, an experiment and its overrides."""
    schema = yaml.safe_load(SCHEMA.read_text())
    sections = {
        (): schema,
        ("data",): schema["properties"]["data"],
        ("claims",): schema["properties"]["claims"],
    }
    experiment = _resolve(schema, schema["properties"]["experiments"]["items"])
    sections[("experiments", 0)] = experiment
    sections[("experiments", 0, "overrides")] = experiment["properties"]["overrides"]
    for parts, section in sections.items():
        section = _resolve(schema, section)
        for key, node in section.get("properties", {}).items():
            if key in ("metrics", "experiments", "data", "claims", "overrides", "figures"):
                continue  # sections walked on their own (figures: grid names, checked later)
            for value, rule in _violations(schema, node):
                yield (*parts, key), value, rule


@pytest.mark.parametrize(("parts", "value", "rule"), list(_schema_cases()))
def test_every_schema_rule_breaks_with_one_line_naming_the_key_and_the_fix(parts, value, rule):
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["experiments"] = [config["experiments"][0]]
    config["experiments"][0].setdefault("overrides", {})
    target = config
    for part in parts[:-1]:
        target = target.setdefault(part, {}) if isinstance(part, str) else target[part]
    target[parts[-1]] = value
    with pytest.raises(ConfigSchemaError) as caught:
        validate_config(config, SCHEMA)
    message = str(caught.value)
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts).lstrip(".")
    assert message.startswith(f"config {path}"), (rule, message)
    assert "\n" not in message and "; " in message, message


def test_nan_and_infinite_settings_are_refused_when_the_workflow_is_planned():
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["metrics"]["hessian"]["tol"] = float("nan")
    with pytest.raises(ConfigSchemaError, match=r"^config metrics\.hessian\.tol: nan is not a"):
        validate_config(config, SCHEMA)
    config["metrics"]["hessian"]["tol"] = 0.01
    config["claims"]["flatness_rise"] = float("inf")
    with pytest.raises(ConfigSchemaError, match=r"^config claims\.flatness_rise: inf is not"):
        validate_config(config, SCHEMA)


def test_data_check_refuses_more_ways_than_a_split_has_classes(tmp_path, capsys):
    """The workflow's check_data job passes the most ways its experiments ask for: a copy whose
    test split holds fewer classes fails there, before any training, with one line."""
    from fake_datasets import write_miniimagenet_csv

    root = write_miniimagenet_csv(tmp_path / "mini", classes_per_split=(3, 2, 2), images=2)
    inspect = ["data", "inspect", "--dataset", "miniimagenet", "--path", str(root)]
    assert main([*inspect, "--ways", "2"]) == 0
    capsys.readouterr()
    assert main([*inspect, "--ways", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "test split has 2 classes but the config asks for 3-way tasks" in err


def test_the_workflow_checks_real_data_for_its_largest_ways(tmp_path):
    from workflow_copy import copy_workflow

    directory = copy_workflow(tmp_path / "wf")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "results/data/omniglot.check.json",
            "-n",
            "-p",
            "--cores",
            "1",
            "--configfile",
            "workflow/presets/paper.yaml",
        ],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "--ways 20" in output
