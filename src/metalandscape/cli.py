"""The ``metalandscape`` command: parse, call the package, report. No science lives here."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

import yaml

from metalandscape import __version__
from metalandscape.algorithms import HEAD_MODES

log = logging.getLogger("metalandscape")


class UsageError(ValueError):
    """A bad command-line argument."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with a usage error reported as one line (and exit code 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_integer(text: str) -> int:
    """The argument type of ``--threads`` and ``--workers``: an integer >= 1."""
    try:
        threads = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if threads < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return threads


# YAML 1.1 (PyYAML) reads 1e-3 and 5E+2 as text: a float needs a dot there. YAML 1.2 reads both
# as numbers, and so does ``--set``.
_EXPONENT_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _parse_value(text: str) -> Any:
    """``--set key=value`` values are YAML scalars or lists (``[2, 3]``, ``1e-3``, ``maml``)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str) and _EXPONENT_NUMBER.fullmatch(value.strip()):
        return float(value)
    return value


def run_config_from_arguments(config_file: str | None, settings: Sequence[str]) -> dict[str, Any]:
    """Merge a YAML/JSON run-config file and ``key=value`` overrides into one dict."""
    raw: dict[str, Any] = {}
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise UsageError(f"run config file {path} not found")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as error:
            raise UsageError(f"run config file {path} is not valid YAML: {error}") from None
        if not isinstance(loaded, dict):
            raise UsageError(f"run config file {path} must hold a mapping of keys to values")
        raw.update(loaded)
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--set expects key=value, got {item!r}")
        raw[key.strip()] = _parse_value(value)
    return raw


def _command_data_fontglot(args: argparse.Namespace) -> int:
    from metalandscape.data.fontglot import build_fontglot, describe_fontglot

    path = build_fontglot(
        args.out,
        seed=args.seed,
        classes=args.classes,
        workers=args.workers,
        progress=not args.quiet,
    )
    print(json.dumps(describe_fontglot(path), indent=2, default=str))
    return 0


def _command_data_inspect(args: argparse.Namespace) -> int:
    from metalandscape.data import DataOptions
    from metalandscape.experiment import load_class_images

    if args.dataset == "fontglot" and Path(args.path).is_file():
        from metalandscape.data.fontglot import describe_fontglot

        print(json.dumps(describe_fontglot(args.path), indent=2, default=str))
    if args.dataset == "omniglot":
        from metalandscape.data.omniglot import find_omniglot_layout

        print(json.dumps(find_omniglot_layout(args.path).describe(), indent=2))
    options = DataOptions(
        resize=args.resize,
        image_size=tuple(args.image_size) if args.image_size else None,  # type: ignore[arg-type]
        image_channels=args.channels,
        omniglot_proportional_split=args.omniglot_proportional_split,
    )
    splits = load_class_images(args.dataset, str(args.path), options)
    summary = {
        split: {"classes": data.images.shape[0], "image_shape": list(data.images.shape[1:])}
        for split, data in splits.items()
    }
    print(json.dumps(summary, indent=2))
    for split in ("train", "test"):
        if args.ways is not None and split in summary and summary[split]["classes"] < args.ways:
            raise UsageError(
                f"{args.path}: its {split} split has {summary[split]['classes']} classes but the "
                f"config asks for {args.ways}-way tasks; lower the experiment's ways or use a "
                "fuller copy of the data set"
            )
    return 0


def _command_import(args: argparse.Namespace) -> int:
    from metalandscape.importing import (
        import_run,
        parse_checkpoint_argument,
        parse_rename,
    )

    values = run_config_from_arguments(args.config, args.set)
    checkpoints = [parse_checkpoint_argument(text) for text in args.checkpoint]
    renames = [parse_rename(text) for text in args.rename]
    path = import_run(values, checkpoints, args.out, renames=renames, drops=args.drop)
    log.info("imported %d checkpoints into %s", len(checkpoints), path)
    return 0


def _add_run_config_options(parser: argparse.ArgumentParser, set_help: str) -> None:
    """``--config FILE`` and repeatable ``--set KEY=VALUE``: a run's config keys."""
    parser.add_argument("--config", help="YAML/JSON file with the run's config keys")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=set_help)


