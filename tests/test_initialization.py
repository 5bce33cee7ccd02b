"""Weight initialization: PyTorch's default or Finn et al.'s Xavier/Glorot with zero biases."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from metalandscape.config import ConfigError, resolve_run_config
from metalandscape.experiment import initial_params, make_model
from metalandscape.models import Conv4, initialize


class _Source:
    input_shape = (1, 28, 28)
    output_size = 5


def _conv_model(initialization: str, seed: int = 0) -> nn.Module:
    config = resolve_run_config(
        {
            "dataset": "fontglot",
            "algorithm": "maml",
            "seed": seed,
            "filters": 32,
            "initialization": initialization,
        }
    )
    return make_model(config, _Source())  # type: ignore[arg-type]


def test_xavier_weights_have_glorot_uniform_statistics_and_zero_biases():
    model = _conv_model("xavier")
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(module.weight)
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            weight = module.weight.detach()
            assert weight.abs().max() <= bound
            # Uniform(−b, b): standard deviation b/√3; thousands of draws per convolution.
            if weight.numel() >= 1000:
                assert weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)
            if module.bias is not None:
                assert torch.count_nonzero(module.bias) == 0
    assert torch.count_nonzero(model.head.bias) == 0


def test_xavier_is_seeded_and_differs_from_pytorch_default():
    first, again, other = (initial_params(_conv_model("xavier", s)) for s in (0, 0, 1))
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["head.weight"], other["head.weight"])
    default = initial_params(_conv_model("pytorch"))
    assert not torch.equal(first["features.0.0.weight"], default["features.0.0.weight"])
    assert torch.count_nonzero(default["head.bias"]) > 0


def test_pytorch_default_is_unchanged_and_left_out_of_the_stored_config():
    config = resolve_run_config({"dataset": "fontglot", "algorithm": "maml", "filters": 32})
    assert config.initialization == "pytorch" and "initialization" not in config.to_dict()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        plain = Conv4((1, 28, 28), 5, filters=32)
    built = _conv_model("pytorch")
    assert all(torch.equal(a, b) for a, b in zip(plain.parameters(), built.parameters()))


def test_sinusoid_network_takes_xavier_too():
    torch.manual_seed(0)
    from metalandscape.models import SinusoidMLP

    model = initialize(SinusoidMLP(), "xavier")
    assert all(
        torch.count_nonzero(m.bias) == 0 for m in model.modules() if isinstance(m, nn.Linear)
    )


def test_unknown_initialization_names_the_key():
    with pytest.raises(ConfigError, match="'initialization' must be one of pytorch, xavier"):
        resolve_run_config({"dataset": "sinusoid", "algorithm": "maml", "initialization": "he"})
