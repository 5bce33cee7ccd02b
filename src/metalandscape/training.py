"""The training driver: meta-updates (or supervised steps) with a checkpoint after each "epoch".

Checkpoint ``e`` is written after ``config.checkpoint_iterations()[e]`` meta-iterations: one per
epoch of ``iterations_per_epoch`` by default, or a schedule (e.g. log-spaced early).

Meta-batch ``i`` of a run holds meta-train tasks ``i*B .. (i+1)*B-1`` of the run's seed, and the
finetune baseline's batch ``i`` is drawn from ``task_rng(seed, "train", i)``: the data never
depends on where training was interrupted, so a resumed run equals an uninterrupted one bit for
bit on the CPU.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from tqdm import tqdm

from metalandscape.algorithms import load_algorithm
from metalandscape.checkpoints import RunWriter, partial_path, read_run_info, remove_partial
from metalandscape.config import RunConfig
from metalandscape.data.tasks import TaskSource
from metalandscape.experiment import initial_params, make_model, make_task_source

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


def train_run(
    config: RunConfig,
    out_path: str | Path,
    *,
    device: torch.device | str = "cpu",
    progress: bool = True,
    stop_after_epoch: int | None = None,
) -> Path:
    """Train (or resume) the run and write ``out_path``; returns it.

    ``stop_after_epoch`` ends the call after that epoch without finishing the file (the next call
    resumes), as a preempted job would.
    """
    out_path = Path(out_path)
    if out_path.exists() and read_run_info(out_path).finished:
        log.info("%s is already finished; nothing to do", out_path)
        remove_partial(out_path)
        return out_path
    device = torch.device(device)
    # Data and model first: a bad dataset or config must fail before any run file appears.
    source = make_task_source(config)
    model = make_model(config, source).to(device)
    writer = RunWriter(out_path, config.to_json(), config.epochs)
    try:
        return _train_epochs(config, writer, source, model, device, progress, stop_after_epoch)
    finally:
        writer.close()


def _train_epochs(
    config: RunConfig,
    writer: RunWriter,
    source: TaskSource,
    model: torch.nn.Module,
    device: torch.device,
    progress: bool,
    stop_after_epoch: int | None,
) -> Path:
    out_path = writer.final_path
    kind = source.kind

    resume = writer.load_resume()
    params = resume.params if resume is not None else initial_params(model)
    params = {name: value.to(device) for name, value in params.items()}
    learner = load_algorithm(config.algorithm).learner(config, model, params, source, device)
    if resume is not None:
        learner.optimizer.load_state_dict(resume.optimizer_state)
        torch.set_rng_state(resume.torch_rng_state)
        start_epoch = resume.epoch + 1
        log.info("resuming %s after epoch %d", partial_path(out_path), resume.epoch)
    else:
        writer.write_epoch(0, learner.params, learner.optimizer.state_dict(), 0, {})
        start_epoch = 1

    schedule = config.checkpoint_iterations()
    for epoch in range(start_epoch, config.epochs + 1):
        loss_sum = score_sum = 0.0
        first, iterations = schedule[epoch - 1], schedule[epoch] - schedule[epoch - 1]
        bar = tqdm(
            range(iterations),
            desc=f"epoch {epoch}/{config.epochs}",
            disable=not progress,
            mininterval=1.0,
            leave=False,
        )
        for step in bar:
            iteration = first + step
            loss, score = learner.train_step(iteration)
            if not math.isfinite(loss):
                raise TrainingDiverged(
                    f"training loss is {loss} at epoch {epoch}, iteration {step}; epochs up to "
                    f"{epoch - 1} are kept in {partial_path(out_path)}; lower the learning rates"
                )
            loss_sum += loss
            score_sum += score
            bar.set_postfix(
                loss=f"{loss_sum / (step + 1):.4f}", score=f"{score_sum / (step + 1):.4f}"
            )
        statistics = {
            "train_loss": loss_sum / max(iterations, 1),
            "train_accuracy" if kind == "classification" else "train_mse": score_sum
            / max(iterations, 1),
        }
        writer.write_epoch(
            epoch, learner.params, learner.optimizer.state_dict(), schedule[epoch], statistics
        )
        log.info(
            "epoch %d/%d: %s",
            epoch,
            config.epochs,
            ", ".join(f"{k}={v:.4f}" for k, v in statistics.items()),
        )
        if stop_after_epoch is not None and epoch >= stop_after_epoch and epoch < config.epochs:
            return partial_path(out_path)
    return writer.finish()