def _add_import_options(command: argparse.ArgumentParser) -> None:
    """Options of ``import``."""
    _add_run_config_options(
        command,
        "a run config key (repeatable; metalandscape train --list-config): dataset, "
        "algorithm, n_way, k_shot, seed, model, model_settings, inner_steps, inner_step_size, ...",
    )
    command.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        required=True,
        metavar="ITERATION=FILE",
        help="one checkpoint: the meta-iterations done and its state_dict (.pt/.pth, read with "
        "torch.load(weights_only=True)) or .safetensors file; repeat in training order",
    )
    command.add_argument(
        "--rename",
        action="append",
        default=[],
        metavar="OLD=NEW",
        help="rename tensors whose name starts with OLD to start with NEW (first rule wins; "
        "docs/extending.md has learn2learn's and torchmeta's Conv-4 rules)",
    )
    command.add_argument(
        "--drop",
        action="append",
        default=[],
        metavar="REGEX",
        help="leave out tensors whose original name matches (BatchNorm buffers, pre-BN biases)",
    )
    command.add_argument("--out", required=True, help="run file (.h5) to write")


def _command_train(args: argparse.Namespace) -> int:
    from metalandscape.config import format_config_keys, resolve_run_config

    if args.list_config:
        print(format_config_keys())
        return 0
    if args.list_models:
        from metalandscape.models.base import format_models

        print(format_models())
        return 0
    if not args.out:
        raise UsageError("train needs --out RUN.h5 (or --list-config, --list-models)")
    seeds = args.seeds or []
    if seeds and len(seeds) != len(args.out):
        raise UsageError(
            f"train --seeds names {len(seeds)} seeds but --out {len(args.out)} files; give one "
            "--out per seed, in the same order"
        )
    if not seeds and len(args.out) > 1:
        raise UsageError("train takes one --out, or one per seed with --seeds")
    if args.threads < 1:
        raise UsageError(f"--threads must be at least 1 (got {args.threads})")
    # The config is checked before torch loads: its errors appear at once.
    settings = run_config_from_arguments(args.config, args.set)
    configs = [resolve_run_config({**settings, "seed": seed}) for seed in seeds] or [
        resolve_run_config(settings)
    ]
    from metalandscape.devices import keep_freed_memory, resolve_device, set_threads
    from metalandscape.gpu_lease import lease_for_device
    from metalandscape.training import train_run, train_runs_in_lockstep

    lease_for_device(args.device)  # before anything initialises CUDA; held until exit
    set_threads(args.threads)
    keep_freed_memory()
    device = resolve_device(args.device)
    for config, out in zip(configs, args.out, strict=True):
        log.info("training %s on %s: %s", out, device, config.to_json())
    if seeds:
        paths = train_runs_in_lockstep(
            configs,
            args.out,
            device=device,
            progress=not args.quiet,
            stop_after_epoch=args.stop_after_epoch,
        )
    else:
        paths = [
            train_run(
                configs[0],
                args.out[0],
                device=device,
                progress=not args.quiet,
                stop_after_epoch=args.stop_after_epoch,
            )
        ]
    for path in paths:
        log.info("wrote %s", path)
    return 0


