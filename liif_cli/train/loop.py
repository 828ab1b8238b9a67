"""The training loop: setup (resume, fine-tune or fresh start), the step, validation and
checkpoints, stopping cleanly on a signal, and DistributedDataParallel under torchrun."""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .. import bundled, checkpoint, distributed
from ..dataset import CropSampler, load_images
from ..engine import resolve_device as engine_device
from ..errors import LiifError, UnusableInput
from ..files import claim, release, write_text_atomic
from ..model import ImplicitImage, build_model
from ..runtime import cpu_has_fast_bf16, retain_freed_memory
from .config import (
    CHECKPOINT_NAME,
    DEFAULT_STEPS,
    METRICS_NAME,
    TrainConfig,
    full_degradation,
    init_config,
    lr_at,
    progress_fraction,
    resume_config,
)
from .run_files import (
    checkpoint_metadata,
    prepare_run_dir,
    remove_if_empty,
    training_history,
    truncate_metrics,
)
from .validation import validate


@dataclass
class TrainEvent:
    """What the progress callback receives.

    kind: 'warning' (message), 'start', 'step' (after every step), 'val' (val holds the
    record written to metrics.jsonl), 'checkpoint', 'done' or 'interrupted'.
    """

    kind: str
    step: int
    total: int
    loss: float | None = None  # loss of the last step
    avg_loss: float | None = None  # mean loss since the last validation
    lr: float | None = None
    steps_per_s: float | None = None  # training steps per second (this session)
    eta_s: float | None = None
    val: dict[str, Any] | None = None  # last validation record
    message: str = ""


@dataclass
class TrainResult:
    out: Path
    checkpoint: Path
    step: int
    total: int
    interrupted: bool
    last_loss: float | None
    last_val: dict[str, Any] | None
    warnings: list[str]


ProgressFn = Callable[[TrainEvent], Any]


# The signals that stop a run cleanly (it saves first): Ctrl-C, kill, and a closed terminal.
_STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                      if hasattr(signal, name))


class _StopFlag:
    """Set by SIGINT/SIGTERM/SIGHUP (or by the caller); the loop checks it after every step."""

    def __init__(self, event: threading.Event | None = None):
        self.event = event or threading.Event()
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop now (saves are atomic anyway)
        self.signal = signum
        self.event.set()

    def install(self) -> None:
        """Handle the stop signals, except those the process ignores (under nohup, SIGHUP:
        the run lives on when the terminal closes)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in _STOP_SIGNALS:
            if signal.getsignal(sig) is not signal.SIG_IGN:
                self._old[sig] = signal.signal(sig, self._handler)

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()


def resolve_amp(amp: str, device: torch.device, legacy: bool = False) -> str:
    """The autocast a run trains with, 'bf16' or 'off', for the `amp` option on `device`.

    'auto' picks bf16 where the device computes it fast (CUDA, a CPU with AMX or
    AVX512-BF16: about twice the steps per second of float32), as `liif upscale --precision
    auto` does. `legacy`: a run resumed from a checkpoint that saved 'auto' itself, from
    before runs recorded the choice, when 'auto' meant float32 on every CPU; it keeps that.
    """
    if amp != "auto":
        return amp
    if device.type == "cuda" or (device.type == "cpu" and not legacy and cpu_has_fast_bf16()):
        return "bf16"
    return "off"


def resolve_device(name: str) -> torch.device:
    """The device a run trains on: `auto` is CUDA where there is one, else the CPU (training
    on Apple's MPS is asked for by name); a named device must be available (as for
    `liif upscale`)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return engine_device(name)


def run_training(config: TrainConfig, progress: ProgressFn | None = None,
                 stop: threading.Event | None = None) -> TrainResult:
    """Train (or resume) a LIIF model as `config` says; returns when done or interrupted.

    progress: called with a TrainEvent after every step and at each warning, validation,
    checkpoint and the end. stop: an Event the caller may set to stop cleanly (SIGINT,
    SIGTERM and SIGHUP set it too while this runs in the main thread, unless ignored). The
    run holds its folder (a claim file) from setup to return. Raises LiifError for bad input
    and for a non-finite loss (the last good checkpoint is kept).

    If a torch.distributed process group is initialised (liif_cli.distributed.init_from_env
    under torchrun), call this on every rank: they train one model with DDP, `progress` is
    called on rank 0 only, and errors are raised on all ranks alike.
    """
    # In a process group only rank 0 reports; any rank's setup error is raised on all ranks.
    emit = (progress if distributed.is_main() else None) or (lambda event: None)
    try:
        with distributed.agreed_errors():
            config, start, device, images, names, val_images, warnings = _setup(config)
        return _run(config, start, device, images, names, val_images, warnings, emit, stop)
    finally:  # also after another rank's setup error, with this one's setup holding the folder
        if distributed.is_main():
            release(Path(config.out).expanduser() / CHECKPOINT_NAME)


