"""From a :class:`RunConfig` to the objects a run needs: task source, model, meta-settings."""

from __future__ import annotations

from functools import cache

import torch
from torch import nn

from metalandscape.algorithms import load_algorithm
from metalandscape.algorithms.maml import MetaAlgorithm, MetaSettings
from metalandscape.config import ConfigError, RunConfig
from metalandscape.data.sinusoid import SinusoidSource
from metalandscape.data.tasks import ClassImages, ImageClassificationSource, TaskSource
from metalandscape.functional import Params, parameters_of
from metalandscape.models import Conv4, SinusoidMLP, initialize


@cache
def load_class_images(
    dataset: str, path: str, resize: str, proportional_split: bool = False
) -> dict[str, ClassImages]:
    """The per-split class images of a character or MiniImagenet data set (cached per process).

    ``proportional_split`` lets an incomplete Omniglot be split in Finn's proportions.
    """
    if dataset == "fontglot":
        from metalandscape.data.fontglot import load_fontglot

        return load_fontglot(path)
    if dataset == "omniglot":
        from metalandscape.data.omniglot import load_omniglot

        return load_omniglot(path, resize=resize, proportional_split=proportional_split)
    from metalandscape.data.miniimagenet import load_miniimagenet

    return load_miniimagenet(path)


def make_task_source(config: RunConfig) -> TaskSource:
    """The task source of the run's dataset, way and shot."""
    if config.dataset == "sinusoid":
        return SinusoidSource(
            k_shot=config.k_shot,
            target_points=config.query or 10,
            train_amplitude=config.train_amplitude,
            train_phase=config.train_phase,
            test_amplitude=config.test_amplitude,
            test_phase=config.test_phase,
        )
    assert config.data_path is not None and config.query is not None
    splits = load_class_images(
        config.dataset, config.data_path, config.resize, config.omniglot_proportional_split
    )
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
    """The run's network; its initial weights are drawn from ``torch.manual_seed(config.seed)``
    as ``config.initialization`` says.

    For training the algorithm decides the outputs (the finetune baseline: one per meta-train
    class); for evaluation (``for_training=False``) every network has the task's outputs.
    """
    outputs = source.output_size
    if for_training:
        outputs = load_algorithm(config.algorithm).output_size(config, source)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model: nn.Module
        if config.dataset == "sinusoid":
            model = SinusoidMLP(hidden=config.hidden_sizes)
        else:
            model = Conv4(
                source.input_shape,
                outputs,
                filters=config.filters or 64,
                use_max_pool=config.dataset == "miniimagenet",
            )
        return initialize(model, config.initialization)


def initial_params(model: nn.Module) -> Params:
    """θ0: the freshly built model's parameters."""
    return parameters_of(model)


def meta_settings(config: RunConfig) -> MetaSettings:
    """The meta-update settings of a MAML-family run."""
    algorithm = load_algorithm(config.algorithm)
    if not isinstance(algorithm, MetaAlgorithm):
        raise ValueError(f"algorithm {config.algorithm!r} has no meta-update settings")
    return algorithm.meta_settings(config)
