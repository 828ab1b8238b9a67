"""What a training run is: its settings (TrainConfig), its learning-rate schedule, and how the
settings of a resumed or fine-tuned run are worked out from its checkpoint.

No torch at import (the model module is imported where a model is built), so that `liif
train` checks its options at once."""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import bundled
from ..degrade_settings import DegradationConfig, parse_spec, parse_training_spec
from ..errors import LiifError

if TYPE_CHECKING:
    from ..model import ModelSpec

LR_SCHEDULES = ("step", "cosine")
CHECKPOINT_NAME = "last.pth"
METRICS_NAME = "metrics.jsonl"

# Fields that define a run: on resume they come from the checkpoint, not from the caller.
# `steps` may be raised on resume to extend a run (see resume_config); `extensions` records that.
RUN_FIELDS = ("data", "encoder", "decoder", "model", "init", "steps", "time_budget",
              "batch_size", "lr", "lr_schedule", "seed", "ema",
              "crop", "samples", "scale_min", "scale_max", "shrink_max", "amp", "degradation",
              "teacher", "distill", "freeze_encoder", "extensions")
# Fields that only watch a run (validation, checkpoint interval) or say where it runs (the
# device, the CPU threads: both change the numbers a little): on resume they stay the run's
# own unless given again.
WATCH_FIELDS = ("val", "val_every", "val_scales", "val_crop", "val_degrade", "checkpoint_every",
                "device", "workers")
MAX_WORKERS = 1024  # more CPU threads than any machine has is a typing slip
SEED_RANGE = (0, 2**63 - 1)  # what every generator a run seeds takes
DEFAULT_STEPS = 100_000
AMP_MODES = ("auto", "bf16", "off")