def metric_settings_from_arguments(
    settings_json: str | None, settings: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """``{metric: {key: value}}`` from a JSON object and ``metric.key=value`` overrides."""
    merged: dict[str, dict[str, Any]] = {}
    if settings_json:
        try:
            loaded = json.loads(settings_json)
        except json.JSONDecodeError as error:
            raise UsageError(f"--settings-json is not valid JSON: {error}") from None
        if not isinstance(loaded, dict) or not all(isinstance(v, dict) for v in loaded.values()):
            raise UsageError("--settings-json must be an object of {metric: {key: value}}")
        merged.update({name: dict(values) for name, values in loaded.items()})
    for item in settings:
        key, sep, value = item.partition("=")
        metric, dot, setting = key.partition(".")
        if not sep or not dot or not metric or not setting:
            raise UsageError(f"--set expects metric.key=value, got {item!r}")
        merged.setdefault(metric, {})[setting] = _parse_value(value)
    return merged


def _command_metrics(args: argparse.Namespace) -> int:
    from metalandscape.devices import keep_freed_memory, resolve_device, set_threads
    from metalandscape.metrics.base import available_metrics, make_metric
    from metalandscape.metrics.evaluate import evaluate, write_netcdf

    if args.list:
        for name, cls in sorted(available_metrics().items()):
            print(f"{name}: {cls.description}")
        return 0
    if not args.checkpoint or not args.epoch or not args.metric:
        raise UsageError("metrics needs --checkpoint, --epoch and --metric (or --list)")
    if args.out and len(args.metric) > 1:
        raise UsageError("--out takes one metric; use --out-dir for several")
    if not args.out and not args.out_dir:
        raise UsageError("metrics needs --out FILE.nc or --out-dir DIR")
    from metalandscape.gpu_lease import lease_for_device

    lease_for_device(args.device)  # before anything initialises CUDA; held until exit
    set_threads(args.threads)
    keep_freed_memory()
    device = resolve_device(args.device)
    settings = metric_settings_from_arguments(args.settings_json, args.set)
    unknown = sorted(set(settings) - set(args.metric))
    if unknown:
        raise UsageError(f"settings given for metrics not asked for: {unknown}")
    metrics = [make_metric(name, settings.get(name)) for name in args.metric]
    results = evaluate(
        args.checkpoint,
        args.epoch,
        metrics,
        device=device,
        evaluation_seed=args.evaluation_seed,
        head=args.evaluation_head,
        progress=not args.quiet,
    )
    report_metric_values(results)
    for name, dataset in results.items():
        path = Path(args.out) if args.out else Path(args.out_dir) / f"{name}.nc"
        write_netcdf(dataset, path)
        log.info("wrote %s", path)
    return 0


def report_metric_values(results: dict[str, Any]) -> None:
    """Log one line per measured epoch with every metric's scalar summaries (terminal and log)."""
    from metalandscape.metrics.report import epoch_lines

    for line in epoch_lines(results):
        log.info("%s", line)


def _command_aggregate(args: argparse.Namespace) -> int:
    from metalandscape.aggregate import command_aggregate

    return command_aggregate(args)


def _command_plan(args: argparse.Namespace) -> int:
    from metalandscape.plan import command_plan

    return command_plan(args)


def _command_claims(args: argparse.Namespace) -> int:
    import xarray as xr

    from metalandscape.claims import (
        Thresholds,
        check_claims,
        claims_markdown,
        sharpness_table,
        window_sensitivity,
        windows_markdown,
    )

    thresholds = Thresholds.from_mapping(json.loads(args.thresholds_json or "{}"))
    datasets = []
    for path in args.input:
        if not Path(path).is_file():
            raise UsageError(f"aggregated Dataset {path} not found; run the aggregate rule first")
        with xr.open_dataset(path, engine="h5netcdf") as handle:
            datasets.append(handle.load())
    table = check_claims(datasets, thresholds)
    sharpness = sharpness_table(datasets)
    markdown = claims_markdown(table, args.config_name, thresholds, sharpness=sharpness)
    _write_table(table, args.out_csv, args.out_md, markdown)
    log.info("%d claim rows: %s", len(table), table["verdict"].value_counts().to_dict())
    if args.windows_csv or args.windows_md or args.windows_figure:
        windows = window_sensitivity(datasets, thresholds)
        _write_table(
            windows, args.windows_csv, args.windows_md, windows_markdown(windows, thresholds)
        )
        if args.windows_figure:
            from metalandscape.figures.windows import draw_windows

            draw_windows(windows, thresholds.window.from_iteration, args.windows_figure)
        starts = sorted(set(windows["start"])) if not windows.empty else []
        log.info("window sensitivity: %d rows over starts %s", len(windows), starts)
    if args.interventions_csv or args.interventions_md or args.interventions_figure:
        from metalandscape.interventions import intervention_table, interventions_markdown

        interventions = intervention_table(datasets, thresholds)
        _write_table(
            interventions,
            args.interventions_csv,
            args.interventions_md,
            interventions_markdown(interventions, thresholds),
        )
        if args.interventions_figure:
            if interventions.empty:
                raise UsageError(
                    "no intervention run (regularized MAML, Sharp-MAML) has a MAML run of the "
                    "same setting to pair with; drop --interventions-figure"
                )
            from metalandscape.figures.interventions import draw_interventions

            draw_interventions(interventions, args.interventions_figure)
        log.info("interventions: %d rows", len(interventions))
    return 0


def _write_table(table: Any, csv_path: str | None, md_path: str | None, markdown: str) -> None:
    """``table`` as CSV and its Markdown, each whole or not at all, where a path is given."""
    from metalandscape.atomic import atomic_output

    if csv_path:
        with atomic_output(csv_path) as temporary:
            table.to_csv(temporary, index=False)
    if md_path:
        with atomic_output(md_path) as temporary:
            temporary.write_text(markdown)


def _subcommand(
    commands: Any, name: str, help: str, example: str, parents: Sequence[argparse.ArgumentParser]
) -> argparse.ArgumentParser:
    """A subcommand whose ``--help`` shows its description and an example."""
    return commands.add_parser(
        name,
        help=help,
        description=help[0].upper() + help[1:] + ".",
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=list(parents),
    )


def _add_device_options(parser: argparse.ArgumentParser) -> None:
    """``--device`` and ``--threads``, shared by the commands that run PyTorch."""
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    parser.add_argument(
        "--threads", type=positive_integer, default=1, help="PyTorch threads (default 1)"
    )


def _add_flag(parser: argparse.ArgumentParser, option: str, help: str) -> None:
    """An on/off option (``store_true``)."""
    parser.add_argument(option, action="store_true", help=help)


def _add_fontglot_options(fontglot: argparse.ArgumentParser) -> None:
    """Options of ``data fontglot``."""
    fontglot.add_argument("--out", required=True, help="output .npz path")
    fontglot.add_argument(
        "--seed", type=int, default=0, help="seed of the glyph shapes and their noise (default 0)"
    )
    fontglot.add_argument(
        "--classes",
        type=positive_integer,
        default=1623,
        help="number of character classes, Omniglot's 1623 by default",
    )
    fontglot.add_argument(
        "--workers", type=positive_integer, default=2, help="processes (default 2)"
    )


def _add_inspect_options(inspect: argparse.ArgumentParser) -> None:
    """Options of ``data inspect``."""
    from metalandscape.data import DATASET_REGISTRY

    inspect.add_argument(
        "--dataset",
        required=True,
        choices=[name for name, spec in DATASET_REGISTRY.items() if spec.needs_files],
        help="which data set layout to read",
    )
    inspect.add_argument(
        "--image-size",
        type=positive_integer,
        nargs=2,
        metavar=("HEIGHT", "WIDTH"),
        help="class folders: resize every image to this size (default: keep their size)",
    )
    inspect.add_argument(
        "--channels",
        default="auto",
        choices=["auto", "grey", "rgb"],
        help="class folders: grey, rgb or auto (default)",
    )
    inspect.add_argument("--path", required=True, help="the data set's .npz file or folder")
    inspect.add_argument(
        "--ways",
        type=int,
        default=None,
        help="refuse (exit 2) when the train or test split has fewer classes than this",
    )
    inspect.add_argument(
        "--resize",
        default="lanczos",
        choices=["lanczos", "nearest"],
        help="image resampling filter (default lanczos)",
    )
    _add_flag(
        inspect,
        "--omniglot-proportional-split",
        "split an incomplete Omniglot in Finn's proportions instead of refusing it",
    )


def _add_train_options(train: argparse.ArgumentParser) -> None:
    """Options of ``train``."""
    _add_run_config_options(
        train, "set a config key (repeatable; overrides --config; keys: --list-config)"
    )
    _add_flag(
        train,
        "--list-config",
        "print every config key with its type, default and meaning, then exit",
    )
    _add_flag(
        train,
        "--list-models",
        "print every registered model (key model) with its kind and settings, then exit",
    )
    train.add_argument(
        "--out",
        action="append",
        default=[],
        help="run file (.h5) to write; required unless --list-config; with --seeds one per seed",
    )
    train.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        help="train these seeds of the config, one --out each, in lockstep where the algorithm "
        "allows (metalandscape.lockstep), else one after the other",
    )
    _add_device_options(train)
    train.add_argument(
        "--stop-after-epoch", type=int, default=None, help="stop (resumable) after this epoch"
    )


