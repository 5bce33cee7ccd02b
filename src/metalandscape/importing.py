"""Runs trained elsewhere: per-checkpoint weight files turned into this project's run file.

``metalandscape import`` reads one file per checkpoint (a PyTorch state_dict read with
``torch.load(weights_only=True)``, or a safetensors file), renames its tensors to the registered
model's parameter names, checks every name and shape against that model, and writes a run file
(:mod:`metalandscape.checkpoints`) whose epoch ``e`` is the ``e``-th checkpoint, at the
meta-iteration given for it. ``metrics``, ``aggregate``, ``figure`` and ``claims`` read it like a
run ``metalandscape train`` wrote. The run config (data set, way, shot, the algorithm whose inner
loop adapts at meta-test, its α and T, model and model settings) is the caller's: it says how the
weights were trained and how they are to be measured.

Renaming: ``renames`` are ``(old prefix, new prefix)`` pairs; each tensor takes the first pair
whose old prefix starts its name. ``drops`` are regular expressions searched in the original
names; matching tensors are left out (BatchNorm running statistics, a convolution bias right
before a batch-statistics BatchNorm: neither changes the network's function). docs/extending.md
gives the rules for learn2learn's and torchmeta's Conv-4.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from metalandscape.config import RunConfig, resolve_run_config

if TYPE_CHECKING:  # torch loads when weights are read: the workflow's planning parses here too
    import torch

    from metalandscape.functional import Params

#: Keys under which checkpoint files commonly nest the state_dict.
NESTED_KEYS = ("state_dict", "model_state_dict", "model")


class CheckpointImportError(ValueError):
    """A checkpoint that cannot become this run (one line naming the file and the fix)."""


def parse_checkpoint_argument(text: str) -> tuple[int, Path]:
    """``ITERATION=FILE`` (the meta-iterations done at that checkpoint, and its file)."""
    iteration, separator, file = text.partition("=")
    if not separator or not iteration.strip().isdigit() or not file:
        raise CheckpointImportError(
            f"--checkpoint {text!r} is not ITERATION=FILE; write e.g. --checkpoint 500=epoch1.pt"
        )
    return int(iteration), Path(file)


def checked_order(checkpoints: Iterable[tuple[int, Any]]) -> list[tuple[int, Any]]:
    """``checkpoints`` when their meta-iterations strictly increase."""
    listed = list(checkpoints)
    iterations = [iteration for iteration, _ in listed]
    if any(b <= a for a, b in itertools.pairwise(iterations)):
        raise CheckpointImportError(
            f"checkpoint iterations {iterations} must be strictly increasing; list the files in "
            "training order"
        )
    return listed


def parse_rename(text: str) -> tuple[str, str]:
    """``OLD=NEW`` prefix rule."""
    old, separator, new = text.partition("=")
    if not separator or not old:
        raise CheckpointImportError(
            f"--rename {text!r} is not OLD_PREFIX=NEW_PREFIX; write e.g. --rename classifier.=head."
        )
    return old, new


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of one checkpoint file, by name (no pickle beyond tensors)."""
    import torch

    if not path.is_file():
        raise CheckpointImportError(f"checkpoint {path} does not exist; check the path")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as error:
            raise CheckpointImportError(
                f"checkpoint {path} is not a readable safetensors file: {error}"
            ) from None
    try:
        loaded: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        reason = " ".join(str(error).split())[:300]
        raise CheckpointImportError(
            f"checkpoint {path} cannot be read with torch.load(weights_only=True) ({reason}); "
            "save the state_dict alone (torch.save(model.state_dict(), file)) or as safetensors"
        ) from None
    return _state_dict_of(loaded, path)


