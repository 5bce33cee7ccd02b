"""The finetune baseline (paper §3.2, A.3): ordinary supervised training, then MAML-style adaptation.

Training fits the network to all meta-train classes at once (one output per class) with Adam. At
meta-test the classification head is replaced by a fresh n-way layer with Xavier-uniform weights
and zero bias (the paper: "replaced by a layer … initialized to random values"). By default
(``head="per_task"``) evaluation task ``i`` gets its own head seeded by (evaluation seed, i), so
every run and epoch sees the same head for the same task; ``head="shared"`` gives every task the
one head seeded by the evaluation seed. All parameters then adapt like MAML's inner loop. A
regression network keeps its 1-output head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from metalandscape.algorithms import EvaluationStart, HeadMode
from metalandscape.algorithms._shared import AlgorithmBase, TrainedParameters, resolved_inner_loop
from metalandscape.data.tasks import TaskKind, TaskSource, task_rng
from metalandscape.functional import Params, forward, loss_from_outputs, score_from_outputs
from metalandscape.models import HEAD_PREFIX

if TYPE_CHECKING:
    from metalandscape.config import RunConfig


def replace_head(params: Params, n_way: int, seed: int) -> Params:
    """Body parameters of ``params`` and a new seeded Xavier-initialised ``n_way`` head."""
    weight = params[HEAD_PREFIX + "weight"]
    generator = torch.Generator().manual_seed(int(seed))
    new_weight = torch.empty(n_way, weight.shape[1], dtype=weight.dtype)
    nn.init.xavier_uniform_(new_weight, generator=generator)
    out = {name: value for name, value in params.items() if not name.startswith(HEAD_PREFIX)}
    out[HEAD_PREFIX + "weight"] = new_weight.to(weight.device)
    out[HEAD_PREFIX + "bias"] = torch.zeros(n_way, dtype=weight.dtype, device=weight.device)
    return out


def task_head_seed(evaluation_seed: int, task_index: int) -> int:
    """The seed of evaluation task ``task_index``'s head: a function of both, nothing else."""
    state = np.random.SeedSequence([int(evaluation_seed), int(task_index)]).generate_state(1)
    return int(state[0])


@dataclass(frozen=True)
class FinetuneSettings:
    """Supervised training (Adam at ``learning_rate``, batches of ``batch_size``) and the
    evaluation inner loop (``inner_steps`` steps of ``inner_step_size`` on every parameter)."""

    inner_steps: int
    inner_step_size: float
    learning_rate: float = 0.001
    batch_size: int | None = None

    def start_and_step_sizes(self, params: Params) -> tuple[Params, float]:
        """Evaluation adapts every parameter with MAML's inner loop (T steps of α)."""
        return params, self.inner_step_size


class SupervisedLearner(TrainedParameters):
    """Ordinary supervised training of the whole network with Adam; batch ``iteration`` is
    drawn from ``task_rng(seed, "train", iteration)`` of ``source``."""

    def __init__(
        self,
        model: nn.Module,
        params: Params,
        kind: TaskKind,
        settings: FinetuneSettings,
        *,
        source: TaskSource | None = None,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__(model, params, kind, settings.learning_rate, device)
        self.settings = settings
        self.source = source
        self.seed = seed

    def step(self, inputs: Tensor, labels: Tensor) -> tuple[float, float]:
        """One Adam step on a batch; returns (loss, accuracy or MSE)."""
        outputs = forward(self.model, self.params, inputs)
        loss = loss_from_outputs(outputs, labels, self.kind)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach()), float(score_from_outputs(outputs, labels, self.kind))

    def train_step(self, iteration: int) -> tuple[float, float]:
        """One Adam step on batch ``iteration``; returns (loss, accuracy or MSE)."""
        if self.source is None or self.settings.batch_size is None:
            raise ValueError("train_step needs the learner's source and a batch_size")
        inputs, labels = self.source.supervised_batch(  # type: ignore[attr-defined]
            task_rng(self.seed, "train", iteration), self.settings.batch_size
        )
        return self.step(inputs.to(self.device), labels.to(self.device))


@dataclass(frozen=True)
class FinetuneAlgorithm(AlgorithmBase):
    """Supervised pre-training on all meta-train classes; evaluation from a fresh head."""

    learner_type = SupervisedLearner

    def settings(self, config: RunConfig) -> FinetuneSettings:
        """The run's finetune learning rate and batch size, and its evaluation T and α."""
        steps, step_size = resolved_inner_loop(config)
        learning_rate, batch_size = config.finetune_learning_rate, config.finetune_batch_size
        return FinetuneSettings(steps, step_size, learning_rate, batch_size)

    def learner_arguments(self, config: RunConfig) -> tuple[()]:
        """None: the settings hold the learning rate."""
        return ()

    def batches(self, config: RunConfig, source: TaskSource) -> dict[str, Any]:
        """The run's supervised batches of all meta-train classes."""
        return {"source": source, "seed": config.seed}

    def output_size(self, config: RunConfig, source: TaskSource) -> int:
        """One output per meta-train class (classification), else the task's outputs."""
        if config.kind == "classification":
            return source.supervised_classes  # type: ignore[attr-defined]
        return source.output_size

    def evaluation_start(
        self, config: RunConfig, params: Params, evaluation_seed: int, head: HeadMode
    ) -> EvaluationStart:
        """The body with a fresh n-way head: one per task (``per_task``) or one for all."""
        if config.kind != "classification":
            return EvaluationStart(params)
        shared = replace_head(params, config.n_way, seed=evaluation_seed)
        if head == "shared":
            return EvaluationStart(shared)
        if head != "per_task":
            raise ValueError(f"head must be 'per_task' or 'shared', got {head!r}")

        def per_task(task_index: int) -> Params:
            seed = task_head_seed(evaluation_seed, task_index)
            return replace_head(params, config.n_way, seed=seed)

        return EvaluationStart(shared, per_task)


ALGORITHM = FinetuneAlgorithm()