def _run(config: TrainConfig, start: checkpoint.Checkpoint | None, device: torch.device,
         images: list[np.ndarray], names: list[str], val_images: list[np.ndarray],
         warnings: list[str], emit: Callable[[TrainEvent], Any],
         stop: threading.Event | None) -> TrainResult:
    """run_training after setup: agree on bf16, report the warnings, train."""
    if distributed.world_size() > 1:  # the ranks train alike: bf16 only if every rank chose it
        agreed = distributed.all_sum([config.amp == "bf16"])[0] == distributed.world_size()
        config.amp = "bf16" if agreed else "off"
    if config.amp == "bf16" and device.type == "cpu" and not cpu_has_fast_bf16():
        warnings.append("this CPU has no bf16 units (AMX or AVX512-BF16): bf16 autocast runs "
                        "emulated, slower than float32 (--amp off for a new run)")
    for message in warnings:
        emit(TrainEvent("warning", 0, config.steps, message=message))

    if device.type == "cpu":
        retain_freed_memory()
    old_threads = torch.get_num_threads()
    if config.workers > 0:
        torch.set_num_threads(config.workers)
    try:
        return _train_loop(config, start, device, images, names, val_images, warnings,
                           emit, stop)
    finally:
        torch.set_num_threads(old_threads)


def _setup(config: TrainConfig) -> tuple[TrainConfig, checkpoint.Checkpoint | None,
                                         torch.device, list[np.ndarray], list[str],
                                         list[np.ndarray], list[str]]:
    """Resume or fresh start, checks, device and images: everything before the first step.

    The checkpoint returned is the one to start from: the run's own when resuming (with its
    train_state), the --init weights when fine-tuning, else None. Its errors are
    UnusableInput (found before any work: the CLI exits 2 for them, as for usage errors).
    """
    try:
        return _start(config)
    except UnusableInput:
        raise
    except LiifError as exc:
        raise UnusableInput(str(exc)) from exc


def _start(config: TrainConfig) -> tuple[TrainConfig, checkpoint.Checkpoint | None,
                                         torch.device, list[np.ndarray], list[str],
                                         list[np.ndarray], list[str]]:
    """_setup's work. Paths are made absolute first, so the run resumes from any folder."""
    out = Path(config.out).expanduser()
    ckpt_path = out / CHECKPOINT_NAME
    warnings: list[str] = []
    config = full_degradation(config).absolute_paths()

    # ---- resume, fine-tune or fresh start
    start = None
    recorded_images = None
    if config.resume:
        if not ckpt_path.is_file():
            raise LiifError(f"nothing to resume: {ckpt_path} does not exist")
        start = checkpoint.load(ckpt_path)
        state = start.extra.get("train_state")
        if not isinstance(state, dict) or "config" not in state:
            raise LiifError(f"{ckpt_path} is not a training checkpoint (no train_state)")
        config, more = resume_config(config, state["config"], int(state.get("step", 0)),
                                     float(state.get("elapsed_s", 0.0)))
        warnings += more
        recorded_images = state.get("images")  # None: a checkpoint from before they were
        for folder in config.data:
            if not Path(folder).expanduser().exists():  # e.g. relative, from an older run
                raise LiifError(f"the run's training data {folder} is not found; give --data "
                                "to point the run at its data")
    elif ckpt_path.exists():
        raise LiifError(f"{out} already holds a run ({CHECKPOINT_NAME}); "
                        "resume it or choose another output folder")
    elif config.init:
        start = checkpoint.load(bundled.resolve_weights(config.init))
        config, more = init_config(config, start.spec)
        warnings += more
    if config.steps is None:
        config.steps = DEFAULT_STEPS
    config.validate()
    if config.teacher is not None and config.distill > 0:  # a damaged file: refused up front
        checkpoint.load(bundled.resolve_weights(config.teacher))
    world = distributed.world_size()
    if config.batch_size % world:
        raise LiifError(f"bad training option: batch size {config.batch_size} does not split "
                        f"evenly over {world} ranks (it is the global batch: use a multiple "
                        f"of {world})")
    created = prepare_run_dir(out)
    claimed = False
    try:
        if distributed.is_main():
            claimed = claim(ckpt_path)
            if not claimed:
                raise LiifError(f"another liif train is running in {out}; wait for it, or "
                                "choose another output folder")
        leftovers = [n for n in ("config.json", METRICS_NAME) if (out / n).exists()]
        if leftovers and not config.resume:
            raise LiifError(f"{out} already holds {' and '.join(leftovers)} but no checkpoint "
                            "(a run that never saved one, or other files): remove them or "
                            "choose another output folder")
        device = resolve_device(distributed.device_name(config.device))
        config.amp = resolve_amp(config.amp, device, legacy=config.resume)
        images, names, more = load_images(config.data, config.max_crop, "training")
        warnings += more
        if recorded_images is not None:
            change = _image_change(recorded_images, _image_list(images, names))
            if change:
                warnings.append(f"the training images changed since the run's last "
                                f"checkpoint ({change}): it resumes on them as they are now, "
                                "not bit for bit")
        val_images: list[np.ndarray] = []
        if config.val:
            # validate() scores an image at scale s once its sides, cut to multiples of s,
            # exceed 2s (the border of s pixels is shaved): 3s a side at the largest scale.
            val_images, _, more = load_images([config.val], 3 * max(config.val_scales),
                                              "validation")
            warnings += more
    except BaseException:
        if claimed:
            release(ckpt_path)
        remove_if_empty(out, created)
        raise
    return config, start, device, images, names, val_images, warnings