def _state_dict_of(loaded: Any, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a loaded checkpoint: a dict of tensors, or one nested under a usual key."""
    import torch

    if isinstance(loaded, Mapping):
        nested = [key for key in NESTED_KEYS if isinstance(loaded.get(key), Mapping)]
        if nested and not all(torch.is_tensor(value) for value in loaded.values()):
            loaded = loaded[nested[0]]
    if not isinstance(loaded, Mapping) or not loaded:
        raise CheckpointImportError(
            f"checkpoint {path} holds {type(loaded).__name__}, not a state_dict of tensors; save "
            "model.state_dict()"
        )
    others = sorted(str(key) for key, value in loaded.items() if not torch.is_tensor(value))
    if others:
        raise CheckpointImportError(
            f"checkpoint {path} holds non-tensor entries {others[:5]}; save model.state_dict() "
            f"alone (or nest it under one of {', '.join(NESTED_KEYS)})"
        )
    return {str(key): value for key, value in loaded.items()}


def map_names(
    tensors: Mapping[str, torch.Tensor],
    renames: Sequence[tuple[str, str]] = (),
    drops: Sequence[str] = (),
) -> dict[str, torch.Tensor]:
    """``tensors`` without the names a ``drops`` pattern finds, each renamed by the first
    ``(old, new)`` prefix rule that matches it."""
    patterns = [re.compile(pattern) for pattern in drops]
    mapped: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        if any(pattern.search(name) for pattern in patterns):
            continue
        new_name = name
        for old, new in renames:
            if name.startswith(old):
                new_name = new + name[len(old) :]
                break
        if new_name in mapped:
            raise CheckpointImportError(
                f"two tensors are renamed to {new_name!r}; fix the --rename rules"
            )
        mapped[new_name] = tensor
    return mapped


def match_parameters(tensors: Mapping[str, torch.Tensor], expected: Params, path: Path) -> Params:
    """``tensors`` as float parameters in ``expected``'s order, every name and shape checked."""
    import torch

    missing = [name for name in expected if name not in tensors]
    extra = sorted(name for name in tensors if name not in expected)
    hint = "add --rename OLD=NEW rules (or --drop patterns); metalandscape import --help"
    if missing:
        raise CheckpointImportError(
            f"checkpoint {path} lacks the model's tensor(s) {missing[:5]}"
            f"{' …' if len(missing) > 5 else ''} (it has {sorted(tensors)[:5]}…); {hint}"
        )
    if extra:
        raise CheckpointImportError(
            f"checkpoint {path} has tensor(s) the model does not: {extra[:5]}"
            f"{' …' if len(extra) > 5 else ''}; leave them out with --drop REGEX or rename them "
            "with --rename OLD=NEW (metalandscape import --help)"
        )
    params: Params = {}
    for name, reference in expected.items():
        value = tensors[name]
        if tuple(value.shape) != tuple(reference.shape):
            raise CheckpointImportError(
                f"checkpoint {path}: tensor {name!r} has shape {list(value.shape)} but the model "
                f"needs {list(reference.shape)}; check the model settings (--set model_settings=...)"
            )
        if not value.is_floating_point():
            raise CheckpointImportError(
                f"checkpoint {path}: tensor {name!r} is {value.dtype}, not float"
            )
        params[name] = value.detach().to(torch.float32).contiguous()
    return params


def imported_config(values: Mapping[str, Any], checkpoints: int) -> RunConfig:
    """The run config of an imported run with ``checkpoints`` checkpoints (epochs 0..n-1)."""
    if checkpoints < 1:
        raise CheckpointImportError("give at least one --checkpoint ITERATION=FILE")
    if "checkpoints" in values or "epochs" in values:
        raise CheckpointImportError(
            "an imported run's checkpoints come from --checkpoint; drop the config keys "
            "checkpoints and epochs"
        )
    return resolve_run_config({**values, "epochs": checkpoints - 1})


def import_run(
    values: Mapping[str, Any],
    checkpoints: Sequence[tuple[int, Path]],
    out: str | Path,
    *,
    renames: Sequence[tuple[str, str]] = (),
    drops: Sequence[str] = (),
) -> Path:
    """Write the run file ``out`` from ``checkpoints`` ((meta-iteration, file) pairs, in
    increasing iterations) and the run config ``values``; whole or not at all."""
    from metalandscape.checkpoints import RunWriter, remove_partial
    from metalandscape.experiment import initial_params, make_model, make_task_source

    iterations = [iteration for iteration, _ in checked_order(checkpoints)]
    config = imported_config(values, len(checkpoints))
    expected = initial_params(make_model(config, make_task_source(config)))
    epochs = [
        match_parameters(map_names(read_weights(path), renames, drops), expected, path)
        for _, path in checkpoints
    ]
    out = Path(out)
    remove_partial(out)
    writer = RunWriter(out, config.to_json(), epochs_planned=len(epochs) - 1)
    try:
        for epoch, (params, iteration) in enumerate(zip(epochs, iterations, strict=True)):
            writer.write_epoch(
                epoch, params, {"state": {}, "param_groups": []}, iteration, statistics={}
            )
        return writer.finish()
    except BaseException:
        writer.close()
        remove_partial(out)
        raise
