"""Why the fast models render in float32 under bf16 on the CPU: the engine's x4 render of a
512x384 input (2048x1536 out) with the fast weights, encoder and latent MLP in bf16, render
layers in fp32 (what `engine.render_dtype` picks) against bf16, and all in fp32; best of 4.

    python weights/training/liif-edsr-baseline-fast/render_dtype.py

Run it on an idle machine with bf16 units. On a 2-core Zen 5 EPYC (AVX512-BF16) it printed
decode 0.513 s (all fp32), 0.564 s (fp32 render), 1.262 s (bf16 render).
"""
import time

import torch

from liif_cli import engine
from liif_cli.api import Upscaler
from liif_cli.engine import RenderTimes

CHOSEN = engine.render_dtype


def best_render(model, image, size, precision, render_dtype=CHOSEN, runs=4):
    """(output, seconds, encode seconds, decode seconds) of the fastest of `runs` renders."""
    engine.render_dtype = render_dtype
    try:
        best = None
        for _ in range(runs):
            times = RenderTimes()
            start = time.perf_counter()
            out = engine.render(model, image, size, precision=precision, times=times)
            took = (time.perf_counter() - start, times.encode_seconds, times.decode_seconds)
            if best is None or took[0] < best[0]:
                best = took
        return (out, *best)
    finally:
        engine.render_dtype = CHOSEN


def main() -> None:
    model = Upscaler.from_pretrained("fast").model.eval()
    image = torch.rand(3, 384, 512, generator=torch.Generator().manual_seed(0))
    size = (1536, 2048)
    rows = {"all fp32": (None, "fp32"), "bf16 encoder, fp32 render": (None, "bf16"),
            "bf16 encoder, bf16 render": (lambda dtype, device, decoder: dtype, "bf16")}
    outputs = {}
    for label, (render_dtype, precision) in rows.items():
        out, total, encode, decode = best_render(model, image, size, precision,
                                                 render_dtype or CHOSEN)
        outputs[label] = out
        print(f"{label + ':':27} total {total:.3f} s, encode {encode:.3f} s, "
              f"decode {decode:.3f} s, largest difference from all fp32 "
              f"{(out - outputs['all fp32']).abs().max():.2e}")


if __name__ == "__main__":
    main()