def _image_list(images: list[np.ndarray], names: list[str]) -> list[list[Any]]:
    """What a checkpoint records of its training images: [file name, height, width] each
    (names without folders: a run whose data moved resumes alike)."""
    return [[Path(name).name, *image.shape[:2]] for image, name in zip(images, names,
                                                                        strict=True)]


def _image_change(recorded: list[list[Any]], now: list[list[Any]]) -> str:
    """How the training images differ from a run's record ('' if not at all), in words."""
    if [list(r) for r in recorded] == now:
        return ""
    before, after = Counter(map(tuple, recorded)), Counter(map(tuple, now))
    gone, new = before - after, after - before  # (name, H, W) each, counted
    resized = sum((Counter(r[0] for r in gone.elements())
                   & Counter(r[0] for r in new.elements())).values())
    added, removed = new.total() - resized, gone.total() - resized
    parts = [f"{n} {what}" for n, what in ((added, "added"), (removed, "removed"),
                                           (resized, "of another size")) if n]
    return ", ".join(parts) or "in another order"


class _LossModule(torch.nn.Module):
    """The training loss as a module: DistributedDataParallel synchronises the gradients of
    what runs through its wrapped module's forward."""

    def __init__(self, model: ImplicitImage, amp: str | None, teacher: Teacher | None):
        super().__init__()
        self.model = model
        self.amp = amp
        self.teacher = teacher

    def forward(self, inp: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor,
                gt: torch.Tensor) -> torch.Tensor:
        batch = {"inp": inp, "coord": coord, "cell": cell, "gt": gt}
        return training_loss(self.model, batch, self.amp, self.teacher)


def _train_loop(config: TrainConfig, start: checkpoint.Checkpoint | None, device: torch.device,
                images: list[np.ndarray], names: list[str], val_images: list[np.ndarray],
                warnings: list[str], emit: Callable[[TrainEvent], Any],
                stop: threading.Event | None) -> TrainResult:
    run = _Run(config, start, device, images, names, val_images, emit)
    flag = _StopFlag(stop)
    flag.install()
    try:
        interrupted = run.train(flag)
    finally:
        flag.restore()
    return TrainResult(run.out, run.ckpt_path, run.step, config.steps, interrupted,
                       run.loss_value, run.last_val, warnings)


