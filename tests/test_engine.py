"""Tests for liif_cli.engine: the tiled, chunked renderer is exact (equals the reference
renderer and itself under any tiling/chunking), plans cover the output, devices/precisions."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch

from liif_cli import engine, runtime
from liif_cli.api import Upscaler
from liif_cli.engine import (
    plan_tiles,
    precision_name,
    render,
    render_reference,
    resolve_device,
    resolve_precision,
)
from liif_cli.errors import LiifError
from liif_cli.model import LIIF, ModelSpec, build_model, make_coords, nearest_latent_index

TOL = 1e-5


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(seed: int = 0, **flags) -> torch.nn.Module:
    torch.manual_seed(seed)
    spec = ModelSpec(encoder_args=dict(n_resblocks=1, n_feats=8), hidden=[16, 16], **flags)
    return build_model(spec).eval()


def image(h: int, w: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def out_size(in_hw: tuple[int, int], scale: float) -> tuple[int, int]:
    return max(1, round(in_hw[0] * scale)), max(1, round(in_hw[1] * scale))


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return (a - b).abs().max().item()


# --------------------------------------------------------------------------- exactness


FLAG_SETS = [dict(), dict(feat_unfold=False), dict(local_ensemble=False),
             dict(cell_decode=False), dict(feat_unfold=False, local_ensemble=False)]


@pytest.mark.parametrize("flags", FLAG_SETS, ids=lambda f: ",".join(f) or "default")
@pytest.mark.parametrize("in_hw, scale", [((5, 7), 2.0), ((6, 4), 3.0), ((9, 8), 1.3),
                                          ((9, 11), 0.7), ((3, 5), 10.5), ((1, 1), 4.0),
                                          ((4, 6), 1.5)])
def test_render_equals_reference(flags, in_hw, scale):
    model = tiny_model(**flags)
    img = image(*in_hw)
    size = out_size(in_hw, scale)
    fast = render(model, img, size, tile=0)
    ref = render_reference(model, img, size)
    assert fast.shape == (3, *size) and fast.dtype == torch.float32
    assert fast.std() > 1e-3  # a non-trivial image
    assert max_err(fast, ref) <= TOL


@pytest.mark.parametrize("tile", [1, 2, 3, 5, 7, 11, 100, 0, -1])
@pytest.mark.parametrize("in_hw, scale", [((13, 17), 2.0), ((13, 17), 1.3), ((13, 17), 0.7),
                                          ((9, 7), 10.5), ((12, 10), 3.0)])
def test_tiled_equals_untiled(model, tile, in_hw, scale):
    img = image(*in_hw, seed=2)
    size = out_size(in_hw, scale)
    whole = render(model, img, size, tile=0)
    tiled = render(model, img, size, tile=tile)
    assert max_err(tiled, whole) <= TOL
    if 0 < tile < min(in_hw):
        assert len(plan_tiles(model, in_hw, size, tile)) > 1  # really tiled


def test_each_tile_encodes_in_a_fresh_precision_context(model, monkeypatch):
    """On CUDA, fp32's context (cuDNN flags without TF32) can be entered only once: a tiled
    render must make one per tile. Stood in for here by a single-use context manager."""
    entered = []

    @contextlib.contextmanager
    def single_use(device):
        entered.append(device)
        yield

    monkeypatch.setattr(engine, "true_fp32", single_use)
    img, size = image(13, 17, seed=2), (40, 52)
    tiled = render(model, img, size, tile=5)
    assert len(entered) == len(plan_tiles(model, (13, 17), size, 5)) > 1
    assert max_err(tiled, render(model, img, size, tile=0)) <= TOL


def test_true_fp32_switches_tf32_off_for_cuda_and_can_be_made_again():
    before = torch.backends.cudnn.allow_tf32
    for _ in range(2):
        with engine.true_fp32(torch.device("cuda")):
            assert torch.backends.cudnn.allow_tf32 is False
    assert torch.backends.cudnn.allow_tf32 == before


@pytest.mark.parametrize("flags", FLAG_SETS[1:], ids=lambda f: ",".join(f))
@pytest.mark.parametrize("tile", [1, 3, 4])
def test_tiled_equals_untiled_without_options(flags, tile):
    model = tiny_model(**flags)
    img = image(11, 9, seed=3)
    for size in [(25, 20), (8, 6), (110, 95)]:
        assert max_err(render(model, img, size, tile=tile), render(model, img, size, tile=0)) \
            <= TOL


def test_tiles_are_exact_with_a_deeper_encoder():
    """A wider receptive field (3 residual blocks) needs wider halos: still exact."""
    torch.manual_seed(4)
    model = build_model(ModelSpec(encoder_args=dict(n_resblocks=3, n_feats=8), hidden=[16]))
    img = image(20, 23, seed=4)
    whole = render(model, img, (50, 46), tile=0)
    assert max_err(render(model, img, (50, 46), tile=3), whole) <= TOL
    assert max_err(render_reference(model, img, (50, 46)), whole) <= TOL


@pytest.mark.parametrize("chunk", [1, 7, 64, 10**9])
def test_chunked_equals_unchunked(model, chunk):
    img = image(7, 6, seed=5)
    size = (16, 15)
    whole = render(model, img, size, tile=0, chunk=10**6)
    assert max_err(render(model, img, size, tile=0, chunk=chunk), whole) <= TOL
    assert max_err(render(model, img, size, tile=3, chunk=chunk), whole) <= TOL
    assert max_err(render_reference(model, img, size, chunk=chunk), whole) <= TOL


@pytest.mark.parametrize("rows", [(0, 1), (3, 9), (17, 23), (0, 23), (22, 23)])
@pytest.mark.parametrize("tile", [0, 2, 5])
def test_out_rows_band_equals_rows_of_full_render(model, rows, tile):
    img = image(9, 8, seed=6)
    size = (23, 19)
    full = render(model, img, size, tile=0)
    band = render(model, img, size, tile=tile, out_rows=rows)
    assert band.shape == (3, rows[1] - rows[0], 19)
    assert max_err(band, full[:, rows[0]:rows[1]]) <= TOL
    ref_band = render_reference(model, img, size, out_rows=rows)
    assert max_err(ref_band, full[:, rows[0]:rows[1]]) <= TOL


@pytest.mark.parametrize(("rows", "cols"), [((0, 23), (0, 1)), ((3, 9), (4, 15)),
                                           ((22, 23), (18, 19))])
@pytest.mark.parametrize("tile", [0, 2, 5])
def test_out_rows_and_cols_window_equals_part_of_full_render(model, rows, cols, tile):
    img = image(9, 8, seed=6)
    size = (23, 19)
    full = render(model, img, size, tile=0)
    window = render(model, img, size, tile=tile, out_rows=rows, out_cols=cols)
    assert window.shape == (3, rows[1] - rows[0], cols[1] - cols[0])
    assert max_err(window, full[:, rows[0]:rows[1], cols[0]:cols[1]]) <= TOL


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("region", [{}, dict(out_rows=(3, 40), out_cols=(5, 29))])
def test_render_tiles_hands_over_exactly_what_render_returns(model, precision, region):
    """render_tiles gives each tile to the sink once (CPU float32 (rows, cols, 3) at its
    place in the region) and together they are render's output, to the bit."""
    img, size = image(23, 17), (46, 37)
    whole = render(model, img, size, tile=8, chunk=37, precision=precision, **region)
    seen = torch.zeros(whole.shape[1:], dtype=torch.int64)
    got = torch.full_like(whole, float("nan"))

    def sink(rows: slice, cols: slice, rgb: torch.Tensor) -> None:
        assert rgb.dtype == torch.float32 and rgb.device.type == "cpu"
        assert rgb.shape == (rows.stop - rows.start, cols.stop - cols.start, 3)
        got[:, rows, cols] = rgb.permute(2, 0, 1)
        seen[rows, cols] += 1

    engine.render_tiles(model, img, size, sink, tile=8, chunk=37, precision=precision,
                        **region)
    assert (seen == 1).all() and len(plan_tiles(model, (23, 17), size, 8)) > 4
    assert torch.equal(got, whole)