def _add_metrics_options(metrics: argparse.ArgumentParser) -> None:
    """Options of ``metrics``."""
    _add_flag(metrics, "--list", "list the available metrics")
    metrics.add_argument("--checkpoint", help="run file (.h5) written by train")
    metrics.add_argument("--epoch", type=int, action="append", help="epoch (repeatable)")
    metrics.add_argument("--metric", action="append", help="metric name (repeatable; see --list)")
    metrics.add_argument("--out", help="output .nc (one metric, every epoch)")
    metrics.add_argument("--out-dir", help="writes DIR/<metric>.nc, every epoch in each")
    metrics.add_argument(
        "--settings-json", help='metric settings as JSON, e.g. {"hessian": {"tasks": 60}}'
    )
    metrics.add_argument(
        "--set", action="append", default=[], metavar="METRIC.KEY=VALUE", help="a metric setting"
    )
    metrics.add_argument("--evaluation-seed", type=int, default=0, help="seed of the task set")
    metrics.add_argument(
        "--evaluation-head",
        choices=HEAD_MODES,
        default="per_task",
        help="the finetune baseline's evaluation head: a fresh seeded head per task (default) "
        "or one head shared by all tasks",
    )
    _add_device_options(metrics)


def _add_claims_options(claims: argparse.ArgumentParser) -> None:
    """Options of ``claims``."""
    claims.add_argument(
        "--input", action="append", required=True, help="aggregated .nc (repeatable)"
    )
    claims.add_argument(
        "--thresholds-json", help="thresholds as JSON, e.g. the config's claims: section"
    )
    claims.add_argument("--out-csv", required=True, help="claims table .csv to write")
    claims.add_argument("--out-md", required=True, help="claims table Markdown to write")
    claims.add_argument("--config-name", default="", help="named in the Markdown header")
    claims.add_argument(
        "--windows-csv", help="window-sensitivity table .csv to write (each window start)"
    )
    claims.add_argument("--windows-md", help="window-sensitivity table Markdown to write")
    claims.add_argument("--interventions-csv", help="interventions table .csv to write")
    claims.add_argument("--interventions-md", help="interventions table Markdown to write")
    claims.add_argument(
        "--interventions-figure", help="interventions figure .pdf to write (a .png beside it)"
    )
    claims.add_argument(
        "--windows-figure", help="window-sensitivity figure .pdf to write (a .png beside it)"
    )


