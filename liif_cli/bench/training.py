"""`liif bench --training`: training throughput (crops per second) of `liif train`'s step
against the straightforward step, in one run on the same synthetic data.

The straightforward step is how the model trained before the speed work: contiguous (NCHW)
convolutions, the decoder's first layer (latent gather, offset/cell part, ReLU) in float32
under bf16 autocast, and glibc's default allocator. `liif train`'s step uses channels-last
convolutions, the whole decoder in bf16 under autocast, and keeps freed memory
(liif_cli.runtime). Both draw the same batches (batch building is timed too).

The reference runs first at every thread count, then the allocator setting is switched on
(it cannot be switched off again) and `liif train`'s step runs. Each figure is the median of
`repeats` timed blocks of `steps` steps, after warm-up steps.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..dataset import CropSampler
from ..model import LIIF, ModelSpec, build_model
from ..runtime import retain_freed_memory
from ..train import prepare_for_training, training_loss

Step = Callable[[dict[str, torch.Tensor]], torch.Tensor]


def synthetic_images(count: int = 8, size: int = 384, seed: int = 0) -> list[np.ndarray]:
    """Smooth random uint8 RGB images: training data whose content does not matter."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (count, size // 16, size // 16, 3)).astype(np.float32)
    images = np.repeat(np.repeat(coarse, 16, axis=1), 16, axis=2)
    images += rng.normal(0, 12, images.shape)
    return [np.ascontiguousarray(img.clip(0, 255).astype(np.uint8)) for img in images]


def reference_loss(model: LIIF, batch: dict[str, torch.Tensor], amp: str | None) -> torch.Tensor:
    """The straightforward loss: NCHW, and the decoder's first layer in float32."""
    with torch.autocast(device_type=amp or "cpu", dtype=torch.bfloat16, enabled=amp is not None):
        proj = model.project_latents(model.encode(batch["inp"]))
        if amp is not None:
            proj.values = proj.values.float()
        pred = model.query_rgb(proj, batch["coord"], batch["cell"])
    return F.l1_loss(pred.float(), batch["gt"])


def _make_step(kind: str, spec: ModelSpec, amp: str | None, seed: int) -> Step:
    torch.manual_seed(seed)
    model = build_model(spec)
    if kind == "liif":
        model = prepare_for_training(model)
    loss_fn = training_loss if kind == "liif" else reference_loss
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        loss = loss_fn(model, batch, amp)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def _time_blocks(step: Step, sampler: CropSampler, batch_size: int, steps: int, warmup: int,
                 repeats: int, seed: int) -> tuple[float, float]:
    """Median crops/s over `repeats` blocks of `steps` steps, and the last loss."""
    g = torch.Generator().manual_seed(seed)
    loss = torch.zeros(())
    for _ in range(warmup):
        loss = step(sampler.batch(batch_size, g))
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            loss = step(sampler.batch(batch_size, g))
        rates.append(steps * batch_size / (time.perf_counter() - start))
    return statistics.median(rates), float(loss)


def run_training_speed(*, threads: list[int], batch_size: int = 4, amp: str | None = "cpu",
                       steps: int = 10, warmup: int = 3, repeats: int = 3, seed: int = 0,
                       spec: ModelSpec | None = None,
                       progress: Callable[[int, int, str], Any] | None = None) -> dict[str, Any]:
    """Crops/s of the reference and of `liif train`'s step at each thread count (CPU)."""
    spec = spec or ModelSpec()
    sampler = CropSampler(synthetic_images(seed=seed))
    old_threads = torch.get_num_threads()
    rows: dict[int, dict[str, Any]] = {n: {"threads": n} for n in threads}
    total, done = 2 * len(threads), 0
    try:
        for kind in ("reference", "liif"):
            if kind == "liif":
                retained = retain_freed_memory()
            for n in threads:
                if progress:
                    progress(done, total, f"{kind} step, {n} thread(s)")
                torch.set_num_threads(n)
                rate, loss = _time_blocks(_make_step(kind, spec, amp, seed), sampler,
                                          batch_size, steps, warmup, repeats, seed)
                rows[n][f"{kind}_crops_per_s"] = round(rate, 3)
                rows[n][f"{kind}_loss"] = loss
                done += 1
    finally:
        torch.set_num_threads(old_threads)
    for row in rows.values():
        row["speedup"] = round(row["liif_crops_per_s"] / row["reference_crops_per_s"], 3)
    return {
        "kind": "training-speed",
        "torch_version": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "batch_size": batch_size,
        "amp": "bf16" if amp else "off",
        "steps_per_block": steps,
        "repeats": repeats,
        "retained_freed_memory": retained,
        "model_spec": spec.to_dict(),
        "rows": list(rows.values()),
    }
