"""Tests for the fast model family (LMF: a latent-modulated decoder): its forward, the
engine's grid decoder against it, tiling, precision, checkpoints, spec checks and training."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from liif_cli import checkpoint, engine
from liif_cli.errors import LiifError
from liif_cli.info import checkpoint_record
from liif_cli.model import (
    LIIF,
    LMF,
    GridDecoder,
    ModelSpec,
    axis_centres,
    axis_layout,
    build_model,
    make_cells,
    make_coords,
)
from liif_cli.train import TrainConfig, run_training

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_ENCODER = dict(n_resblocks=1, n_feats=8)


def tiny_fast(seed: int = 0, **spec) -> LMF:
    """A small random fast model whose modulations are large enough to matter."""
    torch.manual_seed(seed)
    args = dict(encoder_args=TINY_ENCODER, decoder="lmf", latent_hidden=[24], render_width=8,
                render_depth=3)
    model = build_model(ModelSpec(**{**args, **spec})).eval()
    with torch.no_grad():
        model.latent_mlp[-1].weight.mul_(4)  # scales and shifts well away from 1 and 0
    return model


def random_image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed))


def test_spec_names_the_family_and_keeps_liif_checkpoints_as_they_were() -> None:
    assert isinstance(build_model(ModelSpec()), LIIF)
    fast = ModelSpec(decoder="lmf")
    assert isinstance(build_model(fast), LMF)
    # A LIIF spec is written exactly as before the family existed; a fast one says so.
    assert set(ModelSpec().to_dict()) == {"encoder", "encoder_args", "hidden", "feat_unfold",
                                          "local_ensemble", "cell_decode"}
    assert fast.to_dict()["decoder"] == "lmf" and "hidden" not in fast.to_dict()
    assert ModelSpec(**fast.to_dict()) == fast
    with pytest.raises(ValueError, match="unknown decoder"):
        build_model(ModelSpec(decoder="nope"))


def test_forward_gives_rgb_for_any_coordinates() -> None:
    model = tiny_fast()
    image = random_image(9, 11)[None] * 2 - 1
    coord = torch.rand(2, 50, 2) * 2 - 1
    cell = torch.full((2, 50, 2), 2 / 30)
    out = model(image.expand(2, -1, -1, -1), coord, cell)
    assert out.shape == (2, 50, 3) and torch.isfinite(out).all()
    # The cell reaches the output (cell decoding), and so does every latent's modulation.
    assert not torch.allclose(out, model(image.expand(2, -1, -1, -1), coord, cell * 3))


@pytest.mark.parametrize("switches", [
    {}, {"local_ensemble": False}, {"cell_decode": False}, {"feat_unfold": False},
    {"latent_hidden": []}, {"render_depth": 1}])
def test_grid_decoder_equals_the_training_forward(switches: dict) -> None:
    """The engine's block-by-block decoder computes query_rgb's function on a grid of pixel
    centres, also off-grid scales, on a window of a larger feature map, for every switch."""
    model = tiny_fast(**switches)
    image = random_image(13, 17)[None] * 2 - 1
    for out_h, out_w in [(40, 61), (13, 17), (9, 30), (131, 160)]:
        with torch.no_grad():
            feat = model.encode(image)
            whole = model.project_latents(feat)
            coords = make_coords((out_h, out_w))[None]
            cells = make_cells((out_h, out_w), out_h * out_w)[None]
            expected = model.query_rgb(whole, coords, cells)[0].view(out_h, out_w, 3)
            decode = model.renderer()
            got = decode(whole, axis_centres(out_h), axis_centres(out_w), cells[0, 0])
            assert (got - expected).abs().max() < 1e-5
            # A window of latents at an offset, as the engine's tiles use them (one latent
            # beyond those the queries read, for the 3x3 unfold).
            window = model.project_latents(feat[:, :, 1:12, 2:16], offset=(1, 2),
                                           grid_size=(13, 17))
            rows, cols = slice(out_h // 4, out_h // 2), slice(out_w // 4, out_w // 2)
            got = decode(window, axis_centres(out_h)[rows], axis_centres(out_w)[cols],
                         cells[0, 0])
            assert (got - expected[rows, cols]).abs().max() < 1e-5


@pytest.mark.parametrize("switches", [{}, {"feat_unfold": False}, {"latent_hidden": []}])
def test_latent_mlp_in_bands_equals_one_pass(monkeypatch: pytest.MonkeyPatch,
                                             switches: dict) -> None:
    """Rendering runs the latent MLP on bands of rows (bounded memory): the same modulations
    as one pass over the whole map, also for bands that do not divide the rows."""
    from liif_cli import model as model_module

    model = tiny_fast(**switches)
    feat = model.encode(random_image(23, 9)[None] * 2 - 1).detach()
    with torch.no_grad():
        whole = model.project_latents(feat).values
        for rows in (1, 4, 7):
            monkeypatch.setattr(model_module, "LATENT_BAND_ROWS", rows)
            banded = model.project_latents(feat, offset=(2, 3), grid_size=(40, 40))
            assert banded.values.shape == whole.shape and banded.offset == (2, 3)
            assert (banded.values - whole).abs().max() < 1e-6


def test_axis_layout_blocks_are_runs_of_one_latent_no_longer_than_the_scale() -> None:
    for n_in, n_out in [(10, 40), (10, 125), (7, 9), (10, 10), (10, 4)]:
        coord = axis_centres(n_out)
        layout = axis_layout(coord, n_in, 0, local_ensemble=True)
        assert layout.block <= max(1, -(-n_out // n_in)) + 1
        for v in range(2):
            block_of = layout.slot[v] // layout.block
            # Every query of a block reads that block's latent, at the offset it holds.
            index = layout.latent[v][block_of]
            centres = axis_centres(n_in)[index]
            assert torch.allclose(layout.rel[v], (coord - centres) * n_in, atol=1e-6)
            assert torch.equal(layout.slot_rel[v][layout.slot[v]], layout.rel[v])
            assert len(set(layout.slot[v].tolist())) == n_out  # one slot per query


def test_tiled_render_equals_one_piece() -> None:
    model = tiny_fast()
    image = random_image(70, 45)
    size = (173, 109)  # x2.47 / x2.42: blocks of 2 and 3
    whole = engine.render(model, image, size, tile=0)
    for tile, chunk in [(32, 999), (40, 50), (64, 10 ** 6)]:
        tiled = engine.render(model, image, size, tile=tile, chunk=chunk)
        assert (tiled - whole).abs().max() < 1e-6, (tile, chunk)
    assert len(engine.plan_tiles(model, (70, 45), size, 32)) > 1


def test_render_equals_the_training_forward() -> None:
    model = tiny_fast(1)
    image = random_image(20, 24)
    size = (50, 83)
    rendered = engine.render(model, image, size, tile=0)
    with torch.no_grad():
        coords, cells = make_coords(size)[None], make_cells(size, size[0] * size[1])[None]
        forward = model(engine.normalise(image), coords, cells)[0]
    expected = (forward * 0.5 + 0.5).clamp(0, 1).view(*size, 3).permute(2, 0, 1)
    assert (rendered - expected).abs().max() < 1e-5


def test_bf16_render_is_close_to_float32() -> None:
    model = tiny_fast()
    image = random_image(24, 20)
    fp32 = engine.render(model, image, (60, 50), precision="fp32")
    bf16 = engine.render(model, image, (60, 50), precision="bf16")
    # bf16 keeps 8 bits of mantissa: a few 8-bit levels at most on a random model.
    assert (fp32 - bf16).abs().max() < 0.03
    assert (fp32 - bf16).abs().mean() < 0.005


def test_fast_model_uses_its_own_chunk_default() -> None:
    cpu = torch.device("cpu")
    assert engine.default_tile_chunk(cpu, decoder="lmf")[1] == engine.FAST_CHUNK
    assert engine.default_tile_chunk(cpu)[1] == engine.DEFAULT_CHUNK


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    model = tiny_fast()
    path = tmp_path / "fast.pth"
    checkpoint.save(checkpoint.to_dict(model, {"note": "x"}), path)
    loaded = checkpoint.load(path)
    assert loaded.spec == model.spec and loaded.spec.decoder == "lmf"
    rebuilt = loaded.build()
    image = random_image(10, 12)
    assert torch.equal(engine.render(rebuilt, image, (25, 31)),
                       engine.render(model, image, (25, 31)))
    record = checkpoint_record(path)
    assert record["family"].startswith("fast")
    assert set(record["decoder_macs_per_pixel"]) == {"x2", "x4", "x12"}


@pytest.mark.parametrize("bad, problem", [
    ({"render_width": 0}, "render_width"), ({"render_width": 10 ** 6}, "render_width"),
    ({"render_depth": 0}, "render_depth"), ({"render_depth": 1.5}, "render_depth"),
    ({"latent_hidden": [0]}, "latent MLP width"), ({"latent_hidden": "wide"}, "latent_hidden"),
    ({"latent_hidden": [16] * 99}, "latent_hidden"), ({"decoder": "gan"}, "unknown decoder")])
def test_bad_fast_specs_are_refused_before_anything_is_built(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bad: dict, problem: str) -> None:
    raw = checkpoint.to_dict(tiny_fast())
    raw["spec"].update(bad)
    path = tmp_path / "bad.pth"
    torch.save(raw, path)
    built = []
    monkeypatch.setattr(checkpoint, "build_model", lambda spec: built.append(spec))
    with pytest.raises(LiifError, match=problem):
        checkpoint.load(path)
    assert built == []


def test_the_shipped_size_does_a_twentieth_of_liifs_arithmetic() -> None:
    liif, fast = build_model(ModelSpec()), build_model(ModelSpec(decoder="lmf"))
    # LIIF: four neighbours x (three 256x256 layers, the 256x3 output, the 4x256 query part)
    assert liif.macs_per_query() == 4 * (3 * 256 * 256 + 256 * 3 + 4 * 256)
    assert liif.macs_per_latent() == 576 * 256
    for scale in (2, 4, 12):
        assert fast.decoder_macs(scale) < liif.decoder_macs(scale)
    assert fast.decoder_macs(4) <= liif.decoder_macs(4) / 20


def test_init_from_liif_takes_its_encoder_and_first_projection() -> None:
    torch.manual_seed(0)
    liif = build_model(ModelSpec(encoder_args=TINY_ENCODER, hidden=[24, 24]))
    fast = tiny_fast(latent_hidden=[24, 16])
    fast.init_from_liif(liif)
    for key, value in liif.encoder.state_dict().items():
        assert torch.equal(fast.encoder.state_dict()[key], value)
    # The latent MLP's first convolution is LIIF's projection of the unfolded latent.
    feat = liif.encode(random_image(8, 9)[None])
    expected = liif.project_latents(feat).values  # (1, h*w, 24)
    got = fast.latent_mlp[0](feat).flatten(2).transpose(1, 2)
    assert torch.allclose(got, expected, atol=1e-6)


# --------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fast_train")
    rng = np.random.default_rng(0)
    for i in range(2):
        small = rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)
        Image.fromarray(small).resize((120, 110), Image.BICUBIC).save(folder / f"{i}.png")
    return folder


def fast_config(data_dir: Path, out: Path, init: Path, **kw) -> TrainConfig:
    base = dict(data=[str(data_dir)], out=str(out), decoder="lmf", init=str(init),
                teacher=str(init), distill=0.5, freeze_encoder=True, crop=8, samples=64,
                batch_size=2, steps=6, lr=1e-3, lr_schedule="cosine", checkpoint_every=100,
                val_every=0, workers=1, seed=3, device="cpu", amp="off")
    base.update(kw)
    return TrainConfig(**base)


def test_training_a_fast_model_from_a_liif_distils_and_resumes_bit_for_bit(
        data_dir: Path, tmp_path: Path, tiny_weights: Path) -> None:
    def losses(events: list) -> dict[int, float]:
        return {ev.step: ev.loss for ev in events if ev.kind == "step"}

    full: list = []
    run_training(fast_config(data_dir, tmp_path / "a", tiny_weights), full.append)
    result = checkpoint.load(tmp_path / "a" / "last.pth")
    assert result.spec.decoder == "lmf"
    # The encoder is the init's, untouched (frozen), and only the decoder moved.
    liif = checkpoint.load(tiny_weights).build()
    trained = result.build()
    for key, value in liif.encoder.state_dict().items():
        assert torch.equal(trained.encoder.state_dict()[key], value)

    first: list = []
    stop = threading.Event()

    def stop_at_3(event) -> None:
        first.append(event)
        if event.kind == "step" and event.step == 3:
            stop.set()

    cut = run_training(fast_config(data_dir, tmp_path / "b", tiny_weights), stop_at_3,
                       stop=stop)
    assert cut.interrupted and cut.step == 3
    rest: list = []
    run_training(fast_config(data_dir, tmp_path / "b", tiny_weights, resume=True), rest.append)
    assert {**losses(first), **losses(rest)} == losses(full)  # exact: bit for bit
    b = checkpoint.load(tmp_path / "b" / "last.pth").state_dict
    assert all(torch.equal(result.state_dict[k], b[k]) for k in b)


def test_distillation_needs_a_teacher(data_dir: Path, tmp_path: Path) -> None:
    config = TrainConfig(data=[str(data_dir)], out=str(tmp_path / "r"), decoder="lmf",
                         distill=0.5)
    with pytest.raises(LiifError, match="needs a teacher"):
        config.check_options()
    with pytest.raises(LiifError, match="distill must be in"):
        TrainConfig(data=[str(data_dir)], teacher="default", distill=2.0).check_options()


def test_grid_decoder_is_what_the_engine_uses_for_the_fast_family() -> None:
    assert isinstance(tiny_fast().renderer(), GridDecoder)
    assert not isinstance(build_model(ModelSpec(encoder_args=TINY_ENCODER)).renderer(),
                          GridDecoder)


def test_speed_bench_times_the_fast_model_against_its_straightforward_decoder() -> None:
    from liif_cli.bench.speed import run_speed

    result = run_speed(tiny_fast(), (16, 20), [2, 4.5], device="cpu", repeats=1, warmup=0)
    for entry in result["results"]:
        assert entry["engine"]["mp_per_s"] > 0 and entry["reference"]["mp_per_s"] > 0
        # The reference is query_rgb on the whole feature map: the same function.
        assert entry["max_abs_diff"] < 1e-5
    assert result["model_spec"]["decoder"] == "lmf"


def test_auto_precision_is_the_same_rule_for_both_families(monkeypatch) -> None:
    from liif_cli.api import Upscaler

    cpu = torch.device("cpu")
    for has_bf16, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(engine, "cpu_has_fast_bf16", lambda has=has_bf16: has)
        assert engine.precision_name("auto", cpu) == expected
        assert Upscaler(tiny_fast(), device="cpu").precision == expected
    assert Upscaler(tiny_fast(), device="cpu", precision="fp32").precision == "fp32"


def test_bf16_on_the_cpu_renders_the_fast_models_layers_in_fp32(monkeypatch) -> None:
    """--precision bf16 puts the fast model's encoder and latent MLP in bf16 on the CPU but
    keeps its narrow render layers in fp32 (faster there); LIIF's decoder takes bf16."""
    asked = []
    for model in (tiny_fast(), build_model(ModelSpec(encoder_args=TINY_ENCODER,
                                                     hidden=[16])).eval()):
        renderer = model.renderer
        monkeypatch.setattr(model, "renderer", lambda dtype, r=renderer: asked.append(dtype)
                            or r(dtype))
        out = engine.render(model, random_image(10, 12), (25, 31), precision="bf16")
        reference = engine.render(model, random_image(10, 12), (25, 31), precision="fp32")
        assert (out - reference).abs().max() < 0.05
    assert asked == [torch.float32, torch.float32, torch.bfloat16, torch.float32]
