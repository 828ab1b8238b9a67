"""Training LIIF the way the paper does (Chen, Liu & Wang, CVPR 2021, section 4.1).

Library code: no typer, no printing in the core loop. Progress goes to an optional callback
(`run_training(config, progress=...)`); `train_with_console` is the thin Rich layer the CLI
can use.

Data, as in the paper (liif_cli.dataset): every image is decoded once into memory; each
sample is a random crop at a random scale in [scale_min, scale_max], randomly flipped and
transposed, bicubic-downscaled to `crop` px, with `samples` random HR pixels as targets.
With `degradation` ('real', or a DegradationConfig dict) the LR crop then goes through
liif_cli.degrade's random chain of blur, resize, noise and JPEG; the targets stay clean.

Determinism: all randomness of a run comes from one torch.Generator seeded from `seed` and
used in the main process only; its state, the model, the Adam state and the step are saved
in every checkpoint, so `resume` continues bit-for-bit (on the same device and thread count).
The learning rate is a pure function of the step. `workers` is the number of CPU threads
torch uses (torch.set_num_threads); 0 leaves torch's default. Batches are built in the main
thread, between steps: building one takes about 3 ms against a 350 ms step on a 2-core CPU
(the degradation chain adds about 2 ms per crop), and building the next one in a
background thread measured 10% slower there (the thread takes a core from the step's two
compute threads).

Speed on the CPU (`liif bench --training` measures it): channels-last convolutions
(prepare_for_training), the whole decoder in bf16 under autocast, and freed memory kept in
the process (runtime.retain_freed_memory) instead of page-faulting big buffers every step.

Checkpoints are project-format dicts (checkpoint.to_dict) written atomically to
RUN_DIR/last.pth every `checkpoint_every` steps, at the end, and on Ctrl-C / SIGTERM. They
load with torch.load(weights_only=True): the RNG state is a uint8 tensor and the config a
plain dict. A killed run loses at most the steps since the last checkpoint.

Validation (`val`, a folder of HR images) reports Y-channel PSNR at each of `val_scales`
against bicubic upscaling of the same LR input, appended to RUN_DIR/metrics.jsonl.

Several processes (torchrun; see liif_cli.distributed): when a process group of W ranks is
initialised, the model is wrapped in DistributedDataParallel. `batch_size` stays the global
batch and must divide by W. Every rank draws the parameters of the whole global batch from
the same seeded generator (cheap: a few random numbers per crop), so the generator state is
the same everywhere; rank r builds and trains on crops r, r + W, r + 2W, ..., its distinct
share. Each rank's loss is the mean over its share and DDP averages the gradients, which is
the mean over the global batch: W ranks train the same model as one process with the same
batch, up to float summation order, and a checkpoint resumes with any number of ranks.
After every step the ranks agree (one all-reduce) on the mean loss, on stopping (if any rank
got SIGINT/SIGTERM) and on rank 0's clock (for `time_budget`), so all stop at the same step.
Only rank 0 validates, writes checkpoints, metrics.jsonl and config.json, and reports
progress; the others wait for it at the end.
"""

from __future__ import annotations

import json
import math
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from . import checkpoint, distributed
from .dataset import CropSampler, bicubic_resize, load_images, to_unit
from .degrade import DegradationConfig, DegradeSpec, image_seed, parse_spec, parse_training_spec
from .engine import render
from .errors import LiifError
from .files import remove_stale_temps
from .metrics import y_psnr
from .model import LIIF, ModelSpec, build_model
from .runtime import cpu_has_fast_bf16, retain_freed_memory

LR_SCHEDULES = ("step", "cosine")
CHECKPOINT_NAME = "last.pth"
METRICS_NAME = "metrics.jsonl"

# Fields that define a run: on resume they come from the checkpoint, not from the caller.
# `steps` may be raised on resume to extend a run (see _resume_config); `extensions` records that.
RUN_FIELDS = ("data", "encoder", "model", "init", "steps", "time_budget", "batch_size", "lr",
              "lr_schedule", "seed", "ema",
              "crop", "samples", "scale_min", "scale_max", "amp", "degradation", "extensions")
DEFAULT_STEPS = 100_000
AMP_MODES = ("auto", "bf16", "off")


# --------------------------------------------------------------------------- config