def _add_aggregate_options(aggregate: argparse.ArgumentParser) -> None:
    """Options of ``aggregate``."""
    aggregate.add_argument(
        "--inputs", nargs="+", action="extend", metavar="FILE", help="metric .nc files"
    )
    aggregate.add_argument(
        "--inputs-from",
        action="append",
        metavar="LIST.txt",
        help="a text file naming metric .nc files, one per line (repeatable)",
    )
    aggregate.add_argument("--out", required=True, help="aggregate .nc to write")
    aggregate.add_argument("--csv", help="tidy table .csv to write (default: --out with .csv)")
    _add_flag(
        aggregate,
        "--scalars-only",
        "leave out per-task variables (much smaller for large grids)",
    )


def _add_plan_options(plan: argparse.ArgumentParser) -> None:
    """Options of ``plan``."""
    plan.add_argument(
        "--configfile",
        action="append",
        default=[],
        metavar="PRESET.yaml",
        help="a preset merged over config.yaml, as snakemake --configfile does (repeatable)",
    )
    plan.add_argument(
        "--base-config",
        default="config.yaml",
        help="the workflow's config.yaml (default: config.yaml here)",
    )
    plan.add_argument(
        "--probe-iterations",
        type=positive_integer,
        default=3,
        help="meta-iterations timed per distinct training setting (default 3)",
    )
    plan.add_argument(
        "--probe-tasks",
        type=positive_integer,
        default=4,
        help="evaluation tasks per metric in the probe (and twice as many), extrapolated to "
        "the config's (default 4)",
    )
    plan.add_argument(
        "--probe-limit",
        type=positive_integer,
        metavar="N",
        help="probe at most N settings: each class (data set, algorithm, inner steps, ...) gets "
        "its largest task, then its smallest, ...; the others are interpolated in examples per "
        "task (default: probe every distinct setting)",
    )
    _add_flag(plan, "--no-probe", "list the jobs only, without timing anything")
    _add_device_options(plan)


