"""Adam and SGD for the learners: torch.optim's arithmetic, without importing torch._dynamo.

The first call into any ``torch.optim`` optimizer imports ``torch._dynamo`` (1.35 s on the
project's 2-core CPU machine: as long as importing torch itself), once per training job. These
two classes do what ``torch.optim.Adam`` and ``torch.optim.SGD`` do with their default options
(no weight decay, AMSGrad, momentum or maximize), operation for operation as torch's
single-tensor path, so they give the same bytes on CPU (tests compare them step by step). Their
``state_dict`` has torch's layout, so a checkpoint written by either resumes with either.
On CUDA, torch would take its multi-tensor (``foreach``) path; these stay per tensor, which
costs a few kernel launches per meta-update.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor


class OptimizerStateError(ValueError):
    """A saved optimizer state that does not fit the optimizer or its parameters."""


class Optimizer:
    """One parameter group, updated in place by :meth:`step` from each parameter's ``grad``."""

    # torch.optim's options of this optimizer, in its order, with the only values supported.
    fixed_options: ClassVar[dict[str, Any]] = {}

    def __init__(self, params: Iterable[Tensor], options: dict[str, Any]) -> None:
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        self.param_groups: list[dict[str, Any]] = [{**options, "params": params}]
        self.state: dict[Tensor, dict[str, Tensor]] = {}

    @property
    def params(self) -> list[Tensor]:
        """The optimized tensors."""
        return self.param_groups[0]["params"]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget every parameter's gradient (``set_to_none=False``: set it to zeros)."""
        for param in self.params:
            if param.grad is None:
                continue
            if set_to_none:
                param.grad = None
            else:
                param.grad.detach_().zero_()

    def step(self) -> None:
        """One update of every parameter that has a gradient."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """``{"state": {index: {...}}, "param_groups": [...]}``, as torch.optim writes it."""
        index = {id(param): i for i, param in enumerate(self.params)}
        group = {key: value for key, value in self.param_groups[0].items() if key != "params"}
        group["params"] = list(range(len(self.params)))
        state = {index[id(param)]: dict(entry) for param, entry in self.state.items()}
        return {"state": dict(sorted(state.items())), "param_groups": [group]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Take a :meth:`state_dict` (this class's or torch.optim's) for the same parameters."""
        groups = state_dict.get("param_groups", [])
        if len(groups) != 1 or len(groups[0].get("params", ())) != len(self.params):
            raise OptimizerStateError(
                f"saved optimizer state has {len(groups)} parameter group(s) of "
                f"{[len(g.get('params', ())) for g in groups]} tensors; this optimizer has one "
                f"of {len(self.params)}: the checkpoint belongs to another model"
            )
        saved = groups[0]
        for key, value in self.fixed_options.items():
            if key in saved and _normalized(saved[key]) != _normalized(value):
                raise OptimizerStateError(
                    f"saved optimizer state has {key}={saved[key]!r}; only {value!r} is supported"
                )
        options = {key: saved[key] for key in self.param_groups[0] if key in saved}
        options.pop("params", None)
        self.param_groups[0].update(options)
        position = {index: i for i, index in enumerate(saved["params"])}
        self.state = {}
        for index, entry in state_dict.get("state", {}).items():
            param = self.params[position[int(index)]]
            self.state[param] = {
                key: _state_tensor(key, value, param) for key, value in entry.items()
            }


def _normalized(value: Any) -> Any:
    return list(value) if isinstance(value, tuple | list) else value


def _state_tensor(key: str, value: Any, param: Tensor) -> Tensor:
    """A saved state entry as torch.optim keeps it: ``step`` a float32 scalar on the CPU, the
    rest like ``param``."""
    tensor = torch.as_tensor(value)
    if key == "step":
        return tensor.detach().to(device="cpu", dtype=torch.float32).clone()
    return tensor.detach().to(device=param.device, dtype=param.dtype).clone()


class Adam(Optimizer):
    """``torch.optim.Adam(params, lr, betas, eps)`` with its other options at their defaults."""

    fixed_options: ClassVar[dict[str, Any]] = {
        "weight_decay": 0,
        "amsgrad": False,
        "maximize": False,
        "foreach": None,
        "capturable": False,
        "differentiable": False,
        "fused": None,
        "decoupled_weight_decay": False,
    }

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        if lr < 0.0 or eps < 0.0 or not all(0.0 <= beta < 1.0 for beta in betas):
            raise ValueError(f"invalid Adam settings: lr={lr}, betas={betas}, eps={eps}")
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, **self.fixed_options})

    @torch.no_grad()
    def step(self) -> None:
        group = self.param_groups[0]
        lr, eps = float(group["lr"]), float(group["eps"])
        beta1, beta2 = (float(beta) for beta in group["betas"])
        params = [param for param in self.params if param.grad is not None]
        if not params:
            return
        states = [self._adam_state(param) for param in params]
        counts = [state["step"] for state in states]
        for count in counts:
            count += 1
        at_step: dict[float, list[int]] = {}  # several counts where parameters skipped steps
        for index, count in enumerate(counts):
            at_step.setdefault(count.item(), []).append(index)
        for step, indices in at_step.items():
            self._update(
                [params[i] for i in indices],
                [states[i] for i in indices],
                step,
                lr,
                beta1,
                beta2,
                eps,
            )

    def _adam_state(self, param: Tensor) -> dict[str, Tensor]:
        state = self.state.get(param)
        if state is None:
            state = self.state[param] = {
                "step": torch.tensor(0.0, dtype=torch.float32),
                "exp_avg": torch.zeros_like(param, memory_format=torch.preserve_format),
                "exp_avg_sq": torch.zeros_like(param, memory_format=torch.preserve_format),
            }
        return state

    @staticmethod
    def _update(
        params: list[Tensor],
        states: list[dict[str, Tensor]],
        step: float,
        lr: float,
        beta1: float,
        beta2: float,
        eps: float,
    ) -> None:
        """Adam's update of ``params`` at one step count, each operation over all of them at
        once (``torch._foreach_*``: the same element arithmetic as one tensor at a time)."""
        grads = [param.grad for param in params]
        exp_avgs = [state["exp_avg"] for state in states]
        exp_avg_sqs = [state["exp_avg_sq"] for state in states]
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
        step_size = lr / (1 - beta1**step)
        bias_correction2_sqrt = (1 - beta2**step) ** 0.5
        denominators = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denominators, bias_correction2_sqrt)
        torch._foreach_add_(denominators, eps)
        torch._foreach_addcdiv_(params, exp_avgs, denominators, value=-step_size)


class SGD(Optimizer):
    """``torch.optim.SGD(params, lr)``: θ ← θ − lr·grad, no momentum, no state."""

    fixed_options: ClassVar[dict[str, Any]] = {
        "momentum": 0,
        "dampening": 0,
        "weight_decay": 0,
        "nesterov": False,
        "maximize": False,
        "foreach": None,
        "differentiable": False,
        "fused": None,
    }

    def __init__(self, params: Iterable[Tensor], lr: float = 1e-3) -> None:
        if lr < 0.0:
            raise ValueError(f"invalid SGD learning rate: {lr}")
        super().__init__(params, {"lr": lr, **self.fixed_options})

    @torch.no_grad()
    def step(self) -> None:
        lr = float(self.param_groups[0]["lr"])
        for param in self.params:
            if param.grad is not None:
                param.add_(param.grad, alpha=-lr)
