"""Gradient coherence as a cosine: mean cos(gᵢ, gⱼ) over task pairs i ≠ j, next to gᵢᵀgⱼ."""

from __future__ import annotations

import pytest
import torch

from metalandscape.data.sinusoid import SinusoidSource
from metalandscape.data.tasks import TaskSampler
from metalandscape.functional import flatten, gradient, parameters_of
from metalandscape.metrics.base import EvaluationContext, make_metric
from metalandscape.metrics.builtin import _cosines, off_diagonal_mean
from metalandscape.models import SinusoidMLP


def test_cosine_matrix_of_known_vectors():
    vectors = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0], [0.0, 0.0]], dtype=torch.float64)
    cosines = _cosines(vectors, vectors.norm(dim=1))
    half = 2**-0.5
    # (0,1) 0, (0,2) 1/√2, (1,2) 1/√2, every pair with the zero vector 0; 12 ordered pairs.
    assert off_diagonal_mean(cosines) == pytest.approx(2 * (2 * half) / 12)
    assert cosines[2, 2] == pytest.approx(1.0) and cosines[3, 3] == 0.0


def test_gradient_cosine_matches_a_hand_computation():
    torch.manual_seed(0)
    model = SinusoidMLP().double()
    sampler = TaskSampler(SinusoidSource(k_shot=5, target_points=5), seed=0)
    context = EvaluationContext(
        model, parameters_of(model), sampler, "regression", inner_steps=1, inner_step_size=0.05
    )
    count = 5
    gradients = [
        flatten(
            gradient(
                context.model,
                context.start_params,
                task.support_inputs.double(),
                task.support_labels.double(),
                "regression",
            )
        ).double()
        for task in context.tasks("test", count)
    ]
    pairs = [(i, j) for i in range(count) for j in range(count) if i != j]
    expected_cosine = sum(
        float(gradients[i] @ gradients[j] / (gradients[i].norm() * gradients[j].norm()))
        for i, j in pairs
    ) / len(pairs)
    expected_inner = sum(float(gradients[i] @ gradients[j]) for i, j in pairs) / len(pairs)
    measured = make_metric("gradient_coherence", {"tasks": count}).compute(context)
    assert measured["gradient_cosine"].values == pytest.approx(expected_cosine, rel=1e-9)
    assert measured["gradient_coherence"].values == pytest.approx(expected_inner, rel=1e-9)
    assert -1.0 <= float(measured["gradient_cosine"].values) <= 1.0