@dataclass
class TrainConfig:
    """Everything `liif train` needs. Paths are strings so the config is a plain dict."""

    data: list[str] = field(default_factory=list)  # folders (or files) of training images
    out: str = "runs/train"  # run dir: last.pth, metrics.jsonl, config.json
    val: str | None = None  # folder of HR images for validation, e.g. Set5/HR
    encoder: str = "edsr-baseline"  # 'edsr-baseline' | 'rdn' (| 'edsr')
    decoder: str = "liif"  # 'liif' (the paper's MLP) | 'lmf' (the fast, latent-modulated one)
    # None: DEFAULT_STEPS for a new run, the run's own on resume; a larger number on resume
    # extends the run (see resume_config).
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
    # Each HR crop is cut from its photo shrunk by a random factor in [1, shrink_max]
    # (antialiased bicubic): more detail per pixel than the photos hold. 1: off (the paper).
    shrink_max: float = 1.0
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
    ema: float = 0.0  # decay of a moving average of the weights (0: off); see loop._Run
    # LR input degradations: None (clean bicubic LR, the paper's), 'real' or
    # 'real:KEY=LO-HI,...' (see degrade_settings.parse_training_spec), or a DegradationConfig
    # (or its dict). A run stores the full dict, so it keeps its ranges if the defaults change.
    degradation: str | dict[str, Any] | DegradationConfig | None = None
    # Distillation: a trained model (bundled name or file) whose RGB at the same queries is a
    # second target; the loss is (1 - distill) * L1(gt) + distill * L1(teacher's RGB).
    teacher: str | None = None
    distill: float = 0.0
    freeze_encoder: bool = False  # train the decoder alone (e.g. on --init's encoder)
    # Each time a resume raised `steps`: [step reached, steps before, steps after].
    extensions: list[list[int]] = field(default_factory=list)
    # The fields the user set (the CLI: the options on its command line), which a resumed
    # run takes or warns about; None: each field that differs from its default. Not saved.
    given: list[str] | None = None

    def is_given(self, name: str) -> bool:
        """Whether the user set field `name` (see `given`)."""
        if self.given is not None:
            return name in self.given
        return getattr(self, name) != getattr(TrainConfig(), name)

    @property
    def total_steps(self) -> int:
        """The run's length in steps: `steps`, or DEFAULT_STEPS when not given."""
        return DEFAULT_STEPS if self.steps is None else self.steps

    def spec(self) -> ModelSpec:
        """The model to train: `model` if given, else the paper's defaults for `encoder`."""
        from ..model import ModelSpec

        if self.model is not None:
            return ModelSpec(**self.model)
        return ModelSpec(encoder=self.encoder, decoder=self.decoder)

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

    def absolute_paths(self) -> TrainConfig:
        """A copy with `data`, `val` and the `init` and `teacher` files as absolute paths
        (`~` expanded), so that the run resumes from any working folder; bundled weights
        names (`default`, `real`, ...) stay names."""
        return replace(self, data=[_absolute(d) for d in self.data],
                       val=None if self.val is None else _absolute(self.val),
                       init=_absolute_weights(self.init), teacher=_absolute_weights(self.teacher))

    def to_dict(self) -> dict[str, Any]:
        raw = asdict(self)
        raw.pop("given")
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
        self.check_options()
        if not self.data:
            raise LiifError("bad training option: no training data folder given")
        from ..model import build_model

        try:
            build_model(self.spec())
        except (TypeError, ValueError) as exc:
            raise LiifError(f"bad training option: cannot build the model ({exc})") from None

    def check_options(self) -> None:
        """LiifError (one line) for a bad setting; unlike validate, without torch (so the CLI
        answers at once) and without needing `data` (a resumed run brings its own)."""
        def bad(msg: str) -> None:
            raise LiifError(f"bad training option: {msg}")

        for name in ("steps", "batch_size", "checkpoint_every", "val_every", "workers", "seed",
                     "crop", "samples"):
            value = getattr(self, name)
            if value is not None:
                whole = _whole(value)
                if whole is None:
                    bad(f"{name} must be a whole number (got {value!r})")
                setattr(self, name, whole)  # numpy ints and 10.0 (a JSON file's) as int
        if self.total_steps < 1:
            bad(f"steps must be >= 1 (got {self.steps})")
        if self.batch_size < 1:
            bad(f"batch size must be >= 1 (got {self.batch_size})")
        # A new run's seed fits every generator; a resumed one keeps what it ran with.
        if not self.resume and not SEED_RANGE[0] <= self.seed <= SEED_RANGE[1]:
            bad(f"seed must be between {SEED_RANGE[0]} and {SEED_RANGE[1]:,} (got {self.seed})")
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
        if not 0 <= self.workers <= MAX_WORKERS:
            bad(f"workers must be between 0 and {MAX_WORKERS} (got {self.workers})")
        if self.crop < 1:
            bad(f"crop must be >= 1 px (got {self.crop})")
        if not 1 <= self.samples <= self.crop * self.crop:
            bad(f"samples per crop must be between 1 and crop^2 = {self.crop ** 2} "
                f"(got {self.samples})")
        if not 1.0 <= self.scale_min <= self.scale_max < math.inf:
            bad(f"scale range must satisfy 1 <= min <= max (got {self.scale_min}, "
                f"{self.scale_max})")
        if self.decoder not in ("liif", "lmf"):
            bad(f"decoder must be liif or lmf (got {self.decoder!r})")
        if not 0.0 <= self.distill <= 1.0:
            bad(f"distill must be in [0, 1] (got {self.distill})")
        if self.distill > 0 and self.teacher is None:
            bad("distill needs a teacher (--teacher, e.g. default)")
        if self.teacher is not None and self.distill == 0:
            bad("a teacher needs --distill above 0 (the weight of its L1 in the loss)")
        if not 1.0 <= self.shrink_max <= 8.0:
            bad(f"shrink_max must be in [1, 8] (got {self.shrink_max})")
        scales = [_whole(s) for s in self.val_scales or []]
        if not scales or any(s is None or s < 1 for s in scales):
            bad(f"validation scales must be whole numbers >= 1 (got {self.val_scales})")
        self.val_scales = scales
        if self.val_crop is not None:
            crop = _whole(self.val_crop)
            if crop is None or crop < 1:
                bad(f"val_crop must be a whole number of pixels >= 1 (got {self.val_crop!r})")
            self.val_crop = crop
        for spec in self.val_degrade:
            parse_spec(spec)  # its own one-line LiifError
        if not self.resume:  # a resumed run trains on its own data, from its own start
            if self.freeze_encoder and self.init is None:
                bad("--freeze-encoder keeps the encoder of --init; give --init (e.g. default)")
            self.check_validation()
            for what, path in [*(("training", d) for d in self.data), ("validation", self.val)]:
                if path is not None and not os.path.exists(Path(path).expanduser()):
                    raise LiifError(f"{what} data not found: {path}")
            for weights in (self.init, self.teacher):
                if weights is not None:
                    bundled.resolve_weights(weights)  # its own one-line LiifError

    def check_validation(self) -> None:
        """LiifError if validation options were given to a run with nothing to validate on
        (no `val`): they would be ignored. A resumed run checks its merged config."""
        if self.val is None:
            for name in ("val_degrade", "val_every", "val_scales", "val_crop"):
                option = "--" + name.replace("_", "-")
                if getattr(self, name) and self.is_given(name):
                    raise LiifError(f"bad training option: {option} needs --val (the images "
                                    "to validate on)")

    @property
    def max_crop(self) -> int:
        """The largest HR crop a sample can ask for: round(crop * scale_max)."""
        return round(self.crop * self.scale_max)


