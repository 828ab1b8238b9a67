"""Training LIIF the way the paper does (Chen, Liu & Wang, CVPR 2021, section 4.1).

Modules: `config` (TrainConfig, the lr schedule, resumed and fine-tuned settings), `loop`
(run_training: the steps, checkpoints and signals), `validation` (Y-PSNR during training),
`run_files` (the run folder, checkpoint metadata, metrics.jsonl) and `progress` (log lines
and the Rich bar). The names below are the package's interface.

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

from importlib import import_module
from typing import Any

from .config import (
    AMP_MODES,
    CHECKPOINT_NAME,
    DEFAULT_STEPS,
    LR_SCHEDULES,
    METRICS_NAME,
    RUN_FIELDS,
    TrainConfig,
    lr_at,
    progress_fraction,
)

# The rest needs torch, so it is imported on first use (a module __getattr__, PEP 562): the
# CLI checks a run's options with TrainConfig alone and answers a usage error at once.
_FROM_SUBMODULE = {
    "ProgressFn": "loop", "TrainEvent": "loop", "TrainResult": "loop",
    "prepare_for_training": "loop", "resolve_amp": "loop", "resolve_device": "loop",
    "run_training": "loop", "training_loss": "loop",
    "line_progress": "progress", "train_with_console": "progress",
    "validate": "validation",
}


def __getattr__(name: str) -> Any:
    if name not in _FROM_SUBMODULE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_FROM_SUBMODULE[name]}", __name__), name)


__all__ = ["AMP_MODES", "CHECKPOINT_NAME", "DEFAULT_STEPS", "LR_SCHEDULES", "METRICS_NAME",
           "RUN_FIELDS", "ProgressFn", "TrainConfig", "TrainEvent", "TrainResult", "line_progress",
           "lr_at", "prepare_for_training", "progress_fraction", "resolve_amp", "resolve_device",
           "run_training", "train_with_console", "training_loss", "validate"]