@dataclass
class TrainConfig:
    """Everything `liif train` needs. Paths are strings so the config is a plain dict."""

    data: list[str] = field(default_factory=list)  # folders (or files) of training images
    out: str = "runs/train"  # run dir: last.pth, metrics.jsonl, config.json
    val: str | None = None  # folder of HR images for validation, e.g. Set5/HR
    encoder: str = "edsr-baseline"  # 'edsr-baseline' | 'rdn' (| 'edsr')
    # None: DEFAULT_STEPS for a new run, the run's own on resume; a larger number on resume
    # extends the run (see _resume_config).
    steps: int | None = None
    time_budget: float | None = None  # seconds; see lr_at (the run ends at whichever comes first)
    batch_size: int = 16
    lr: float = 1e-4
    lr_schedule: str = "step"  # 'step': halve at every 20% of the run; 'cosine': to 0
    checkpoint_every: int = 500  # steps
    val_every: int = 2000  # steps; 0 = only at the end (if val is set)
    device: str = "auto"  # 'auto' (cuda if available), 'cpu', 'cuda', 'cuda:1', ...
    workers: int = 0  # CPU threads for torch (torch.set_num_threads); 0 = torch's default
    seed: int = 0
    resume: bool = False  # continue RUN_DIR/last.pth
    crop: int = 48  # LR crop size (pixels)
    samples: int = 2304  # HR pixels queried per crop (must be <= crop**2)
    scale_min: float = 1.0
    scale_max: float = 4.0
    val_scales: list[int] = field(default_factory=lambda: [2, 4, 8])
    val_crop: int | None = None  # centre-crop val HR images to at most this many px a side
    # Also validate on degraded LR inputs: `liif bench --degrade` specs, e.g. ['jpeg:75'];
    # their scores are keyed 'x4 jpeg:75' beside the clean 'x4'.
    val_degrade: list[str] = field(default_factory=list)
    model: dict[str, Any] | None = None  # full ModelSpec dict; None = ModelSpec(encoder=...)
    # 'auto': bf16 autocast where the device computes bf16 fast (CUDA, a CPU with AMX or
    # AVX512-BF16), float32 elsewhere; 'bf16'; 'off'. A run records what 'auto' chose.
    amp: str = "auto"
    init: str | None = None  # weights to start from (bundled name or file); fresh optimiser
    ema: float = 0.0  # decay of a moving average of the weights (0: off); see _train_loop
    # LR input degradations: None (clean bicubic LR, the paper's), 'real' or
    # 'real:KEY=LO-HI,...' (see degrade.parse_training_spec), or a DegradationConfig (or its
    # dict). A run stores the full dict, so it keeps its ranges if the defaults change.
    degradation: str | dict[str, Any] | DegradationConfig | None = None
    # Each time a resume raised `steps`: [step reached, steps before, steps after].
    extensions: list[list[int]] = field(default_factory=list)

    @property
    def total_steps(self) -> int:
        """The run's length in steps: `steps`, or DEFAULT_STEPS when not given."""
        return DEFAULT_STEPS if self.steps is None else self.steps

    def spec(self) -> ModelSpec:
        """The model to train: `model` if given, else the paper's defaults for `encoder`."""
        if self.model is not None:
            return ModelSpec(**self.model)
        return ModelSpec(encoder=self.encoder)

    def degradation_config(self) -> DegradationConfig | None:
        """The degradation ranges `degradation` describes (None: off); LiifError if bad."""
        value = self.degradation
        if value is None or isinstance(value, DegradationConfig):
            return value
        if isinstance(value, str):
            return parse_training_spec(value)
        if isinstance(value, dict):
            return DegradationConfig.from_dict(value)
        raise LiifError(f"bad training option: degradation must be none, 'real' or a dict of "
                        f"ranges (got {type(value).__name__})")

    def to_dict(self) -> dict[str, Any]:
        raw = asdict(self)
        degradation = self.degradation
        if isinstance(degradation, DegradationConfig):  # asdict would keep its tuples
            raw["degradation"] = degradation.to_dict()
        return raw

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})

    def validate(self) -> None:
        """LiifError (one line) for a config that cannot run."""
        def bad(msg: str) -> None:
            raise LiifError(f"bad training option: {msg}")

        if not self.data:
            bad("no training data folder given")
        if self.total_steps < 1:
            bad(f"steps must be >= 1 (got {self.steps})")
        if self.batch_size < 1:
            bad(f"batch size must be >= 1 (got {self.batch_size})")
        if self.time_budget is not None and not self.time_budget > 0:
            bad(f"time budget must be > 0 seconds (got {self.time_budget})")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            bad(f"learning rate must be > 0 (got {self.lr})")
        if self.lr_schedule not in LR_SCHEDULES:
            bad(f"lr schedule must be one of {', '.join(LR_SCHEDULES)} "
                f"(got {self.lr_schedule!r})")
        if self.amp not in AMP_MODES:
            bad(f"amp must be one of {', '.join(AMP_MODES)} (got {self.amp!r})")
        if self.checkpoint_every < 1:
            bad(f"checkpoint interval must be >= 1 step (got {self.checkpoint_every})")
        if self.val_every < 0:
            bad(f"validation interval must be >= 0 (got {self.val_every})")
        if not 0.0 <= self.ema < 1.0:
            bad(f"ema decay must be in [0, 1) (got {self.ema})")
        self.degradation_config()  # its own one-line LiifError
        if self.workers < 0:
            bad(f"workers must be >= 0 (got {self.workers})")
        if self.crop < 1:
            bad(f"crop must be >= 1 px (got {self.crop})")
        if not 1 <= self.samples <= self.crop * self.crop:
            bad(f"samples per crop must be between 1 and crop^2 = {self.crop ** 2} "
                f"(got {self.samples})")
        if not 1.0 <= self.scale_min <= self.scale_max:
            bad(f"scale range must satisfy 1 <= min <= max (got {self.scale_min}, "
                f"{self.scale_max})")
        if any(int(s) < 1 for s in self.val_scales):
            bad(f"validation scales must be >= 1 (got {self.val_scales})")
        for spec in self.val_degrade:
            parse_spec(spec)  # its own one-line LiifError
        try:
            build_model(self.spec())
        except (TypeError, ValueError) as exc:
            bad(f"cannot build the model ({exc})")

    @property
    def max_crop(self) -> int:
        """The largest HR crop a sample can ask for: round(crop * scale_max)."""
        return round(self.crop * self.scale_max)