class _Run:
    """One training run's moving parts: the model (and its moving average), the optimiser,
    the sampler and its generator, the step and the clocks. `train` steps until the run is
    finished or asked to stop, validating and checkpointing on the way."""

    def __init__(self, config: TrainConfig, start: checkpoint.Checkpoint | None,
                 device: torch.device, images: list[np.ndarray], names: list[str],
                 val_images: list[np.ndarray], emit: Callable[[TrainEvent], Any]):
        self.config, self.device, self.names, self.val_images = config, device, names, val_images
        self.image_list = _image_list(images, names)
        self.n_images, self.emit = len(images), emit
        self.out = Path(config.out).expanduser()
        self.ckpt_path = self.out / CHECKPOINT_NAME
        self.metrics_path = self.out / METRICS_NAME
        self.rank, self.world = distributed.rank(), distributed.world_size()
        self.main = self.rank == 0  # writes the files; in a plain process always True

        torch.manual_seed(config.seed)  # model initialisation (the same on every rank)
        model = build_model(config.spec())
        if start is not None and not config.resume and start.spec.decoder != model.spec.decoder:
            model.init_from_liif(start.build())  # a fast model from a LIIF's encoder
            start = None
        if config.freeze_encoder:
            model.encoder.requires_grad_(False)
        self.model = prepare_for_training(model.to(device))
        self.optimizer = torch.optim.Adam(
            [p for p in self.model.parameters() if p.requires_grad], lr=config.lr)
        self.teacher = _load_teacher(config, self.model, device)
        self.generator = torch.Generator()  # data sampling: always on the CPU
        self.generator.manual_seed(config.seed)
        self.step, self.elapsed = 0, 0.0
        self.last_val: dict[str, Any] | None = None
        self.loss_value: float | None = None
        self.history = training_history(config, start)
        if start is not None:  # resumed, or fine-tuned (--init: optimiser and schedule anew)
            self.model.load_state_dict(start.state_dict)
        # With `ema`, a moving average of the weights is kept beside them: it is what
        # validation scores and what the checkpoint's weights (state_dict) hold, so a run
        # stopped at any point, even at a high learning rate, leaves usable weights. The
        # weights being trained are then in train_state["model"].
        self.averaged = (AveragedModel(self.model,
                                       multi_avg_fn=get_ema_multi_avg_fn(config.ema))
                         if config.ema else None)
        # Sum and count of the losses since the last validation, for its record and the
        # progress events' average (a checkpoint keeps them, so a resumed run's next record
        # is an unbroken run's: the sum adds in the same order).
        self.loss_sum, self.loss_count = 0.0, 0
        if config.resume:
            self._restore(start.extra["train_state"], start.state_dict)
        elif self.main:
            self.metrics_path.unlink(missing_ok=True)
        if self.main:
            write_text_atomic(self.out / "config.json",
                              json.dumps(config.to_dict(), indent=2) + "\n")

        self.sampler = CropSampler(images, config.crop, config.samples, config.scale_min,
                                   config.scale_max, config.degradation_config(),
                                   shrink_max=config.shrink_max)
        self.amp = device.type if config.amp == "bf16" else None  # resolved by _setup
        self.ddp = None
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.ddp = DistributedDataParallel(
                _LossModule(self.model, self.amp, self.teacher),
                device_ids=[device] if device.type == "cuda" else None)
        # In a group, decisions that depend on run time (time_budget: the lr and the end) use
        # rank 0's clock as of the last agreement, so that every rank takes the same ones.
        self.clock, self.stopping = self.elapsed, False
        self.start_step, self.session_time = self.step, 0.0
        self.tick = 0.0  # when `elapsed` was last brought up to date; set as training starts

    def _restore(self, state: dict[str, Any], weights: dict[str, torch.Tensor]) -> None:
        """Continue a run from its checkpoint's training state."""
        if self.averaged is not None and "model" in state:
            self.averaged.module.load_state_dict(weights)
            self.averaged.n_averaged.fill_(int(state.get("ema_updates", 1)))
            self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["rng"])
        self.step = int(state["step"])
        self.elapsed = float(state.get("elapsed_s", 0.0))
        self.last_val = state.get("last_val")
        self.loss_sum = float(state.get("loss_sum", 0.0))
        self.loss_count = int(state.get("loss_count", 0))
        if self.main:
            truncate_metrics(self.metrics_path, self.step)

    # ------------------------------------------------------------------ clocks and events

    def now(self) -> float:
        """Run time so far, as every rank agrees on it."""
        return self.elapsed if self.world == 1 else self.clock

    def finished(self) -> bool:
        return (self.step >= self.config.steps
                or progress_fraction(self.config, self.step, self.now()) >= 1.0)

    def event(self, kind: str, **kw: Any) -> TrainEvent:
        config = self.config
        rate = ((self.step - self.start_step) / self.session_time if self.session_time > 0
                else None)
        eta = (config.steps - self.step) / rate if rate else None
        avg = self.loss_sum / self.loss_count if self.loss_count else None
        if config.time_budget and rate:
            eta = min(eta, max(0.0, config.time_budget - self.now()))
        return TrainEvent(kind, self.step, config.steps, self.loss_value, avg,
                          lr_at(config, self.step, self.now()), rate, eta, self.last_val, **kw)

    # ------------------------------------------------------------------ the loop

    def train(self, flag: _StopFlag) -> bool:
        """Step until finished, or until stopped (then save); True if stopped."""
        config, world = self.config, self.world
        headline = f"training on {self.n_images} images, {self.device}"
        if world > 1:
            headline = (f"training on {self.n_images} images, {world} ranks "
                        f"({distributed.backend()}, {self.device.type}), batch "
                        f"{config.batch_size} = {world} ranks x {config.batch_size // world}")
        self.model.train()
        if world > 1:  # a signal during setup reached some ranks only: agree before step 1
            self.stopping = distributed.all_sum([flag.event.is_set()])[0] > 0
        self.emit(self.event("start", message=headline))
        self.tick = time.perf_counter()
        interrupted = False
        while not self.finished():
            if (flag.event.is_set() if world == 1 else self.stopping):
                interrupted = True
                break
            lr = self._train_step(flag)
            self.emit(self.event("step"))
            last = self.finished()
            if self.main and self.val_images and (
                    (config.val_every and self.step % config.val_every == 0) or last):
                self._validate(lr)
                self.emit(self.event("val"))
            if self.step % config.checkpoint_every == 0 or last:
                self.save()
                self.emit(self.event("checkpoint"))
        if interrupted:
            self.save()
            sig = signal.Signals(flag.signal).name if flag.signal in _STOP_SIGNALS else "stop"
            if world > 1 and not flag.event.is_set():
                sig = "another rank's signal"
            self.emit(self.event("interrupted", message=f"stopped by {sig} after step "
                                                        f"{self.step}; saved {self.ckpt_path}"))
        else:
            self.emit(self.event("done", message=f"finished {self.step} steps; saved "
                                                 f"{self.ckpt_path}"))
        distributed.barrier()  # in a group, return once rank 0 has written the checkpoint
        return interrupted

    def _train_step(self, flag: _StopFlag) -> float:
        """One optimisation step on the next batch; returns its learning rate."""
        config = self.config
        t0 = time.perf_counter()
        self.elapsed += t0 - self.tick
        self.tick = t0
        lr = lr_at(config, self.step, self.now())
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batch = {k: v.to(self.device, non_blocking=True)
                 for k, v in self.sampler.batch(config.batch_size, self.generator,
                                                (self.rank, self.world)).items()}
        if self.ddp is None:
            loss = training_loss(self.model, batch, self.amp, self.teacher)
            self.loss_value = float(loss.detach())
            if not math.isfinite(self.loss_value):
                raise _diverged(self.loss_value, self.step + 1, self.ckpt_path)
        else:  # this rank's share; DDP averages the gradients over the ranks
            loss = self.ddp(batch["inp"], batch["coord"], batch["cell"], batch["gt"])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.averaged is not None:
            self.averaged.update_parameters(self.model)
        self.step += 1
        self.session_time += time.perf_counter() - t0
        self.elapsed += time.perf_counter() - self.tick
        self.tick = time.perf_counter()
        if self.ddp is not None:
            # One all-reduce: the global mean loss, whether any rank was asked to stop, and
            # rank 0's clock (the others add 0).
            total, stops, self.clock = distributed.all_sum(
                [float(loss.detach()), flag.event.is_set(),
                 self.elapsed if self.main else 0.0])
            self.loss_value, self.stopping = total / self.world, stops > 0
            if not math.isfinite(self.loss_value):
                raise _diverged(self.loss_value, self.step, self.ckpt_path)
        self.loss_sum += self.loss_value
        self.loss_count += 1
        return lr

    def _validate(self, lr: float) -> None:
        """Score the weights (their moving average, if kept) and append to metrics.jsonl;
        its time is run time too (time_budget)."""
        config = self.config
        t1 = time.perf_counter()
        weights = self.averaged.module if self.averaged is not None else self.model
        result = validate(weights, self.val_images, config.val_scales, config.val_crop,
                          "bf16" if self.amp == "cpu" else "fp32", config.val_degrade)
        record = {"step": self.step, "loss": round(self.loss_sum / self.loss_count, 6),
                  "lr": lr, **result, "time": round(self.elapsed, 1),
                  "val_s": round(time.perf_counter() - t1, 2),
                  "wall": time.strftime("%Y-%m-%dT%H:%M:%S")}
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        self.last_val = record
        self.elapsed += time.perf_counter() - self.tick
        self.tick = time.perf_counter()
        self.loss_sum, self.loss_count = 0.0, 0

    def save(self) -> None:
        """Write the checkpoint (rank 0): weights, training state and metadata."""
        # Every rank checks (the weights are the same everywhere, so all raise together).
        if not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            raise LiifError(f"training diverged: non-finite weights at step {self.step}; "
                            "stopped without saving (the last good checkpoint is kept); "
                            "try a lower learning rate")
        if not self.main:
            return
        config = self.config
        train_state = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": {"name": config.lr_schedule, "base_lr": config.lr,
                          "total_steps": config.steps, "time_budget": config.time_budget,
                          "lr": lr_at(config, self.step, self.elapsed)},
            "step": self.step,
            "rng": self.generator.get_state(),
            "config": config.to_dict(),
            "elapsed_s": self.elapsed,
            "last_val": self.last_val,
            "loss_sum": self.loss_sum,
            "loss_count": self.loss_count,
            "images": self.image_list,
        }
        weights = self.model
        if self.averaged is not None:
            train_state["model"] = checkpoint.to_dict(self.model)["state_dict"]
            train_state["ema_updates"] = int(self.averaged.n_averaged)
            weights = self.averaged.module
        metadata = checkpoint_metadata(config, self.step, self.last_val, self.names,
                                       self.elapsed, self.world, self.history)
        checkpoint.save(checkpoint.to_dict(weights, metadata, train_state=train_state),
                        self.ckpt_path)