class _Command(NamedTuple):
    """A subcommand that takes the common options."""

    name: str
    help: str
    example: str
    add_options: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace], int]


_DATA_COMMANDS = (
    _Command(
        "fontglot",
        "generate the embedded Omniglot-like glyph data set (.npz)",
        "metalandscape data fontglot --out results/data/fontglot.npz --workers 2",
        _add_fontglot_options,
        _command_data_fontglot,
    ),
    _Command(
        "inspect",
        "load a data set and summarise its splits",
        "metalandscape data inspect --dataset omniglot --path data/omniglot",
        _add_inspect_options,
        _command_data_inspect,
    ),
)
_COMMANDS = (
    _Command(
        "train",
        "train one run and write its HDF5 checkpoint file (one checkpoint per epoch)",
        "metalandscape train --set dataset=sinusoid --set algorithm=maml --set epochs=5 "
        "--out results/runs/sine.h5\n  metalandscape train --list-config",
        _add_train_options,
        _command_train,
    ),
    _Command(
        "import",
        "turn per-checkpoint weight files trained elsewhere into a run file to measure",
        "metalandscape import --set dataset=fontglot --set algorithm=maml --set n_way=5 "
        "--set model_settings='{filters: 32}' --checkpoint 0=e0.pt --checkpoint 500=e1.pt "
        "--rename classifier.=head. --drop 'running_|num_batches_tracked' --out results/runs/mine.h5",
        _add_import_options,
        _command_import,
    ),
    _Command(
        "metrics",
        "measure checkpoint epochs with metric plugins and print each value per epoch",
        "metalandscape metrics --checkpoint results/runs/sine.h5 --metric accuracy "
        "--epoch 0 --epoch 5 --out-dir results/metrics/sine",
        _add_metrics_options,
        _command_metrics,
    ),
    _Command(
        "claims",
        "check the paper's claims on aggregated Datasets",
        "metalandscape claims --input results/aggregate/sinusoid.nc "
        "--out-csv results/claims.csv --out-md results/claims.md",
        _add_claims_options,
        _command_claims,
    ),
    _Command(
        "aggregate",
        "combine metric .nc files into one aggregate .nc and a tidy .csv",
        "metalandscape aggregate --inputs-from results/aggregate/sinusoid.inputs "
        "--out results/aggregate/sinusoid.nc",
        _add_aggregate_options,
        _command_aggregate,
    ),
    _Command(
        "plan",
        "list the workflow's jobs and estimate their time from a short probe on this device",
        "metalandscape plan --configfile workflow/presets/paper.yaml --probe-iterations 3",
        _add_plan_options,
        _command_plan,
    ),
)