def progress_fraction(config: TrainConfig, step: int, elapsed: float = 0.0) -> float:
    """How far through the run we are, in [0, 1]: step / steps, or the share of
    `time_budget` spent (run time, validation included) if that is further along."""
    frac = step / config.total_steps
    if config.time_budget:
        frac = max(frac, elapsed / config.time_budget)
    return min(frac, 1.0)


def lr_at(config: TrainConfig, step: int, elapsed: float = 0.0) -> float:
    """Learning rate for the step that follows `step` completed steps (`elapsed` s of run time).

    'step': the paper's schedule scaled to the run: halved after each 20% of it.
    'cosine': half a cosine from lr to 0 over the run.
    The run's length is `steps`, or `time_budget` seconds if that ends first: a time budget
    makes the schedule depend on the machine's speed, so such a run does not resume
    bit-for-bit (a step-only run does).
    """
    frac = progress_fraction(config, step, elapsed)
    if config.lr_schedule == "step":
        k = (math.floor(5 * frac + 1e-9) if config.time_budget
             else (5 * step) // config.total_steps)
        return config.lr * 0.5 ** min(4, k)
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * frac))


# --------------------------------------------------------------------------- validation


def _centre_crop(array: np.ndarray, limit: int | None) -> np.ndarray:
    if not limit:
        return array
    h, w = array.shape[:2]
    ch, cw = min(h, limit), min(w, limit)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    return array[y0:y0 + ch, x0:x0 + cw]