@pytest.mark.parametrize("where", ["encoder", "first layer", "hidden layer"])
def test_broken_weights_anywhere_are_an_error_not_a_flat_image(where):
    """NaN before the decoder's fused linear + ReLU layers (which turn NaN into 0) used to
    render one flat colour without a word."""
    model = tiny_model(seed=7)
    parameter = {"encoder": model.encoder.head[0].weight, "first layer":
                 model.imnet.layers[0].weight, "hidden layer": model.imnet.layers[2].bias}[where]
    with torch.no_grad():
        parameter.view(-1)[0] = float("nan")
    for precision in ("fp32", "bf16"):
        with pytest.raises(LiifError, match="weights hold NaN"):
            render(model, image(6, 5), (13, 11), precision=precision)


def test_an_encoder_that_overflows_is_an_error(monkeypatch):
    """Finite weights can still overflow (bf16 on extreme inputs): caught per tile, before
    the fused decoder layers could hide it."""
    model = tiny_model(seed=7)
    encode = model.encode

    def overflowing(window):
        feat = encode(window)
        feat[0, 0, 0, 0] = float("inf")
        return feat

    monkeypatch.setattr(model, "encode", overflowing)
    with pytest.raises(LiifError, match="encoder produced NaN or infinite"):
        render(model, image(6, 5), (13, 11))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_output_is_an_error_not_a_black_image(bad):
    model = tiny_model(seed=7)
    with torch.no_grad():
        model.imnet.layers[-1].bias[1] = bad  # one channel only: green
    with pytest.raises(LiifError, match="NaN or infinite"):
        render(model, image(4, 4), (8, 8))