def _add_commands(
    commands: Any, common: argparse.ArgumentParser, table: Sequence[_Command]
) -> None:
    """One subcommand per row of ``table``, each with the ``common`` options and its handler."""
    for name, help, example, add_options, handler in table:
        command = _subcommand(commands, name, help, example, [common])
        add_options(command)
        command.set_defaults(handler=handler)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = ArgumentParser(
        prog="metalandscape",
        description="Loss-landscape study of gradient-based meta-learning (arXiv 1907.07287).",
        epilog="The Snakemake workflow calls these commands; 'metalandscape COMMAND --help' "
        "shows each one's options and an example.\nexample:\n"
        "  metalandscape plan --configfile workflow/presets/tiny.yaml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"metalandscape {__version__}")
    common = ArgumentParser(add_help=False)
    _add_flag(common, "--quiet", "no progress bars (log lines only)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    data = _subcommand(
        commands,
        "data",
        "build or inspect a data set",
        "metalandscape data fontglot --out results/data/fontglot.npz",
        [],
    )
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    _add_commands(data_commands, common, _DATA_COMMANDS)
    _add_commands(commands, common, _COMMANDS)

    from metalandscape.figures import add_figure_parser

    add_figure_parser(commands, common)
    return parser


# (module, exception) of every user-caused error; looked up only in modules a command loaded, so
# a light command (aggregate, figure, claims) never imports torch just to name its errors.
_USER_ERRORS = (
    ("metalandscape.config", "ConfigError"),
    ("metalandscape.data.tasks", "DataError"),
    ("metalandscape.checkpoints", "CheckpointError"),
    ("metalandscape.importing", "CheckpointImportError"),
    ("metalandscape.devices", "DeviceError"),
    ("metalandscape.training", "TrainingDiverged"),
    ("metalandscape.metrics.base", "MetricError"),
    ("metalandscape.claims", "ClaimsError"),
    ("metalandscape.aggregate", "AggregateError"),
    ("metalandscape.figures", "FigureError"),
    ("metalandscape.gpu_lease", "GpuLeaseError"),
    ("metalandscape.grid", "GridError"),
    ("metalandscape.plan", "PlanError"),
)


def _user_errors() -> tuple[type[BaseException], ...]:
    loaded = [
        getattr(sys.modules[module], name) for module, name in _USER_ERRORS if module in sys.modules
    ]
    return (UsageError, *loaded)


_OS_ERROR_FIXES = {
    errno.ENOSPC: "free space there and rerun",
    errno.EDQUOT: "free space (disk quota) and rerun",
    errno.EROFS: "that file system is read-only; choose another output path",
    errno.EACCES: "fix the permissions of that path or choose another one",
    errno.EPERM: "fix the permissions of that path or choose another one",
    errno.ENOENT: "check the path",
    errno.ENOTDIR: "check the path",
    errno.EISDIR: "check the path",
}
_HDF5_ERRNO = re.compile(r"errno = (\d+)")


def describe_os_error(error: OSError) -> str:
    """One line for a file-system error: what failed on which path, and the fix."""
    text = " ".join(str(error).split())[:300]
    code = error.errno
    if code is None:  # HDF5 (h5py) reports the system errno inside its message
        match = _HDF5_ERRNO.search(text)
        code = int(match[1]) if match else None
    reason = os.strerror(code) if code else text
    if error.filename:
        where = f" ({error.filename})"
    else:  # the message names the file, if anything does
        where = f" ({text})" if code and error.errno is None else ""
    fix = _OS_ERROR_FIXES.get(code or 0, "check the path and the file system")
    return f"{reason}{where}; {fix}"


#: Subcommands that log :func:`resource_use` when they finish: the workflow's heavy jobs.
RESOURCE_LOGGED_COMMANDS = ("data fontglot", "train", "metrics")


def resource_use() -> str:
    """``resources: cpu 12.3 s (user 11.9 s, sys 0.4 s), peak memory 512 MiB``: this process and
    its finished children so far, exact (Snakemake's benchmark files sample CPU time)."""
    import resource

    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    user, system = own.ru_utime + children.ru_utime, own.ru_stime + children.ru_stime
    kibibytes = max(own.ru_maxrss, children.ru_maxrss) / (1024 if sys.platform == "darwin" else 1)
    return (
        f"resources: cpu {user + system:.1f} s (user {user:.1f} s, sys {system:.1f} s), "
        f"peak memory {kibibytes / 1024:.0f} MiB"
    )


def _limit_library_threads(threads: int | None) -> None:
    """Cap BLAS/OpenMP threads before numpy or torch load them (one job per core)."""
    if threads and threads > 0:
        for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(variable, str(threads))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``metalandscape`` console script."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = build_parser().parse_args(argv)
    _limit_library_threads(getattr(args, "threads", None))
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        status = handler(args)
        command = " ".join(filter(None, (args.command, getattr(args, "data_command", None))))
        if command in RESOURCE_LOGGED_COMMANDS:
            log.info(resource_use())
        return status
    except _user_errors() as error:
        for line in getattr(error, "errors", None) or (str(error),):
            print(f"metalandscape {args.command}: error: {line}", file=sys.stderr)
        return 2
    except OSError as error:  # the file system refused: read-only, full, missing, no permission
        print(f"metalandscape {args.command}: error: {describe_os_error(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"metalandscape {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
