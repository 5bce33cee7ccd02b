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
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from metalandscape.algorithms import Learner, load_algorithm
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


def _start(
    config: RunConfig,
    writer: RunWriter,
    source: TaskSource,
    model: torch.nn.Module,
    device: torch.device,
) -> tuple[Learner, int]:
    """The run's learner, from θ0 or its resume state, and the first epoch still to train
    (epoch 0, θ0, written on a fresh start)."""
    resume = writer.load_resume()
    params = resume.params if resume is not None else initial_params(model)
    params = {name: value.to(device) for name, value in params.items()}
    learner = load_algorithm(config.algorithm).learner(config, model, params, source, device)
    if resume is None:
        writer.write_epoch(0, learner.params, learner.optimizer.state_dict(), 0, {})
        return learner, 1
    learner.optimizer.load_state_dict(resume.optimizer_state)
    torch.set_rng_state(resume.torch_rng_state)
    log.info("resuming %s after epoch %d", partial_path(writer.final_path), resume.epoch)
    return learner, resume.epoch + 1


StepAll = Callable[[int], Sequence[tuple[float, float]]]
"""One meta-iteration of every run trained together: each run's (loss, score)."""


def _train_epoch(
    epoch: int,
    configs: Sequence[RunConfig],
    writers: Sequence[RunWriter],
    learners: Sequence[Learner],
    step_all: StepAll,
    reports: Sequence[TrainingProgress],
    kind: str,
) -> None:
    """Epoch ``epoch`` of runs that share a checkpoint schedule, then each run's checkpoint."""
    schedule = configs[0].checkpoint_iterations()
    first, iterations = schedule[epoch - 1], schedule[epoch] - schedule[epoch - 1]
    sums = [[0.0, 0.0] for _ in learners]
    for step in range(iterations):
        for index, (loss, score) in enumerate(step_all(first + step)):
            if not math.isfinite(loss):
                for report in reports:
                    report.close()
                raise TrainingDiverged(
                    f"training loss is {loss} at epoch {epoch}, iteration {step}; epochs up to "
                    f"{epoch - 1} are kept in {partial_path(writers[index].final_path)}; lower "
                    "the learning rates"
                )
            sums[index][0] += loss
            sums[index][1] += score
            reports[index].step(sums[index][0] / (step + 1), sums[index][1] / (step + 1))
    for (loss_sum, score_sum), writer, learner, report in zip(
        sums, writers, learners, reports, strict=True
    ):
        statistics = {
            "train_loss": loss_sum / max(iterations, 1),
            "train_accuracy" if kind == "classification" else "train_mse": score_sum
            / max(iterations, 1),
        }
        writer.write_epoch(
            epoch, learner.params, learner.optimizer.state_dict(), schedule[epoch], statistics
        )
        report.epoch_done(epoch, statistics)


def _train_epochs(
    config: RunConfig,
    writer: RunWriter,
    source: TaskSource,
    model: torch.nn.Module,
    device: torch.device,
    progress: bool,
    stop_after_epoch: int | None,
) -> Path:
    learner, start_epoch = _start(config, writer, source, model, device)
    schedule = config.checkpoint_iterations()
    report = TrainingProgress(config, source.kind, schedule, start_epoch, show_bar=progress)
    for epoch in range(start_epoch, config.epochs + 1):
        _train_epoch(
            epoch,
            [config],
            [writer],
            [learner],
            lambda iteration: [learner.train_step(iteration)],
            [report],
            source.kind,
        )
        if stop_after_epoch is not None and epoch >= stop_after_epoch and epoch < config.epochs:
            report.close()
            return partial_path(writer.final_path)
    report.close()
    return writer.finish()


