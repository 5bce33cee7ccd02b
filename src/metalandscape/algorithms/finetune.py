"""The finetune baseline (paper §3.2, A.3): ordinary supervised training, then MAML-style adaptation.

Training fits the network to all meta-train classes at once (one output per class) with Adam. At
meta-test the classification head is replaced by a fresh n-way layer with Xavier-uniform weights
and zero bias, drawn from a seed so every task of one evaluation starts from the same head; all
parameters then adapt like MAML's inner loop. A regression network keeps its 1-output head.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from metalandscape.data.tasks import TaskKind
from metalandscape.functional import Params, forward, loss_from_outputs, score_from_outputs
from metalandscape.models import HEAD_PREFIX


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


class SupervisedLearner:
    """Ordinary supervised training of the whole network with Adam."""

    def __init__(
        self, model: nn.Module, params: Params, kind: TaskKind, learning_rate: float
    ) -> None:
        self.model = model
        self.kind = kind
        self.params = {name: p.detach().clone().requires_grad_(True) for name, p in params.items()}
        self.optimizer = torch.optim.Adam(self.params.values(), lr=learning_rate)

    def step(self, inputs: Tensor, labels: Tensor) -> tuple[float, float]:
        """One Adam step on a batch; returns (loss, accuracy or MSE)."""
        outputs = forward(self.model, self.params, inputs)
        loss = loss_from_outputs(outputs, labels, self.kind)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach()), float(score_from_outputs(outputs, labels, self.kind))