def test_output_in_unit_range_even_for_wild_weights():
    model = tiny_model(seed=7)
    with torch.no_grad():
        model.imnet.layers[-1].bias.copy_(torch.tensor([5.0, -5.0, 0.0]))  # saturate R and G
    out = render(model, image(6, 5, seed=7), (13, 11))
    assert out.min() >= 0 and out.max() <= 1
    assert (out[0] == 1).all() and (out[1] == 0).all()
    assert 0 < out[2].mean() < 1


def test_progress_counts_output_pixels_chunk_by_chunk(model):
    calls = []
    size = (20, 18)
    render(model, image(10, 9), size, tile=3, chunk=7,
           progress=lambda done, total: calls.append((done, total)))
    tiles = len(plan_tiles(model, (10, 9), size, 3))
    assert len(calls) > tiles > 1  # several chunks per tile: progress moves within a tile
    assert all(total == 20 * 18 for _, total in calls)
    dones = [done for done, _ in calls]
    assert dones == sorted(dones) and dones[-1] == 20 * 18
    assert max(b - a for a, b in zip([0, *dones[:-1]], dones, strict=True)) <= 7  # a chunk


# --------------------------------------------------------------------------- planning


def test_render_times_account_for_every_tile(model):
    img, size = image(23, 19), (70, 50)
    times = engine.RenderTimes()
    timed = render(model, img, size, tile=8, chunk=64, times=times)
    assert torch.equal(timed, render(model, img, size, tile=8, chunk=64))  # timing changes nothing
    plan = plan_tiles(model, (23, 19), size, 8)
    assert len(plan) > 4 and times.encoded_pixels == plan.encoded_pixels
    assert plan.encoded_pixels > 23 * 19  # halos overlap
    assert times.encode_seconds > 0 and times.decode_seconds > 0


def needed_latents(model, n_in: int, n_out: int, out_index: int) -> set[int]:
    """Input latents an output pixel's decoding reads (neighbours, plus unfold margin)."""
    centre = make_coords((n_out, 1))[out_index, 0]  # float32, as the renderer computes it
    shifts = [-1, 1] if model.spec.local_ensemble else [0]
    eps = 1e-6 if model.spec.local_ensemble else 0.0
    picked = set()
    for s in shifts:
        c = (centre + s / n_in + eps).clamp(-1 + 1e-6, 1 - 1e-6)
        picked.add(int(nearest_latent_index(c, n_in)))  # == grid_sample, see test_model
    margin = 1 if model.spec.feat_unfold else 0
    return {i for p in picked for i in range(p - margin, p + margin + 1) if 0 <= i < n_in}


