"""The engine on a CUDA GPU, for both model families (LIIF and the fast LMF): the same pixels
as the CPU's float32 render, and no host synchronisation inside the per-chunk loop. Skipped
where no CUDA GPU is available.

Run on a GPU machine with `pytest -q tests/test_gpu.py`; the tolerances are stated per test.
"""

from __future__ import annotations

import pytest
import torch

from liif_cli import engine
from liif_cli.engine import render
from liif_cli.model import Decoder, GridDecoder, ImplicitImage, ModelSpec, build_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CUDA = torch.device("cuda")


@pytest.fixture(scope="module", params=["liif", "lmf"])
def model(request) -> ImplicitImage:
    torch.manual_seed(0)
    return build_model(ModelSpec(encoder_args=dict(n_resblocks=2, n_feats=16),
                                 hidden=[64, 64], decoder=request.param,
                                 latent_hidden=[64], render_width=8, render_depth=3)).eval()


@pytest.fixture(scope="module")
def picture() -> torch.Tensor:
    return torch.rand(3, 37, 53, generator=torch.Generator().manual_seed(3))


def test_cuda_fp32_equals_cpu_fp32(model, picture):
    size = (111, 150)
    cpu = render(model, picture, size, device="cpu", precision="fp32")
    gpu = render(model, picture, size, device=CUDA, precision="fp32")
    # Different kernels (cuDNN vs oneDNN; the engine turns cuDNN's TF32 off for fp32):
    # agree to 1e-4 on [0, 1] outputs.
    assert (gpu - cpu).abs().max() < 1e-4


def test_cuda_tiled_equals_untiled(model, picture):
    size = (90, 131)
    whole = render(model, picture, size, device=CUDA, precision="fp32", tile=0)
    tiled = render(model, picture, size, device=CUDA, precision="fp32", tile=16, chunk=999)
    assert (whole - tiled).abs().max() < 1e-5


@pytest.mark.parametrize("precision,tolerance", [("fp16", 5e-3), ("bf16", 2e-2)])
def test_half_precisions_are_close_to_fp32(model, picture, precision, tolerance):
    size = (74, 106)
    ref = render(model, picture, size, device=CUDA, precision="fp32")
    half = render(model, picture, size, device=CUDA, precision=precision)
    err = (half - ref).abs()
    assert 0 < err.max() < tolerance  # > 0: the half precision really ran
    assert err.mean() < tolerance / 5


def test_no_host_sync_inside_the_chunk_loop(model, picture, monkeypatch):
    """Every chunk's decoding runs with CUDA's sync debug mode set to 'error': any
    device-to-host synchronisation in the rendering decoder would raise."""
    size = (120, 160)
    calls = [0]
    decoder = type(model.renderer())
    assert decoder in (Decoder, GridDecoder)
    real_decode = decoder.__call__

    def strict_decode(self, *args, **kwargs):
        calls[0] += 1
        torch.cuda.set_sync_debug_mode("error")
        try:
            return real_decode(self, *args, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    monkeypatch.setattr(decoder, "__call__", strict_decode)
    out = render(model, picture, size, device=CUDA, precision="fp32", tile=24, chunk=1000)
    assert out.shape == (3, *size) and calls[0] > 4


def test_cuda_defaults_keep_the_gpu_busy():
    for decoder in ("liif", "lmf"):
        tile, chunk = engine.default_tile_chunk(CUDA, decoder=decoder)
        assert chunk >= 100_000 and engine.DEFAULT_TILE <= tile <= engine.CUDA_MAX_TILE


def test_speed_bench_times_with_cuda_events(model):
    from liif_cli.bench.speed import run_speed

    for precision in ("fp32", "fp16", "bf16"):
        result = run_speed(model, (24, 32), [2], device="cuda", repeats=2, precision=precision)
        assert result["timer"] == "CUDA events" and "CUDA events" in result["protocol"]
        (entry,) = result["results"]
        assert entry["engine"]["mp_per_s"] > 0 and entry["engine"]["peak_memory_mb"] is not None
        # The reference decoder is fp32: max_abs_diff is each precision's error against it.
        assert entry["max_abs_diff"] < (1e-5 if precision == "fp32" else 5e-2)
