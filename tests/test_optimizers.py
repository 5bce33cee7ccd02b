"""The learners' Adam and SGD: torch.optim's bytes and state_dict, without torch._dynamo."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from metalandscape.optimizers import SGD, Adam, OptimizerStateError


def parameters(dtype: torch.dtype) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    shapes = [(4, 3, 3, 3), (4,), (5, 4)]
    return [torch.randn(s, generator=generator, dtype=dtype).requires_grad_(True) for s in shapes]


def drive(optimizer, params, steps: int, seed: int, learning_rates=None) -> None:
    """``steps`` updates with seeded gradients (one parameter without a gradient at step 2)."""
    generator = torch.Generator().manual_seed(seed)
    for step in range(steps):
        if learning_rates is not None:
            optimizer.param_groups[0]["lr"] = learning_rates[step]
        for index, param in enumerate(params):
            gradient = (
                torch.randn(param.shape, generator=generator, dtype=param.dtype) * 10.0**index
            )
            param.grad = None if (step == 2 and index == 1) else gradient
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def same_bytes(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(x.detach().numpy().tobytes() == y.detach().numpy().tobytes() for x, y in zip(a, b))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_adam_takes_torch_adams_steps_byte_for_byte(dtype):
    ours, theirs = parameters(dtype), parameters(dtype)
    adam = Adam(ours, lr=0.003)
    reference = torch.optim.Adam(theirs, lr=0.003)
    drive(adam, ours, 40, seed=1)
    drive(reference, theirs, 40, seed=1)
    assert same_bytes(ours, theirs)
    mine, torchs = adam.state_dict(), reference.state_dict()
    assert mine["param_groups"] == torchs["param_groups"]
    assert json.dumps(mine["param_groups"]) == json.dumps(torchs["param_groups"])
    assert mine["state"].keys() == torchs["state"].keys()
    for index, entry in torchs["state"].items():
        assert mine["state"][index].keys() == entry.keys()
        assert same_bytes(list(mine["state"][index].values()), list(entry.values()))


def test_adam_resumes_from_torchs_state_and_torch_from_ours():
    ours, theirs = parameters(torch.float32), parameters(torch.float32)
    reference = torch.optim.Adam(theirs, lr=0.01)
    drive(reference, theirs, 5, seed=2)
    with torch.no_grad():
        for mine, their in zip(ours, theirs):
            mine.copy_(their)
    adam = Adam(ours, lr=0.5)  # the saved learning rate wins, as in torch.optim
    adam.load_state_dict(reference.state_dict())
    assert adam.param_groups[0]["lr"] == 0.01
    drive(adam, ours, 7, seed=3)
    drive(reference, theirs, 7, seed=3)
    assert same_bytes(ours, theirs)
    again = torch.optim.Adam(parameters(torch.float32), lr=0.01)
    again.load_state_dict(adam.state_dict())
    assert again.state_dict()["param_groups"] == reference.state_dict()["param_groups"]


def test_sgd_takes_torch_sgds_steps_with_a_changing_learning_rate():
    ours, theirs = parameters(torch.float32), parameters(torch.float32)
    rates = [1.0 - step / 12 for step in range(12)]
    sgd, reference = SGD(ours, lr=1.0), torch.optim.SGD(theirs, lr=1.0)
    drive(sgd, ours, 12, seed=4, learning_rates=rates)
    drive(reference, theirs, 12, seed=4, learning_rates=rates)
    assert same_bytes(ours, theirs)
    assert sgd.state_dict() == reference.state_dict()


def test_a_state_of_another_model_or_option_is_refused():
    adam = Adam(parameters(torch.float32))
    other = torch.optim.Adam(parameters(torch.float32)[:2])
    with pytest.raises(OptimizerStateError, match="another model"):
        adam.load_state_dict(other.state_dict())
    amsgrad = torch.optim.Adam(parameters(torch.float32), amsgrad=True)
    with pytest.raises(OptimizerStateError, match="amsgrad"):
        adam.load_state_dict(amsgrad.state_dict())


def test_training_never_imports_torch_dynamo(tmp_path):
    """torch.optim's first step imports torch._dynamo, as long to import as torch itself."""
    script = textwrap.dedent(
        f"""
        import sys
        from metalandscape import cli
        for algorithm in ("maml", "reptile", "finetune"):
            assert cli.main([
                "train", "--set", "dataset=sinusoid", "--set", f"algorithm={{algorithm}}",
                "--set", "epochs=1", "--set", "iterations_per_epoch=2", "--set", "k_shot=2",
                "--set", "n_way=1", "--set", "meta_batch_size=2",
                "--out", {str(tmp_path)!r} + f"/{{algorithm}}.h5", "--device", "cpu", "--quiet",
            ]) == 0
        print("torch._dynamo" in sys.modules)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip().splitlines()[-1] == "False"