def _whole(value: object) -> int | None:
    """`value` as an int if it is a whole number (a numpy integer, or a float such as 10.0);
    None for anything else (2.5, True, '3')."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _absolute(path: str) -> str:
    """`path` absolute and normalised ('a/../b' -> 'b'; symlinks kept, unlike resolve)."""
    return os.path.abspath(os.path.expanduser(path))


def _absolute_weights(weights: str | None) -> str | None:
    """A weights file as an absolute path; a bundled name (or None) as given."""
    if weights is None or bundled.file_stem(weights) in bundled.available_weights():
        return weights
    return _absolute(weights) if os.path.isfile(Path(weights).expanduser()) else weights


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


def resume_config(config: TrainConfig, saved: dict[str, Any], step: int = 0,
                  elapsed: float = 0.0) -> tuple[TrainConfig, list[str]]:
    """The config of a resumed run: run-defining fields from the checkpoint, the rest given.

    A run-defining field that the checkpoint lacks is newer than the run, which therefore
    ran with its default (e.g. no degradation). There are two exceptions. `steps`: a larger
    number than the run's extends it (also a finished run; `step` and `elapsed` are where it
    stands), with a warning, since the lr schedule then follows the new length; a smaller one
    is an error. Left out (None), or the same, the run resumes bit-for-bit. And `data`: given
    (`--data`), it replaces the folders the run recorded, with a warning (a run whose data
    moved; the same images in the same folders resume it bit-for-bit). The fields that watch
    the run (WATCH_FIELDS: validation, checkpoint interval) stay the run's unless given.
    """
    defaults = TrainConfig()
    kept = {k: saved.get(k, getattr(defaults, k)) for k in RUN_FIELDS}
    kept["steps"] = int(kept["steps"] if kept["steps"] is not None else DEFAULT_STEPS)
    warnings = []
    recorded = [str(d) for d in kept["data"] or []]
    if config.data:
        if [_absolute(d) for d in config.data] != [_absolute(d) for d in recorded]:
            warnings.append(f"resuming on the --data given, {', '.join(config.data)}, instead "
                            f"of the run's {', '.join(recorded) or 'none'}")
        kept["data"] = list(config.data)
    if config.steps is not None and config.steps != kept["steps"]:
        warnings.append(_extend(kept, config.steps, step, elapsed))
    watch = {k: saved[k] for k in WATCH_FIELDS if k in saved and not config.is_given(k)}
    merged = TrainConfig.from_dict({**config.to_dict(), **watch, **kept})
    if merged.val is None:  # nor has the run a validation set: validation options do nothing
        config.check_validation()
    ignored = [k for k in RUN_FIELDS if k != "steps"
               and config.is_given(k) and getattr(config, k) != kept[k]]
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


def init_config(config: TrainConfig, spec: ModelSpec) -> tuple[TrainConfig, list[str]]:
    """A fine-tuning run trains the architecture of its --init weights (`spec`): adopt it.

    A run of the other decoder family (a fast model started from a LIIF) adopts the encoder
    and the switches it shares with `spec` and keeps its own decoder."""
    warnings = []
    own = config.spec()
    if own.decoder != spec.decoder:
        spec = replace(own, encoder=spec.encoder, encoder_args=spec.encoder_args,
                       feat_unfold=spec.feat_unfold, local_ensemble=spec.local_ensemble,
                       cell_decode=spec.cell_decode)
    elif own != spec:
        warnings.append(f"--init: training the architecture of {config.init} "
                        f"({spec.encoder}), not the one the other options describe")
    return replace(config, model=spec.to_dict(), encoder=spec.encoder,
                   decoder=spec.decoder), warnings


def full_degradation(config: TrainConfig) -> TrainConfig:
    """A copy of `config` whose degradation is spelled out in full (a DegradationConfig dict,
    or None), as checkpoints record it; LiifError for a bad one."""
    degradation = config.degradation_config()
    return replace(config, degradation=degradation.to_dict() if degradation is not None
                   else None)