def _diverged(loss: float, step: int, ckpt_path: Path) -> LiifError:
    return LiifError(f"training diverged: loss is {loss} at step {step}; stopped without "
                     f"saving (the last good checkpoint is "
                     f"{ckpt_path if ckpt_path.exists() else 'not written yet'}); "
                     "try a lower learning rate")


def prepare_for_training(model: ImplicitImage) -> ImplicitImage:
    """The model in the memory layout training runs fastest in: channels-last convolutions
    (oneDNN and cuDNN pick faster kernels for NHWC). Same values, other strides."""
    return model.to(memory_format=torch.channels_last)


@dataclass
class Teacher:
    """A trained model whose RGB at the training queries is a second target (distillation).

    shares_encoder: its encoder's weights equal the student's frozen ones, so the student's
    features serve both."""

    model: ImplicitImage
    weight: float  # of its L1 term; the ground truth's is 1 - weight
    shares_encoder: bool


def _load_teacher(config: TrainConfig, student: ImplicitImage,
                  device: torch.device) -> Teacher | None:
    if config.teacher is None or config.distill <= 0:
        return None
    model = checkpoint.load(bundled.resolve_weights(config.teacher)).build().to(device)
    model.requires_grad_(False)
    mine, theirs = student.encoder.state_dict(), model.encoder.state_dict()
    shares = config.freeze_encoder and mine.keys() == theirs.keys() and all(
        mine[k].shape == theirs[k].shape and torch.equal(mine[k], theirs[k]) for k in mine)
    return Teacher(model, config.distill, shares)