@pytest.mark.parametrize("flags", [dict(), dict(local_ensemble=False, feat_unfold=False)])
@pytest.mark.parametrize("in_hw, size", [((13, 17), (26, 34)), ((13, 17), (9, 12)),
                                         ((5, 3), (53, 31)), ((1, 1), (4, 4)),
                                         ((20, 20), (20, 20))])
@pytest.mark.parametrize("tile", [1, 3, 7, 256, 0])
@pytest.mark.parametrize("out_rows", [None, (1, 3)])
def test_plan_covers_every_output_pixel_once(flags, in_hw, size, tile, out_rows):
    model = tiny_model(**flags)
    plan = plan_tiles(model, in_hw, size, tile, out_rows)
    first, last = out_rows or (0, size[0])
    hits = torch.zeros(last - first, size[1], dtype=torch.int64)
    halo = model.encoder.receptive_radius + (1 if model.spec.feat_unfold else 0)
    for rows, cols in plan:
        hits[rows.out_start - first:rows.out_stop - first, cols.out_start:cols.out_stop] += 1
    assert (hits == 1).all()
    for spans, n_in, n_out in ((plan.row_spans, in_hw[0], size[0]),
                               (plan.col_spans, in_hw[1], size[1])):
        for span in spans:
            assert 0 <= span.in_start < span.in_stop <= n_in
            assert span.out_start < span.out_stop
            need = set().union(*(needed_latents(model, n_in, n_out, i)
                                 for i in range(span.out_start, span.out_stop)))
            # every latent it reads, plus the encoder's receptive field, is in the window
            lo, hi = min(need), max(need)
            assert span.in_start <= max(0, lo - model.encoder.receptive_radius)
            assert span.in_stop >= min(n_in, hi + model.encoder.receptive_radius + 1)
            assert span.in_start >= max(0, lo - halo)  # and not much more
            assert span.in_stop <= min(n_in, hi + halo + 1)
    if 0 < tile < min(in_hw):
        assert len(plan) > 1
    if tile <= 0 or tile >= max(in_hw):
        assert len(plan) == 1


def test_plan_tile_size_follows_input_pixels(model):
    plan = plan_tiles(model, (100, 60), (400, 240), tile=25)
    assert len(plan.row_spans) == 4 and len(plan.col_spans) == 3  # 100/25 x 60/25 -> 4 x 3
    assert all(s.out_stop - s.out_start == 100 for s in plan.row_spans)


# --------------------------------------------------------------------------- precision, device


def test_bf16_close_to_fp32(model):
    img = image(12, 10, seed=8)
    size = (31, 26)
    fp32 = render(model, img, size, tile=4)
    bf16 = render(model, img, size, tile=4, precision="bf16")
    assert bf16.dtype == torch.float32 and bf16.shape == fp32.shape
    err = max_err(bf16, fp32)
    # measured: about 4e-4 max abs, 8e-5 mean for this tiny model (bf16: 8-bit mantissa);
    # err > 0 shows bf16 really ran
    assert 0 < err <= 0.05
    assert (bf16 - fp32).abs().mean() <= 0.005


def test_resolve_device_auto_is_cpu_here():
    if torch.cuda.is_available() or torch.backends.mps.is_available():
        pytest.skip("an accelerator is present")
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("AUTO") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("name", ["tpu", "gpu0", "nonsense", "cpu:x"])
def test_unknown_device_is_a_liif_error(name):
    with pytest.raises(LiifError, match="device"):
        resolve_device(name)


