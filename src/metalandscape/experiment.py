"""From a :class:`RunConfig` to the objects a run needs: task source, model, meta-settings."""

from __future__ import annotations

import importlib
from functools import cache
from typing import Any

import torch
from torch import nn

from metalandscape.algorithms import load_algorithm
from metalandscape.algorithms.maml import MetaAlgorithm, MetaSettings
from metalandscape.config import ConfigError, RunConfig
from metalandscape.data import DATASET_REGISTRY, DataOptions
from metalandscape.data.tasks import ClassImages, DataError, ImageClassificationSource, TaskSource
from metalandscape.functional import Params, parameters_of
from metalandscape.models.base import ModelError, check_network, configured_model, model_class
from metalandscape.models.networks import initialize
from metalandscape.plugins import load_failure


@cache
def load_class_images(dataset: str, path: str, options: DataOptions) -> dict[str, ClassImages]:
    """The per-split class images of an image data set, read by its registered loader (cached
    per process)."""
    spec = DATASET_REGISTRY[dataset]
    if spec.loader is None:
        raise ValueError(f"data set {dataset!r} has no image files (it generates its tasks)")
    loader: Any = _import_object(spec.loader, dataset)
    return loader(path, options)


def _import_object(reference: str, dataset: str) -> Any:
    """The object ``module:attribute`` names (a data set's loader or source); one DataError
    line naming the data set when it cannot be imported."""
    module, _, attribute = reference.partition(":")
    try:
        return getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as error:
        raise DataError(
            f"data set {dataset!r}: its {reference} cannot be loaded ({load_failure(error)}); "
            "reinstall the package that registers it"
        ) from None


def make_task_source(config: RunConfig) -> TaskSource:
    """The task source of the run's dataset, way and shot."""
    spec = DATASET_REGISTRY[config.dataset]
    if spec.source is not None:
        return _import_object(spec.source, config.dataset)(config)
    assert config.data_path is not None and config.query is not None
    splits = load_class_images(config.dataset, config.data_path, config.data_options())
    if config.train_classes is not None:
        splits = dict(splits)
        train = splits["train"]
        if config.train_classes > len(train.class_names):
            raise ConfigError(
                f"config key 'train_classes' is {config.train_classes} but the meta-train split "
                f"has {len(train.class_names)} classes; lower it"
            )
        splits["train"] = ClassImages(
            train.images[: config.train_classes], train.class_names[: config.train_classes]
        )
    return ImageClassificationSource(
        splits=splits,
        n_way=config.n_way,
        k_shot=config.k_shot,
        query=config.query,
        rotation=config.rotation or "off",  # type: ignore[arg-type]
    )


def make_model(config: RunConfig, source: TaskSource, *, for_training: bool = True) -> nn.Module:
    """The run's network (its registered ``model``); its initial weights are drawn from
    ``torch.manual_seed(config.seed)`` as ``config.initialization`` says.

    For training the algorithm decides the outputs (the finetune baseline: one per meta-train
    class); for evaluation (``for_training=False``) every network has the task's outputs.
    A model whose kind (logits or predictions) is not the data set's, a bad model setting, or a
    network that breaks the plugin contract is a :class:`ConfigError` naming the key.
    """
    outputs = source.output_size
    if for_training:
        outputs = load_algorithm(config.algorithm).output_size(config, source)
    try:
        cls = model_class(config.model_name)
        if cls.kind != config.kind:
            raise ModelError(
                f"model {config.model_name!r} is a {cls.kind} model but {config.dataset} tasks "
                f"are {config.kind}; choose a {config.kind} model (config key 'model')"
            )
        plugin = configured_model(cls, {**cls.settings_from_run(config), **config.model_settings})
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            model = check_network(plugin, plugin.build(tuple(source.input_shape), outputs), outputs)
            return initialize(model, config.initialization)
    except ModelError as error:
        raise ConfigError(str(error)) from None


def initial_params(model: nn.Module) -> Params:
    """θ0: the freshly built model's parameters."""
    return parameters_of(model)


def meta_settings(config: RunConfig) -> MetaSettings:
    """The meta-update settings of a MAML-family run."""
    algorithm = load_algorithm(config.algorithm)
    if not isinstance(algorithm, MetaAlgorithm):
        raise ValueError(f"algorithm {config.algorithm!r} has no meta-update settings")
    return algorithm.meta_settings(config)