def validate(model: LIIF, images: list[np.ndarray], scales: list[int],
             crop: int | None = None, precision: str = "fp32",
             degrades: Sequence[DegradeSpec | str] = ()) -> dict[str, dict[str, float]]:
    """Mean Y-PSNR of LIIF and of bicubic at each scale: {'psnr': {'x2': ..}, 'bicubic_psnr': ..}.

    LR = HR cropped to a multiple of the scale, then antialiased bicubic downscale (PIL);
    `scale` px are shaved from each border. Each of `degrades` (e.g. 'jpeg:75') adds a score
    per scale on the LR input so degraded ('x4 jpeg:75'), seeded per image as `liif bench
    --degrade` does. `precision` is the rendering precision (bf16 renders 2-3x faster on
    CPUs with bf16 units and moves PSNR by about 0.003 dB).
    """
    conditions = [None, *(parse_spec(d) if isinstance(d, str) else d for d in degrades)]
    was_training = model.training
    model.eval()
    psnr: dict[str, float] = {}
    bic: dict[str, float] = {}
    try:
        for s in scales:
            for degrade in conditions:
                key = f"x{s}" if degrade is None else f"x{s} {degrade}"
                ours, base = [], []
                for i, image in enumerate(images):
                    hr = _centre_crop(image, crop)
                    h, w = (hr.shape[0] // s) * s, (hr.shape[1] // s) * s
                    if h // s < 1 or w // s < 1 or min(h, w) <= 2 * s:
                        continue
                    hr = hr[:h, :w]
                    lr = bicubic_resize(hr, (h // s, w // s))
                    if degrade is not None:
                        lr = degrade.apply(lr, image_seed("val", i, s))
                    sr = render(model, to_unit(lr), (h, w),
                                device=next(model.parameters()).device, precision=precision)
                    truth = to_unit(hr)
                    ours.append(y_psnr(sr, truth, shave=s))
                    base.append(y_psnr(to_unit(bicubic_resize(lr, (h, w))), truth, shave=s))
                if ours:
                    psnr[key] = round(sum(ours) / len(ours), 4)
                    bic[key] = round(sum(base) / len(base), 4)
    finally:
        model.train(was_training)
    return {"psnr": psnr, "bicubic_psnr": bic}


# --------------------------------------------------------------------------- training


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


class _StopFlag:
    """Set by SIGINT/SIGTERM (or by the caller); the loop checks it after every step."""

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
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
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
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise LiifError(f"unknown device {name!r} (use auto, cpu or cuda)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LiifError(f"device {name!r} requested but CUDA is not available")
    return device


def _prepare_run_dir(out: Path) -> Path | None:
    """Create RUN_DIR and check it is writable; LiifError otherwise. Returns the outermost
    folder it created (None if RUN_DIR existed), for _remove_if_empty to undo; removes
    temporary files left in RUN_DIR by a killed run."""
    created = None
    for folder in (out, *out.parents):
        if folder.exists():
            break
        created = folder
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        _remove_if_empty(out, created)
        raise LiifError(f"cannot write to run dir {out}: {exc.strerror or exc}") from None
    remove_stale_temps(out)
    return created


def _remove_if_empty(out: Path, created: Path | None) -> None:
    """Remove the folders _prepare_run_dir created, from RUN_DIR up to `created`, while they
    are empty: a run that failed before writing anything leaves no trace."""
    if created is None:
        return
    for folder in (out, *out.parents):
        try:
            folder.rmdir()  # only ever removes an empty folder
        except OSError:
            return
        if folder == created:
            return


def _resume_config(config: TrainConfig, saved: dict[str, Any], step: int = 0,
                   elapsed: float = 0.0) -> tuple[TrainConfig, list[str]]:
    """The config of a resumed run: run-defining fields from the checkpoint, the rest given.

    A run-defining field that the checkpoint lacks is newer than the run, which therefore
    ran with its default (e.g. no degradation). The one exception is `steps`: a larger number
    than the run's extends it (also a finished run; `step` and `elapsed` are where it stands),
    with a warning, since the lr schedule then follows the new length; a smaller one is an
    error. Left out (None), or the same, the run resumes bit-for-bit.
    """
    defaults = TrainConfig()
    kept = {k: saved.get(k, getattr(defaults, k)) for k in RUN_FIELDS}
    kept["steps"] = int(kept["steps"] if kept["steps"] is not None else DEFAULT_STEPS)
    warnings = []
    if config.steps is not None and config.steps != kept["steps"]:
        warnings.append(_extend(kept, config.steps, step, elapsed))
    merged = TrainConfig.from_dict({**config.to_dict(), **kept})
    ignored = [k for k in RUN_FIELDS if k != "steps"
               and getattr(config, k) != kept[k] and getattr(config, k) != getattr(defaults, k)]
    if ignored:
        warnings.append("resuming: kept the checkpoint's " + ", ".join(ignored)
                        + " (the run's own settings; start a new run to change them)")
    merged.resume = True
    return merged, warnings


def _extend(kept: dict[str, Any], steps: int, step: int, elapsed: float) -> str:
    """Set a resumed run's `steps` to a larger `steps` in `kept` (its run-defining fields) and
    record it; returns the warning to show. LiifError for fewer steps, or for a run whose
    time budget is spent (more steps would not train any further)."""
    planned = kept["steps"]
    if steps < planned:
        raise LiifError(f"--steps {steps} is fewer than the run's {planned}: a run can be "
                        f"extended, not shortened (leave --steps out to go on to {planned})")
    budget = kept.get("time_budget")
    if budget and elapsed >= budget:
        raise LiifError(f"the run ended at its --time-budget of {budget:g} s, so more steps "
                        "would not train any further; start a new run with --init to go on")
    kept["steps"] = steps
    kept["extensions"] = [*(kept.get("extensions") or []), [step, planned, steps]]
    return (f"resuming: extended the run from {planned} to {steps} steps at step {step}; the "
            f"lr schedule now follows {steps} steps (not bit-for-bit with a run planned for "
            f"{steps} steps from the start)")


def _init_config(config: TrainConfig,
                 spec: ModelSpec) -> tuple[TrainConfig, list[str]]:
    """A fine-tuning run trains the architecture of its --init weights (`spec`): adopt it."""
    warnings = []
    if config.spec() != spec:
        warnings.append(f"--init: training the architecture of {config.init} "
                        f"({spec.encoder}), not the one the other options describe")
    return TrainConfig.from_dict({**config.to_dict(), "model": spec.to_dict(),
                                  "encoder": spec.encoder}), warnings


def _full_degradation(config: TrainConfig) -> TrainConfig:
    """A copy of `config` whose degradation is spelled out in full (a DegradationConfig dict,
    or None), as checkpoints record it; LiifError for a bad one."""
    degradation = config.degradation_config()
    return TrainConfig.from_dict({**config.to_dict(), "degradation":
                                  degradation.to_dict() if degradation is not None else None})


def _phase_summary(meta: dict[str, Any], weights: str) -> dict[str, Any]:
    """What a fine-tuning run records of the checkpoint it started from (`liif info`)."""
    keys = ("steps", "training_images", "batch_size", "lr", "lr_schedule", "training_time_s",
            "val_set", "val_psnr")
    summary = {"weights": weights, **{k: meta[k] for k in keys if k in meta}}
    if isinstance(summary.get("val_set"), str) and Path(summary["val_set"]).is_absolute():
        summary["val_set"] = "/".join(Path(summary["val_set"]).parts[-2:])  # no machine paths
    return summary


def _lineage(meta: dict[str, Any], weights: str, depth: int = 0) -> list[dict[str, Any]]:
    """The phases that made the checkpoint with metadata `meta` (found at `weights`), oldest
    first: its recorded history, or else that of its own --init file while it is there."""
    earlier: list[dict[str, Any]] = list(meta.get("history") or [])
    if "history" not in meta and meta.get("init") and depth < 20:
        try:
            parent = checkpoint.load(checkpoint.resolve_weights(meta["init"])).metadata
            earlier = _lineage(parent, meta["init"], depth + 1)
        except LiifError:
            earlier = []
    return [*earlier, _phase_summary(meta, weights)]


def _history(config: TrainConfig, start: checkpoint.Checkpoint | None) -> list[dict[str, Any]]:
    """The training phases before this run (fine-tuning with --init): what made the --init
    weights. A resumed run keeps the history it saved; runs from before histories existed
    rebuild it from their --init file, while that is still there."""
    if start is None or not config.init:
        return []
    if not config.resume:
        return _lineage(start.metadata, config.init)
    if "history" in start.metadata:
        return list(start.metadata["history"])
    try:
        return _lineage(checkpoint.load(checkpoint.resolve_weights(config.init)).metadata,
                        config.init)
    except LiifError:
        return []


def _metadata(config: TrainConfig, step: int, last_val: dict[str, Any] | None,
              names: list[str], elapsed: float, world: int = 1,
              history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    meta = {
        "trained_with": "liif train",
        "training_data": [str(d) for d in config.data],  # as given: no absolute paths
        "training_images": len(names),
        "steps": step,
        "total_steps": config.steps,
        "encoder": config.spec().encoder,
        "batch_size": config.batch_size,
        "lr": config.lr,
        "lr_schedule": config.lr_schedule,
        "amp": config.amp,
        "ema": config.ema,
        "training_time_s": round(elapsed, 1),
        "crop": config.crop,
        "samples": config.samples,
        "scale_range": [config.scale_min, config.scale_max],
        "val_set": str(config.val) if config.val else None,
        "val_psnr": (last_val or {}).get("psnr"),
        "val_bicubic_psnr": (last_val or {}).get("bicubic_psnr"),
        "val_step": (last_val or {}).get("step"),
        "val_crop": config.val_crop,
        "seed": config.seed,
    }
    degradation = config.degradation_config()
    if degradation is not None:
        meta["degradation"] = degradation.to_dict()
    if config.init:
        meta["init"] = config.init
    if history:  # earlier phases (fine-tuning): what `liif info` shows as the whole story
        meta["history"] = history
        meta["steps_all_phases"] = step + sum(int(h.get("steps") or 0) for h in history)
    if config.extensions:  # resumed with more --steps: the lr schedule was stretched then
        meta["extended"] = [f"from {old} to {new} steps at step {at}"
                            for at, old, new in config.extensions]
    if world > 1:  # batch_size above is the global batch
        meta["ranks"] = world
        meta["batch_per_rank"] = config.batch_size // world
    return meta


def run_training(config: TrainConfig, progress: ProgressFn | None = None,
                 stop: threading.Event | None = None) -> TrainResult:
    """Train (or resume) a LIIF model as `config` says; returns when done or interrupted.

    progress: called with a TrainEvent after every step and at each warning, validation,
    checkpoint and the end. stop: an Event the caller may set to stop cleanly (SIGINT and
    SIGTERM set it too while this runs in the main thread). Raises LiifError for bad input
    and for a non-finite loss (the last good checkpoint is kept).

    If a torch.distributed process group is initialised (liif_cli.distributed.init_from_env
    under torchrun), call this on every rank: they train one model with DDP, `progress` is
    called on rank 0 only, and errors are raised on all ranks alike.
    """
    # In a process group only rank 0 reports; any rank's setup error is raised on all ranks.
    emit = (progress if distributed.is_main() else None) or (lambda event: None)
    with distributed.agreed_errors():
        config, start, device, images, names, val_images, warnings = _setup(config)
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
    train_state), the --init weights when fine-tuning, else None.
    """
    out = Path(config.out).expanduser()
    ckpt_path = out / CHECKPOINT_NAME
    warnings: list[str] = []
    config = _full_degradation(config)

    # ---- resume, fine-tune or fresh start
    start = None
    if config.resume:
        if not ckpt_path.is_file():
            raise LiifError(f"nothing to resume: {ckpt_path} does not exist")
        start = checkpoint.load(ckpt_path)
        state = start.extra.get("train_state")
        if not isinstance(state, dict) or "config" not in state:
            raise LiifError(f"{ckpt_path} is not a training checkpoint (no train_state)")
        config, more = _resume_config(config, state["config"], int(state.get("step", 0)),
                                      float(state.get("elapsed_s", 0.0)))
        warnings += more
    elif ckpt_path.exists():
        raise LiifError(f"{out} already holds a run ({CHECKPOINT_NAME}); "
                        "resume it or choose another output folder")
    elif config.init:
        start = checkpoint.load(checkpoint.resolve_weights(config.init))
        config, more = _init_config(config, start.spec)
        warnings += more
    if config.steps is None:
        config.steps = DEFAULT_STEPS
    config.validate()
    world = distributed.world_size()
    if config.batch_size % world:
        raise LiifError(f"bad training option: batch size {config.batch_size} does not split "
                        f"evenly over {world} ranks (it is the global batch: use a multiple "
                        f"of {world})")
    created = _prepare_run_dir(out)
    try:
        device = resolve_device(distributed.device_name(config.device))
        config.amp = resolve_amp(config.amp, device, legacy=config.resume)
        images, names, more = load_images(config.data, config.max_crop, "training")
        warnings += more
        val_images: list[np.ndarray] = []
        if config.val:
            val_images, _, more = load_images([config.val], 2 * max(config.val_scales) + 1,
                                              "validation")
            warnings += more
    except BaseException:
        _remove_if_empty(out, created)
        raise
    return config, start, device, images, names, val_images, warnings


class _LossModule(torch.nn.Module):
    """The training loss as a module: DistributedDataParallel synchronises the gradients of
    what runs through its wrapped module's forward."""

    def __init__(self, model: LIIF, amp: str | None):
        super().__init__()
        self.model = model
        self.amp = amp

    def forward(self, inp: torch.Tensor, coord: torch.Tensor, cell: torch.Tensor,
                gt: torch.Tensor) -> torch.Tensor:
        batch = {"inp": inp, "coord": coord, "cell": cell, "gt": gt}
        return training_loss(self.model, batch, self.amp)


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
        self.n_images, self.emit = len(images), emit
        self.out = Path(config.out).expanduser()
        self.ckpt_path = self.out / CHECKPOINT_NAME
        self.metrics_path = self.out / METRICS_NAME
        self.rank, self.world = distributed.rank(), distributed.world_size()
        self.main = self.rank == 0  # writes the files; in a plain process always True

        torch.manual_seed(config.seed)  # model initialisation (the same on every rank)
        self.model = prepare_for_training(build_model(config.spec()).to(device))
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.generator = torch.Generator()  # data sampling: always on the CPU
        self.generator.manual_seed(config.seed)
        self.step, self.elapsed = 0, 0.0
        self.last_val: dict[str, Any] | None = None
        self.loss_value: float | None = None
        self.history = _history(config, start)
        if start is not None:  # resumed, or fine-tuned (--init: optimiser and schedule anew)
            self.model.load_state_dict(start.state_dict)
        # With `ema`, a moving average of the weights is kept beside them: it is what
        # validation scores and what the checkpoint's weights (state_dict) hold, so a run
        # stopped at any point, even at a high learning rate, leaves usable weights. The
        # weights being trained are then in train_state["model"].
        self.averaged = (AveragedModel(self.model,
                                       multi_avg_fn=get_ema_multi_avg_fn(config.ema))
                         if config.ema else None)
        if config.resume:
            self._restore(start.extra["train_state"], start.state_dict)
        elif self.main:
            self.metrics_path.unlink(missing_ok=True)
        if self.main:
            (self.out / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")

        self.sampler = CropSampler(images, config.crop, config.samples, config.scale_min,
                                   config.scale_max, config.degradation_config())
        self.amp = device.type if config.amp == "bf16" else None  # resolved by _setup
        self.ddp = None
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.ddp = DistributedDataParallel(
                _LossModule(self.model, self.amp),
                device_ids=[device] if device.type == "cuda" else None)
        # Losses since the last validation, for its record and the progress events' average.
        self.losses: list[float] = []
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
        if self.main:
            _truncate_metrics(self.metrics_path, self.step)

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
        avg = sum(self.losses) / len(self.losses) if self.losses else None
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
            sig = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM"}.get(flag.signal, "stop")
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
            loss = training_loss(self.model, batch, self.amp)
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
        self.losses.append(self.loss_value)
        return lr

    def _validate(self, lr: float) -> None:
        """Score the weights (their moving average, if kept) and append to metrics.jsonl;
        its time is run time too (time_budget)."""
        config = self.config
        t1 = time.perf_counter()
        weights = self.averaged.module if self.averaged is not None else self.model
        result = validate(weights, self.val_images, config.val_scales, config.val_crop,
                          "bf16" if self.amp == "cpu" else "fp32", config.val_degrade)
        record = {"step": self.step, "loss": round(sum(self.losses) / len(self.losses), 6),
                  "lr": lr, **result, "time": round(self.elapsed, 1),
                  "val_s": round(time.perf_counter() - t1, 2),
                  "wall": time.strftime("%Y-%m-%dT%H:%M:%S")}
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        self.last_val = record
        self.elapsed += time.perf_counter() - self.tick
        self.tick = time.perf_counter()
        self.losses = []

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
        }
        weights = self.model
        if self.averaged is not None:
            train_state["model"] = checkpoint.to_dict(self.model)["state_dict"]
            train_state["ema_updates"] = int(self.averaged.n_averaged)
            weights = self.averaged.module
        metadata = _metadata(config, self.step, self.last_val, self.names, self.elapsed,
                             self.world, self.history)
        checkpoint.save(checkpoint.to_dict(weights, metadata, train_state=train_state),
                        self.ckpt_path)


def _diverged(loss: float, step: int, ckpt_path: Path) -> LiifError:
    return LiifError(f"training diverged: loss is {loss} at step {step}; stopped without "
                     f"saving (the last good checkpoint is "
                     f"{ckpt_path if ckpt_path.exists() else 'not written yet'}); "
                     "try a lower learning rate")


def prepare_for_training(model: LIIF) -> LIIF:
    """The model in the memory layout training runs fastest in: channels-last convolutions
    (oneDNN and cuDNN pick faster kernels for NHWC). Same values, other strides."""
    return model.to(memory_format=torch.channels_last)


def training_loss(model: LIIF, batch: dict[str, torch.Tensor],
                  amp: str | None = None) -> torch.Tensor:
    """L1 loss of the fast decoder path; `amp` = device type to autocast to bf16 on, or None.

    Under bf16 autocast the whole decoder runs in bf16, first layer included, exactly as
    `liif upscale --precision bf16` renders; the loss is taken in float32.
    """
    inp = batch["inp"].contiguous(memory_format=torch.channels_last)
    with torch.autocast(device_type=amp or "cpu", dtype=torch.bfloat16, enabled=amp is not None):
        proj = model.project_latents(model.encode(inp))
        # The projection covers the whole crop: no window check (it would stall a GPU).
        pred = model.query_rgb(proj, batch["coord"], batch["cell"], check_window=False)
    return F.l1_loss(pred.float(), batch["gt"])


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines newer than the resumed checkpoint (they will be recomputed)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if int(json.loads(line)["step"]) <= step:
                keep.append(line)
        except (ValueError, KeyError, TypeError):
            continue
    path.write_text("".join(line + "\n" for line in keep))


# --------------------------------------------------------------------------- display


def _format_val(val: dict[str, Any] | None) -> str:
    if not val or not val.get("psnr"):
        return ""
    return " ".join(f"{k} {v:.2f}" for k, v in val["psnr"].items())


def _format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def line_progress(write: Callable[[str], Any] = print, every_s: float = 60.0) -> ProgressFn:
    """A progress callback that writes one plain line per `every_s` seconds (for logs)."""
    last = [0.0]

    def callback(ev: TrainEvent) -> None:
        if ev.kind == "step":
            now = time.monotonic()
            if now - last[0] < every_s and ev.step != 1:
                return
            last[0] = now
            rate = f"{ev.steps_per_s:.3f}" if ev.steps_per_s else "?"
            write(f"step {ev.step}/{ev.total} loss {ev.loss:.4f} avg {ev.avg_loss:.4f} "
                  f"lr {ev.lr:.2e} {rate} steps/s eta {_format_eta(ev.eta_s)}")
        elif ev.kind == "val" and ev.val:
            v = ev.val
            write(f"val step {v['step']}: psnr {json.dumps(v['psnr'])} bicubic "
                  f"{json.dumps(v['bicubic_psnr'])} ({v['val_s']} s)")
        elif ev.kind == "checkpoint":
            write(f"checkpoint at step {ev.step}")
        elif ev.message:
            write(f"{ev.kind}: {ev.message}")

    return callback


def train_with_console(config: TrainConfig, console: Any) -> TrainResult:
    """run_training with a Rich progress bar on `console` (plain lines if not a terminal)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    from rich.text import Text

    if not console.is_terminal:
        return run_training(config, line_progress(
            lambda line: console.print(line, markup=False, highlight=False)))

    columns = (TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[rate]} it/s"),
               TextColumn("eta {task.fields[eta]}"), TextColumn("[cyan]{task.fields[val]}"))
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("train", total=config.steps, loss="-", rate="-", eta="-", val="")

        def callback(ev: TrainEvent) -> None:
            if ev.kind in ("warning", "interrupted", "done"):
                style = "yellow" if ev.kind != "done" else "green"
                bar.console.print(Text.assemble((f"{ev.kind}: ", style), ev.message))
            if ev.kind == "start":
                bar.update(task, completed=ev.step, total=ev.total)
            if ev.kind in ("step", "val", "checkpoint"):
                bar.update(task, completed=ev.step,
                           loss=f"{ev.loss:.4f}" if ev.loss is not None else "-",
                           rate=f"{ev.steps_per_s:.2f}" if ev.steps_per_s else "-",
                           eta=_format_eta(ev.eta_s), val=_format_val(ev.val))

        return run_training(config, callback)