def test_unavailable_accelerators_are_liif_errors(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    for name in ("cuda", "cuda:0", "mps"):
        with pytest.raises(LiifError):
            resolve_device(name)
    assert resolve_device("auto") == torch.device("cpu")


def test_precisions():
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == torch.float32
    assert resolve_precision("bf16", cpu) == torch.bfloat16
    with pytest.raises(LiifError, match="fp16"):
        resolve_precision("fp16", cpu)
    for bad in ("fp64", "FP32", "", "int8"):
        with pytest.raises(LiifError, match="precision"):
            resolve_precision(bad, cpu)


@pytest.mark.parametrize("has_bf16", [True, False])
def test_auto_precision_is_bf16_only_where_the_cpu_has_bf16_units(monkeypatch, has_bf16):
    monkeypatch.setattr(engine, "cpu_has_fast_bf16", lambda: has_bf16)
    cpu = torch.device("cpu")
    assert precision_name("auto", cpu) == ("bf16" if has_bf16 else "fp32")
    assert resolve_precision("auto", cpu) == (torch.bfloat16 if has_bf16 else torch.float32)
    assert precision_name("auto", torch.device("mps")) == "fp32"
    tiny = build_model(ModelSpec(encoder_args=dict(n_resblocks=1, n_feats=8), hidden=[16]))
    assert Upscaler(tiny, device="cpu").precision == precision_name(
        "auto", cpu)


def test_cpu_bf16_detection_reads_the_cpu_flags():
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    expected = "avx512_bf16" in flags.split() or "amx_bf16" in flags.split()
    assert runtime.cpu_has_fast_bf16() == expected


def test_render_rejects_bad_arguments(model):
    img = image(4, 4)
    with pytest.raises(LiifError):
        render(model, img, (8, 8), precision="fp64")
    with pytest.raises(LiifError):
        render(model, img, (8, 8), precision="fp16")  # on the CPU
    with pytest.raises(LiifError):
        render(model, img, (0, 8))
    with pytest.raises(LiifError):
        render(model, img, (8, 8), chunk=0)
    with pytest.raises(LiifError):
        render(model, torch.rand(3, 0, 4), (8, 8))
    with pytest.raises(ValueError):
        render(model, torch.rand(4, 4, 4), (8, 8))
    with pytest.raises(LiifError):
        render_reference(model, img, (8, 0))


def test_defaults_are_sane():
    assert engine.DEFAULT_TILE > 0 and engine.DEFAULT_CHUNK > 0
    assert set(engine.CPU_CHUNKS) == {torch.float32, torch.bfloat16}
    # each (4 x chunk, 256) activation buffer of the bundled model stays under 32 MiB
    assert all(4 * c * 256 * d.itemsize < 32 * 2**20 for d, c in engine.CPU_CHUNKS.items())


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_render_decodes_in_the_precisions_default_chunks(monkeypatch, model, precision):
    """Without --chunk, render decodes chunks of the CPU default for its precision (and the
    Upscaler resolves the same); --chunk overrides it."""
    monkeypatch.setattr(engine, "CPU_CHUNKS", {torch.float32: 40, torch.bfloat16: 70})
    sizes: list[int] = []
    real = engine.Decoder.__call__

    def spy(self, proj, coord, cell, check_window=False):
        sizes.append(coord.shape[1])
        return real(self, proj, coord, cell, check_window)

    monkeypatch.setattr(engine.Decoder, "__call__", spy)
    render(model, image(9, 8), (30, 30), tile=0, precision=precision)
    expected = 40 if precision == "fp32" else 70
    assert max(sizes) == expected and sum(sizes) == 900
    assert Upscaler(model, device="cpu", precision=precision).chunk == expected
    sizes.clear()
    render(model, image(9, 8), (30, 30), tile=0, precision=precision, chunk=33)
    assert max(sizes) == 33


@pytest.mark.parametrize("chunk", [1, 7, 64, 10**9])
def test_bf16_output_does_not_depend_on_the_chunk_size(model, chunk):
    img = image(7, 6, seed=5)
    whole = render(model, img, (16, 15), tile=0, chunk=10**6, precision="bf16")
    chunked = render(model, img, (16, 15), tile=3, chunk=chunk, precision="bf16")
    assert max_err(chunked, whole) <= 1e-6


@pytest.mark.parametrize("flags", [dict(), dict(local_ensemble=False)])
@pytest.mark.parametrize("in_hw,scale,tile", [((13, 11), 3.7, 4), ((9, 17), 1.3, 3),
                                              ((20, 6), 12.5, 5), ((7, 7), 0.6, 2)])
def test_tile_windows_cover_their_queries(monkeypatch, flags, in_hw, scale, tile):
    """The engine skips the decoder's window check (a host sync per chunk on a GPU) because
    plan_tiles sizes every window from its queries: with the check forced on, every tile
    passes it and the pixels are the same."""
    model = tiny_model(**flags)
    img, size = image(*in_hw), out_size(in_hw, scale)
    unchecked = render(model, img, size, tile=tile, chunk=7)
    real, calls = LIIF.neighbours, [0]

    def checked(self, proj, coord, cell, check_window=True):
        calls[0] += 1
        return real(self, proj, coord, cell, check_window=True)

    monkeypatch.setattr(LIIF, "neighbours", checked)
    assert torch.equal(render(model, img, size, tile=tile, chunk=7), unchecked)
    assert calls[0] > 1


def test_query_outside_the_window_is_caught_when_checked(model):
    feat = model.encode(image(6, 6)[None] * 2 - 1)
    proj = model.project_latents(feat[..., 2:4, 2:4], offset=(2, 2), grid_size=(6, 6))
    corner = torch.tensor([[[-0.9, -0.9]]])
    cell = torch.full((1, 1, 2), 0.1)
    with pytest.raises(ValueError, match="outside"):
        model.query_rgb(proj, corner, cell)


def test_tile_and_chunk_defaults_per_device(monkeypatch):
    cpu = torch.device("cpu")
    assert engine.default_tile_chunk(cpu) == (engine.DEFAULT_TILE, engine.DEFAULT_CHUNK)
    for dtype, chunk in engine.CPU_CHUNKS.items():
        assert engine.default_tile_chunk(cpu, dtype) == (engine.DEFAULT_TILE, chunk)
        assert engine.resolve_tile_chunk(cpu, None, None, dtype) == (engine.DEFAULT_TILE, chunk)
        assert engine.resolve_tile_chunk(cpu, None, 99, dtype) == (engine.DEFAULT_TILE, 99)
    assert engine.resolve_tile_chunk(cpu, 64, None) == (64, engine.DEFAULT_CHUNK)
    assert engine.resolve_tile_chunk(cpu, None, 99) == (engine.DEFAULT_TILE, 99)
    # CUDA: big chunks, and tiles sized from free memory (an 80 GB card, then a small one).
    for free, tile in ((80 * 2**30, engine.CUDA_MAX_TILE), (4 * 2**30, engine.DEFAULT_TILE)):
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device, f=free: (f, 2 * f))
        assert engine.default_tile_chunk(torch.device("cuda")) == (tile, engine.CUDA_CHUNK)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (16 * 2**30, 2**35))
    tile, _ = engine.default_tile_chunk(torch.device("cuda"))
    assert engine.DEFAULT_TILE < tile < engine.CUDA_MAX_TILE and tile % 64 == 0


@pytest.mark.parametrize("before", [False, True])
def test_flush_denormals_restores_the_callers_setting(before):
    """A library call must not change the process's denormal mode behind its caller's back."""
    from liif_cli.runtime import flush_denormals

    if not torch.set_flush_denormal(before):
        pytest.skip("this CPU cannot flush denormals")
    try:
        with flush_denormals():
            assert torch.tensor([1e-40]).item() == 0.0
        assert (torch.tensor([1e-40]).item() == 0.0) is before
    finally:
        torch.set_flush_denormal(False)


def test_a_cuda_device_number_past_the_machines_gpus_is_refused(monkeypatch):
    import torch

    from liif_cli.engine import resolve_device
    from liif_cli.errors import LiifError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(LiifError, match="--device cuda:1: this machine has 1 CUDA GPU"):
        resolve_device("cuda:1")
    assert resolve_device("cuda:0") == torch.device("cuda:0")