def training_loss(model: ImplicitImage, batch: dict[str, torch.Tensor],
                  amp: str | None = None, teacher: Teacher | None = None) -> torch.Tensor:
    """L1 loss of the fast decoder path; `amp` = device type to autocast to bf16 on, or None.

    Under bf16 autocast the whole decoder runs in bf16, first layer included, exactly as
    `liif upscale --precision bf16` renders; the loss is taken in float32. With a teacher,
    the L1 to its RGB at the same queries is mixed in (see Teacher).
    """
    inp = batch["inp"].contiguous(memory_format=torch.channels_last)
    frozen = not any(p.requires_grad for p in model.encoder.parameters())
    with torch.autocast(device_type=amp or "cpu", dtype=torch.bfloat16, enabled=amp is not None):
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            feat = model.encode(inp)
        proj = model.project_latents(feat)
        # The projection covers the whole crop: no window check (it would stall a GPU).
        pred = model.query_rgb(proj, batch["coord"], batch["cell"], check_window=False)
        if teacher is not None:
            with torch.no_grad():
                tfeat = feat.detach() if teacher.shares_encoder else teacher.model.encode(inp)
                target = teacher.model.query_rgb(teacher.model.project_latents(tfeat),
                                                 batch["coord"], batch["cell"],
                                                 check_window=False)
    loss = F.l1_loss(pred.float(), batch["gt"])
    if teacher is None:
        return loss
    return (1 - teacher.weight) * loss + teacher.weight * F.l1_loss(pred.float(), target.float())