def train_runs_in_lockstep(
    configs: Sequence[RunConfig],
    out_paths: Sequence[str | Path],
    *,
    device: torch.device | str = "cpu",
    progress: bool = True,
    stop_after_epoch: int | None = None,
) -> list[Path]:
    """Train (or resume) runs that differ only by seed, in lockstep where they can; returns
    their paths (``.partial`` ones when ``stop_after_epoch`` ended the call early).

    Each run keeps its own data stream, optimizer and run file, laid out as :func:`train_run`
    writes it. Runs already finished are left alone; runs resumed at different epochs are
    brought to the furthest one one at a time, then go on together. Runs that cannot go in
    lockstep (:func:`~metalandscape.lockstep.lockstep_refusal`) train one after the other.
    """
    from metalandscape.lockstep import lockstep_refusal, lockstep_train_step

    if len(configs) != len(out_paths):
        raise ValueError(f"{len(configs)} run configs but {len(out_paths)} output paths")
    paths = [Path(path) for path in out_paths]
    pending = []
    for config, path in zip(configs, paths, strict=True):
        if path.exists() and read_run_info(path).finished:
            log.info("%s is already finished; nothing to do", path)
            remove_partial(path)
        else:
            pending.append((config, path))
    refusal = lockstep_refusal([config for config, _ in pending], torch.device(device).type)
    if refusal is not None:
        if len(pending) > 1:
            log.info("training one run at a time: %s", refusal)
        done = {
            path: train_run(
                config, path, device=device, progress=progress, stop_after_epoch=stop_after_epoch
            )
            for config, path in pending
        }
        return [done.get(path, path) for path in paths]
    device = torch.device(device)
    config = pending[0][0]
    source = make_task_source(config)  # the same data for every seed
    writers: list[RunWriter] = []
    try:
        models = [make_model(config, source).to(device) for config, _ in pending]
        for config, path in pending:
            writers.append(RunWriter(path, config.to_json(), config.epochs))
        started = [
            _start(config, writer, source, model, device)
            for (config, _), writer, model in zip(pending, writers, models, strict=True)
        ]
        learners = [learner for learner, _ in started]
        schedule = config.checkpoint_iterations()
        reports = [
            TrainingProgress(config, source.kind, schedule, start, show_bar=progress)
            for (config, _), (_, start) in zip(pending, started, strict=True)
        ]
        together = max(start for _, start in started)
        for index, (learner, start) in enumerate(started):  # catch up, one run at a time
            for epoch in range(start, together):
                _train_epoch(
                    epoch,
                    [pending[index][0]],
                    [writers[index]],
                    [learner],
                    lambda iteration, learner=learner: [learner.train_step(iteration)],
                    [reports[index]],
                    source.kind,
                )
        configs_pending = [config for config, _ in pending]
        stopped = False
        for epoch in range(together, config.epochs + 1):
            _train_epoch(
                epoch,
                configs_pending,
                writers,
                learners,
                lambda iteration: lockstep_train_step(learners, iteration),  # type: ignore[arg-type]
                reports,
                source.kind,
            )
            if stop_after_epoch is not None and epoch >= stop_after_epoch and epoch < config.epochs:
                stopped = True
                break
        for report in reports:
            report.close()
        finished = {
            path: partial_path(path) if stopped else writer.finish()
            for (_, path), writer in zip(pending, writers, strict=True)
        }
    finally:
        for writer in writers:
            writer.close()
    return [finished.get(path, path) for path in paths]


def score_label(kind: str) -> str:
    """The short name of the training score: ``acc`` (classification) or ``mse`` (regression)."""
    return "acc" if kind == "classification" else "mse"


def progress_fields(kind: str, loss: float, score: float) -> dict[str, str]:
    """``{loss, acc}`` for classification; for regression ``{mse}``, plus ``loss`` only when the
    training loss is not the MSE itself (a regularized objective)."""
    fields = {"loss": f"{loss:.4f}", score_label(kind): f"{score:.4f}"}
    if kind != "classification" and math.isclose(loss, score, rel_tol=1e-9, abs_tol=1e-12):
        del fields["loss"]
    return fields


def format_duration(seconds: float) -> str:
    """``1:02:03`` or ``02:03`` (tqdm's style); ``?`` when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    return tqdm.format_interval(seconds)


class TrainingProgress:
    """How long a run has left: one tqdm bar over all meta-iterations of the run, its postfix
    (the epoch's running loss and score) refreshed at most every ``interval`` seconds; and one
    line per epoch with epoch, iteration, loss, score, elapsed time and ETA (the log under
    ``--quiet``, above the bar otherwise)."""

    def __init__(
        self,
        config: RunConfig,
        kind: str,
        schedule: Sequence[int],
        start_epoch: int,
        *,
        show_bar: bool,
        interval: float = 0.5,
    ) -> None:
        self.kind = kind
        self.epochs = config.epochs
        self.total = schedule[-1]
        self.first = schedule[start_epoch - 1]
        self.done = self.first
        self.interval = interval
        self.started = time.monotonic()
        self.last_postfix = -math.inf
        self.show_bar = show_bar
        self.bar = tqdm(
            total=self.total,
            initial=self.first,
            desc=f"{config.algorithm} {config.dataset} seed {config.seed}",
            unit="it",
            disable=not show_bar,
            mininterval=interval,
            dynamic_ncols=True,
        )

    def step(self, loss: float, score: float) -> None:
        """One meta-iteration done; ``loss`` and ``score`` are the epoch's running means."""
        self.done += 1
        now = time.monotonic()
        if self.show_bar and now - self.last_postfix >= self.interval:
            self.last_postfix = now
            self.bar.set_postfix(progress_fields(self.kind, loss, score), refresh=False)
        self.bar.update(1)

    def epoch_line(self, epoch: int, statistics: dict[str, float]) -> str:
        """``epoch 3/10  iteration 1500/5000  loss 0.5123  acc 0.7810  elapsed 01:02  ETA 02:25``."""
        elapsed = time.monotonic() - self.started
        done_here = self.done - self.first
        remaining = self.total - self.done
        eta = elapsed / done_here * remaining if done_here else math.nan
        values = list(statistics.values())
        fields = progress_fields(self.kind, values[0], values[1])
        shown = "  ".join(f"{name} {value}" for name, value in fields.items())
        return (
            f"epoch {epoch}/{self.epochs}  iteration {self.done}/{self.total}  {shown}  "
            f"elapsed {format_duration(elapsed)}  ETA {format_duration(eta)}"
        )

    def epoch_done(self, epoch: int, statistics: dict[str, float]) -> None:
        """Report the finished epoch: above the bar, or as one log line under ``--quiet``."""
        line = self.epoch_line(epoch, statistics)
        if self.show_bar:
            self.bar.write(line)
        else:
            log.info("%s", line)

    def close(self) -> None:
        """Take the bar off the terminal."""
        self.bar.close()
