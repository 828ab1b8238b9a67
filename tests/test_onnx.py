"""ONNX export (`liif export --format onnx`) and its torch-free runner, examples/onnx_upscale.py:
the graphs against the engine's arithmetic, the runner against `liif upscale`."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from liif_cli import checkpoint, cli, engine
from liif_cli.cli import app
from liif_cli.model import LatentProjection, ModelSpec, axis_centres, build_model, make_cells
from liif_cli.onnx_export import (
    DECODER_FILE,
    DEFAULT_OPSET,
    ENCODER_FILE,
    MANIFEST_FILE,
    OPSETS,
    export_onnx,
)

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parent.parent
RUNNER_PATH = ROOT / "examples" / "onnx_upscale.py"
BUNDLED_DEFAULT = ROOT / "weights" / "liif-edsr-baseline.pth"
TINY = dict(encoder_args=dict(n_resblocks=1, n_feats=8))
TINY_LMF = ModelSpec(**TINY, decoder="lmf", latent_hidden=[16], render_width=4, render_depth=2)
SCALES = ("2", "3.7", "12.5")
# (width, height): not square; a side under 16 px (edge-padded); several tiles of 32 px.
IMAGES = {"oblong": (23, 17), "narrow": (9, 30), "tiled": (70, 45)}
TILE = "32"


def _save(model, path: Path) -> Path:
    checkpoint.save(checkpoint.to_dict(model, {"scale_range": [1.0, 4.0]}), path)
    return path


def _tiny(spec: ModelSpec, seed: int = 0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(spec).eval()


@pytest.fixture(scope="module")
def weights(tiny_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny checkpoints of both families: LIIF (conftest's) and LMF."""
    lmf = _save(_tiny(TINY_LMF), tmp_path_factory.mktemp("lmf") / "tiny-lmf.pth")
    return {"liif": tiny_weights, "lmf": lmf}


@pytest.fixture(scope="module")
def exports(weights: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("exports")
    return {family: export_onnx(path, folder / family).folder for family, path in weights.items()}


@pytest.fixture(scope="module")
def runner():
    """examples/onnx_upscale.py as a module."""
    spec = importlib.util.spec_from_file_location("onnx_upscale", RUNNER_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["onnx_upscale"] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    yield module
    del sys.modules["onnx_upscale"]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(3)
    paths = {}
    for name, (w, h) in IMAGES.items():
        pixels = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
        pixels[: h // 2] = pixels[: h // 2] // 4 + 96  # some smooth-ish area too
        Image.fromarray(pixels).save(folder / f"{name}.png")
        paths[name] = folder / f"{name}.png"
    return paths


def session(model: str | Path | bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def decode(decoder: ort.InferenceSession, state: np.ndarray, coord: torch.Tensor,
           cell: torch.Tensor, grid: tuple[int, int], offset: tuple[int, int] = (0, 0),
           outputs: list[str] | None = None) -> list[np.ndarray]:
    return decoder.run(outputs, {"state": state, "coord": coord.numpy(), "cell": cell.numpy(),
                                 "grid_size": np.array(grid, np.int64),
                                 "offset": np.array(offset, np.int64)})


def pixel_centres(size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The engine's queries for a whole output: (1, Q, 2) coordinates and cells."""
    rows, cols = axis_centres(size[0]), axis_centres(size[1])
    coord = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1).view(1, -1, 2)
    return coord, make_cells(size, coord.shape[1])[None]


def upscale_with_liif(source: Path, target: Path, weights: Path, scale: str) -> np.ndarray:
    result = CliRunner().invoke(app, ["upscale", str(source), "-s", scale, "-w", str(weights),
                                      "--precision", "fp32", "--tile", TILE, "-o", str(target),
                                      "-q"])
    assert result.exit_code == 0, result.output
    return np.asarray(Image.open(target)).astype(int)


def upscale_with_runner(runner, export: Path, source: Path, target: Path,
                        scale: str) -> np.ndarray:
    runner.main([str(export), str(source), str(target), "--scale", scale, "--tile", TILE,
                 "--threads", "1"])
    return np.asarray(Image.open(target)).astype(int)


def runner_and_liif(runner, export: Path, weights: Path, source: Path, ours: Path,
                    theirs: Path, args: list[str]) -> tuple[Image.Image, Image.Image]:
    """The runner's output of `source` and `liif upscale --precision fp32`'s, with the same
    size arguments (`--scale 2`, `--size 41x30`), loaded."""
    runner.main([str(export), str(source), str(ours), *args, "--threads", "1", "--overwrite"])
    result = CliRunner().invoke(app, ["upscale", str(source), *args, "-w", str(weights),
                                      "--precision", "fp32", "-o", str(theirs), "-q",
                                      "--overwrite"])
    assert result.exit_code == 0, result.output
    with Image.open(ours) as a, Image.open(theirs) as b:
        return a.copy(), b.copy()


def assert_decoder_matches_engine(folder: Path, model, image_hw: tuple[int, int],
                                  scales: tuple[float, ...]) -> float:
    """The encoder's state equals project_latents, and the decoder's raw RGB equals
    query_rgb within 1e-4 at each scale; returns the largest RGB difference."""
    encoder, decoder = session(folder / ENCODER_FILE), session(folder / DECODER_FILE)
    image = torch.rand(1, 3, *image_hw, generator=torch.Generator().manual_seed(5)) * 2 - 1
    with torch.no_grad():
        proj = model.project_latents(model.encode(image))
    state = encoder.run(None, {"image": image.numpy()})[0]
    assert state.shape == (1, *image_hw, proj.values.shape[-1])
    np.testing.assert_allclose(state.reshape(proj.values.shape), proj.values.numpy(), atol=1e-5)
    worst = 0.0
    for scale in scales:
        coord, cell = pixel_centres((round(image_hw[0] * scale), round(image_hw[1] * scale)))
        with torch.no_grad():
            expected = model.query_rgb(proj, coord, cell).numpy()
        (rgb,) = decode(decoder, state, coord, cell, image_hw)
        assert rgb.shape == expected.shape
        worst = max(worst, float(np.abs(rgb - expected).max()))
    assert worst <= 1e-4, worst
    return worst


# --------------------------------------------------------------------------- the graphs


@pytest.mark.parametrize("family", ["liif", "lmf"])
def test_graphs_pass_the_checker_load_in_onnxruntime_and_say_what_they_are(
        family, weights, exports):
    folder = exports[family]
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [ENCODER_FILE, DECODER_FILE, MANIFEST_FILE])
    ckpt = checkpoint.load(weights[family])
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    for name, part in ((ENCODER_FILE, "encoder"), (DECODER_FILE, "decoder")):
        model = onnx.load(folder / name)
        onnx.checker.check_model(model, full_check=True)
        assert model.opset_import[0].version == DEFAULT_OPSET
        assert not any(n.op_type in ("GridSample", "Col2Im") for n in model.graph.node)
        props = {p.key: p.value for p in model.metadata_props}
        assert props["liif.graph"] == part
        assert props["liif.family"] == family
        assert json.loads(props["liif.spec"]) == ckpt.spec.to_dict()
        assert props["liif.normalisation"].startswith("image in: (x - 0.5) / 0.5")
        scales = ckpt.metadata.get("scale_range")  # conftest's LIIF records none
        assert props["liif.scale_range"] == (json.dumps(scales) if scales else "unknown")
        assert props["liif.source_sha256"] == checkpoint.file_sha256(weights[family])
        assert props["liif.licence"].startswith("unknown")  # a checkpoint of no stated terms
        assert manifest["metadata"] == {k: v for k, v in props.items() if k != "liif.graph"}
    encoder, decoder = session(folder / ENCODER_FILE), session(folder / DECODER_FILE)
    assert [(i.name, i.shape) for i in encoder.get_inputs()] == [
        ("image", [1, 3, "height", "width"])]
    channels = int(manifest["metadata"]["liif.state_channels"])
    assert encoder.get_outputs()[0].shape == [1, "height", "width", channels]
    assert [(i.name, i.shape) for i in decoder.get_inputs()] == [
        ("state", [1, "rows", "cols", channels]), ("coord", [1, "queries", 2]),
        ("cell", [1, "queries", 2]), ("grid_size", [2]), ("offset", [2])]
    assert [(o.name, o.shape) for o in decoder.get_outputs()] == [("rgb", [1, "queries", 3])]


@pytest.mark.parametrize("family", ["liif", "lmf"])
def test_decoder_rgb_equals_the_engines(family, weights, exports):
    model = checkpoint.load(weights[family]).build()
    assert_decoder_matches_engine(exports[family], model, (13, 17), (2, 3.7, 12.5))


@pytest.mark.parametrize("family", ["liif", "lmf"])
def test_decoder_on_tile_windows_equals_the_engines(family, weights, exports):
    """Windows of a larger grid, addressed by offset, as the engine's tile plan cuts them."""
    model = checkpoint.load(weights[family]).build()
    encoder, decoder = session(exports[family] / ENCODER_FILE), session(
        exports[family] / DECODER_FILE)
    in_size, out_size = (30, 41), (111, 152)
    image = torch.rand(1, 3, *in_size, generator=torch.Generator().manual_seed(2)) * 2 - 1
    plan = engine.plan_tiles(model, in_size, out_size, tile=8)
    assert len(plan) > 4
    rows, cols = axis_centres(out_size[0]), axis_centres(out_size[1])
    for r, c in plan:
        window = image[:, :, r.in_start:r.in_stop, c.in_start:c.in_stop]
        with torch.no_grad():
            proj = model.project_latents(model.encode(window), offset=(r.in_start, c.in_start),
                                         grid_size=in_size)
        coord = torch.stack(torch.meshgrid(rows[r.out_start:r.out_stop],
                                           cols[c.out_start:c.out_stop], indexing="ij"),
                            dim=-1).view(1, -1, 2)
        cell = make_cells(out_size, coord.shape[1])[None]
        with torch.no_grad():
            expected = model.query_rgb(proj, coord, cell).numpy()  # checks the window
        state = encoder.run(None, {"image": window.numpy()})[0]
        (rgb,) = decode(decoder, state, coord, cell, in_size, (r.in_start, c.in_start))
        np.testing.assert_allclose(rgb, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("family", ["liif", "lmf"])
def test_queries_outside_the_window_answer_nan(family, exports):
    """A window that does not cover a query's latents (a caller's tiling mistake) gives NaN
    for that query, never the RGB of some wrapped-around latent; covered queries are
    unchanged."""
    encoder, decoder = session(exports[family] / ENCODER_FILE), session(
        exports[family] / DECODER_FILE)
    in_size, out_size = (12, 14), (24, 28)
    image = np.random.default_rng(6).random((1, 3, *in_size), np.float32) * 2 - 1
    state = encoder.run(None, {"image": image})[0]  # (1, 12, 14, C)
    coord, cell = pixel_centres(out_size)
    (whole,) = decode(decoder, state, coord, cell, in_size)
    assert np.isfinite(whole).all()
    # The window without the first column, addressed as such: the left edge is uncovered.
    (cut,) = decode(decoder, np.ascontiguousarray(state[:, :, 1:]), coord, cell, in_size,
                    (0, 1))
    # The whole state with a wrong offset: every latent index is off the window somewhere.
    (shifted,) = decode(decoder, state, coord, cell, in_size, (3, 3))
    columns = coord[0, :, 1].numpy()
    right = columns > 0  # far from the missing column, with or without the ensemble
    assert np.isnan(cut[0, ~right]).any() and np.isnan(shifted).any()
    np.testing.assert_array_equal(cut[0, right], whole[0, right])
    covered = np.isfinite(shifted[0]).all(axis=1)
    assert covered.any() and not covered.all()


@pytest.mark.parametrize("ensemble", [True, False])
def test_nearest_latent_indices_are_identical_for_pixel_centres(ensemble, weights, exports,
                                                                tmp_path):
    """The decoder's gather rows (its `latent_rows`) equal ImplicitImage.neighbours' for
    every pixel centre at many grid and output sizes, and at and a few float32 steps around
    each boundary between latents (exact ties without the ensemble's shift)."""
    if ensemble:
        model, folder = checkpoint.load(weights["liif"]).build(), exports["liif"]
    else:
        model = _tiny(ModelSpec(**TINY, hidden=[16], local_ensemble=False))
        folder = export_onnx(_save(model, tmp_path / "m.pth"), tmp_path / "onnx").folder
    graph = onnx.load(folder / DECODER_FILE)
    graph.graph.output.append(onnx.helper.make_tensor_value_info(
        "latent_rows", onnx.TensorProto.INT64, None))
    decoder = session(graph.SerializeToString())
    compared = 0
    for h in [*range(1, 20), 31, 64, 97]:
        w = h + 5
        state = np.zeros((1, h, w, 16), np.float32)
        proj = LatentProjection(torch.zeros(1, h * w, 16), (h, w), (0, 0), (h, w))
        for scale in (0.5, 1, 2, 3.7, 12.5, 1000 / h):
            out = (max(1, round(h * scale)), max(1, round(w * scale)))
            coord, cell = pixel_centres(out)
            if coord.shape[1] > 30_000:  # keep it quick: a spread of every row and column
                keep = torch.arange(0, coord.shape[1], coord.shape[1] // 30_000 * 2 + 1)
                coord, cell = coord[:, keep], cell[:, keep]
            expected = model.neighbours(proj, coord, cell).rows.numpy()
            (rows,) = decode(decoder, state, coord, cell, (h, w), outputs=["latent_rows"])
            np.testing.assert_array_equal(rows, expected)
            compared += rows.size
        edges = (np.arange(2 * h + 1, dtype=np.float32) / h - 1)[:, None]  # between latents
        for _ in range(4):  # and 1 to 4 float32 steps either side of them
            edges = np.concatenate([np.nextafter(edges[:, :1], -2, dtype=np.float32), edges,
                                    np.nextafter(edges[:, -1:], 2, dtype=np.float32)], axis=1)
        edges = torch.from_numpy(edges.ravel())
        coord = torch.stack([edges, edges.flip(0)], dim=-1)[None]
        cell = torch.full_like(coord, 2 / (3 * h))
        expected = model.neighbours(proj, coord, cell, check_window=False).rows.numpy()
        (rows,) = decode(decoder, state, coord, cell, (h, w), outputs=["latent_rows"])
        np.testing.assert_array_equal(rows, expected)
    assert compared > 500_000


@pytest.mark.parametrize("spec", [
    ModelSpec(**TINY, hidden=[16, 8], feat_unfold=False, local_ensemble=False,
              cell_decode=False),
    ModelSpec(encoder="edsr", encoder_args=dict(n_resblocks=2, n_feats=8), hidden=[16]),
    ModelSpec(encoder="rdn", encoder_args=dict(G0=8, RDNconfig="A"), hidden=[8]),
    ModelSpec(**TINY, decoder="lmf", latent_hidden=[], render_width=4, render_depth=1,
              local_ensemble=False),
], ids=["liif-no-unfold-ensemble-cell", "edsr-res-scale", "rdn", "lmf-plain"])
def test_other_architectures_export_exactly(spec, tmp_path):
    model = _tiny(spec, seed=1)
    export_onnx(_save(model, tmp_path / "m.pth"), tmp_path / "onnx")
    assert_decoder_matches_engine(tmp_path / "onnx", model, (9, 11), (2.5,))


@pytest.mark.parametrize("opset", [OPSETS[0], OPSETS[1]])
def test_lowest_and_highest_opsets_give_the_same_pixels(opset, weights, exports, tmp_path):
    folder = export_onnx(weights["lmf"], tmp_path / "onnx", opset=opset).folder
    assert onnx.load(folder / DECODER_FILE).opset_import[0].version == opset
    coord, cell = pixel_centres((20, 26))
    state = np.random.default_rng(0).normal(size=(1, 8, 11, 12)).astype(np.float32)
    (rgb,) = decode(session(folder / DECODER_FILE), state, coord, cell, (8, 11))
    (same,) = decode(session(exports["lmf"] / DECODER_FILE), state, coord, cell, (8, 11))
    np.testing.assert_array_equal(rgb, same)


# --------------------------------------------------------------------------- the runner


def test_runner_tiles_and_queries_exactly_like_the_engine(runner, weights):
    model = checkpoint.load(weights["liif"]).build()
    for n in (1, 7, 16, 45, 333, 1000):
        np.testing.assert_array_equal(runner.axis_centres(n), axis_centres(n).numpy())
    halo = model.encoder.receptive_radius + 1
    for in_size, out_size, tile in (((45, 70), (563, 875), 32), ((17, 23), (63, 85), 256),
                                    ((30, 9), (375, 113), 0), ((100, 40), (150, 61), 33)):
        plan = engine.plan_tiles(model, in_size, out_size, tile)
        for axis, spans in ((0, plan.row_spans), (1, plan.col_spans)):
            ours = runner.spans(in_size[axis], out_size[axis], tile, halo, True, 0,
                                out_size[axis])
            assert ours == [(s.out_start, s.out_stop, s.in_start, s.in_stop) for s in spans]


@pytest.mark.parametrize("family", ["liif", "lmf"])
@pytest.mark.parametrize("name", list(IMAGES))
def test_runner_output_equals_liif_upscale(family, name, weights, exports, images, runner,
                                           tmp_path):
    for scale in SCALES:
        ours = upscale_with_runner(runner, exports[family], images[name],
                                   tmp_path / f"onnx_{scale}.png", scale)
        theirs = upscale_with_liif(images[name], tmp_path / f"liif_{scale}.png",
                                   weights[family], scale)
        assert ours.shape == theirs.shape
        assert np.abs(ours - theirs).max() <= 1, (scale, np.abs(ours - theirs).max())


def test_runner_keeps_alpha_grayscale_and_size_like_liif(weights, exports, runner, tmp_path):
    rng = np.random.default_rng(4)
    rgba = tmp_path / "rgba.png"
    Image.fromarray(rng.integers(0, 256, (12, 19, 4)).astype(np.uint8), "RGBA").save(rgba)
    gray = tmp_path / "gray.png"
    Image.fromarray(rng.integers(0, 256, (20, 18)).astype(np.uint8), "L").save(gray)
    for source, args in ((rgba, ["--scale", "2.5"]), (gray, ["--size", "41x30"]),
                         (gray, ["--size", "9x11"])):  # the last: smaller, so Lanczos
        a, b = runner_and_liif(runner, exports["liif"], weights["liif"], source,
                               tmp_path / "ours.png", tmp_path / "theirs.png", args)
        assert (a.mode, a.size) == (b.mode, b.size)
        diff = np.abs(np.asarray(a).astype(int) - np.asarray(b).astype(int)).max()
        assert diff <= 1, (source.name, args, diff)


def test_runner_flattens_for_jpeg_and_reads_16_bit_gray_like_liif(weights, exports, runner,
                                                                   tmp_path):
    """Alpha into a JPEG is flattened onto white (not dropped), and 16-bit gray is read in
    full (not clipped at 255): both as liif does, within one 8-bit level."""
    rng = np.random.default_rng(5)
    rgba = tmp_path / "rgba.png"
    Image.fromarray(rng.integers(0, 256, (12, 19, 4)).astype(np.uint8), "RGBA").save(rgba)
    deep = tmp_path / "deep.png"
    Image.fromarray(rng.integers(0, 65536, (18, 20)).astype("<u2")).save(deep)
    for source, target in ((rgba, "x.jpg"), (deep, "x.png")):
        a, b = runner_and_liif(runner, exports["lmf"], weights["lmf"], source,
                               tmp_path / f"ours-{target}", tmp_path / f"theirs-{target}",
                               ["--scale", "1.5"])
        a_values = np.asarray(a).astype(float)
        b_values = np.asarray(b).astype(float) / (257 if b.mode.startswith("I") else 1)
        assert a_values.shape == b_values.shape
        assert np.abs(a_values - b_values).max() <= 1, source.name


def test_runner_reads_cmyk_and_gray_palettes_like_liif(weights, exports, runner, tmp_path,
                                                       cmyk_profile):
    """A CMYK JPEG with its profile (converted through it) and a gray image stored with a
    palette (kept gray): the runner's output equals liif's within one 8-bit level, in the
    same mode."""
    rng = np.random.default_rng(7)
    cmyk = tmp_path / "cmyk.jpg"
    Image.fromarray(rng.integers(0, 256, (14, 18, 4)).astype(np.uint8), "CMYK").save(
        cmyk, icc_profile=cmyk_profile, quality=95)
    palette = tmp_path / "palette.png"
    Image.fromarray(rng.integers(0, 256, (14, 18)).astype(np.uint8)).convert("P").save(palette)
    for source in (cmyk, palette):
        a, b = runner_and_liif(runner, exports["lmf"], weights["lmf"], source,
                               tmp_path / f"ours-{source.stem}.png",
                               tmp_path / f"theirs-{source.stem}.png", ["--scale", "2"])
        assert a.mode == b.mode, source.name
        diff = np.abs(np.asarray(a).astype(int) - np.asarray(b).astype(int)).max()
        assert diff <= 1, (source.name, diff)


def test_runner_never_replaces_files_it_should_not(exports, images, runner, tmp_path):
    """The input is never written over, an existing output only with --overwrite, and a
    write that fails leaves the old file as it was."""
    source = tmp_path / "in.png"
    source.write_bytes(images["narrow"].read_bytes())
    export = str(exports["liif"])
    with pytest.raises(SystemExit, match="is the input"):
        runner.main([export, str(source), str(source), "-s", "2", "--overwrite"])
    with pytest.raises(SystemExit, match="is the input"):
        runner.main([export, str(source), str(tmp_path / "." / "in.png"), "-s", "2",
                     "--overwrite"])
    assert source.read_bytes() == images["narrow"].read_bytes()
    existing = tmp_path / "old.jpg"
    existing.write_bytes(b"precious")
    with pytest.raises(SystemExit, match="exists"):
        runner.main([export, str(source), str(existing), "-s", "2"])
    # Too wide for JPEG: Pillow fails while writing, after the render.
    with pytest.raises(SystemExit, match="cannot write"):
        runner.main([export, str(source), str(existing), "--size", "70000x8", "--overwrite"])
    assert existing.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png", "old.jpg"]  # no temp left


def test_runner_errors_are_one_line(exports, images, runner, tmp_path):
    export, source = str(exports["liif"]), str(images["narrow"])
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("encoder.onnx", "decoder.onnx"):
        (broken / name).write_bytes(b"not onnx")
    cases = [
        ([export, str(tmp_path / "nowhere.png"), str(tmp_path / "o.png"), "-s", "2"],
         "no such file"),
        ([export, str(text), str(tmp_path / "o.png"), "-s", "2"], "cannot read"),
        ([export, source, str(tmp_path / "missing" / "o.png"), "-s", "2"], "does not exist"),
        ([export, source, str(tmp_path / "o.gif"), "-s", "2"], "write .png"),
        ([export, source, str(tmp_path / "o.png"), "-s", "1000"], "--max-pixels"),
        ([export, source, str(tmp_path / "o.png"), "-s", "1e308"], "too large"),
        ([str(tmp_path / "no-export"), source, str(tmp_path / "o.png"), "-s", "2"],
         "does not exist"),
        ([str(broken), source, str(tmp_path / "o.png"), "-s", "2"], "cannot load"),
    ]
    for args, words in cases:
        with pytest.raises(SystemExit) as caught:
            runner.main(args)
        message = str(caught.value.code)
        assert message.startswith("error:") and words in message and "\n" not in message, args
    for bad in (["--quality", "500"], ["--tile", "8"]):
        with pytest.raises(SystemExit) as caught:
            runner.main([export, source, str(tmp_path / "o.png"), "-s", "2", *bad])
        assert caught.value.code == 2, bad
    assert not (tmp_path / "o.png").exists()


def test_runner_reports_onnx_runtime_failures_in_one_line(exports, images, runner, tmp_path,
                                                          monkeypatch):
    """An error ONNX Runtime raises while rendering (out of memory, say) is one line."""
    from onnxruntime.capi.onnxruntime_pybind11_state import RuntimeException

    load = runner.load_export

    def failing(path, threads=0):
        export = load(path, threads)

        class Failing:
            def run(self, *args, **kwargs):
                raise RuntimeException("Failed to allocate memory for requested buffer\nmore")

        return runner.Export(export.encoder, Failing(), export.halo, export.local_ensemble,
                             export.family)

    monkeypatch.setattr(runner, "load_export", failing)
    with pytest.raises(SystemExit) as caught:
        runner.main([str(exports["liif"]), str(images["narrow"]), str(tmp_path / "o.png"),
                     "-s", "2"])
    assert caught.value.code == ("error: ONNX Runtime failed: Failed to allocate memory for "
                                 "requested buffer")
    assert not (tmp_path / "o.png").exists()


def test_runner_keeps_only_a_profile_that_fits(runner):
    rgb_profile = bytes(16) + b"RGB " + bytes(8)
    gray_profile = bytes(16) + b"GRAY" + bytes(8)
    cmyk_profile = bytes(16) + b"CMYK" + bytes(8)
    assert runner.profile_fits(rgb_profile, gray=False)
    assert runner.profile_fits(gray_profile, gray=True)
    assert not runner.profile_fits(gray_profile, gray=False)
    assert not runner.profile_fits(cmyk_profile, gray=False)
    assert not runner.profile_fits(None, gray=False)


def test_runner_runs_without_torch(exports, images, tmp_path):
    """In a fresh process where importing torch fails, the runner still upscales."""
    target = tmp_path / "out.jpg"
    code = f"""
import importlib.abc, runpy, sys

class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "liif_cli"):
            raise ImportError(f"{{name}} is blocked in this test")
        return None

sys.meta_path.insert(0, NoTorch())
sys.argv = ["onnx_upscale.py", {str(exports["lmf"])!r}, {str(images["narrow"])!r},
            {str(target)!r}, "--scale", "3.7", "--threads", "1"]
runpy.run_path({str(RUNNER_PATH)!r}, run_name="__main__")
print("torch" in sys.modules, "liif_cli" in sys.modules)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]
    with Image.open(target) as out:
        assert out.format == "JPEG" and out.size == (round(9 * 3.7), round(30 * 3.7))


def test_bundled_default_model(runner, tmp_path):
    """The real model: decoder RGB within 1e-4 of the engine's, the runner's PNG within one
    level of `liif upscale`'s; its metadata names the card, the checksum and the scales."""
    folder = export_onnx(BUNDLED_DEFAULT, tmp_path / "default").folder
    props = {p.key: p.value for p in onnx.load(folder / DECODER_FILE).metadata_props}
    assert props["liif.source_sha256"] == checkpoint.file_sha256(BUNDLED_DEFAULT)
    assert "research use" in props["liif.licence"] and "MODEL_CARD.md" in props["liif.licence"]
    assert json.loads(props["liif.scale_range"]) == [1.0, 4.0]
    model = checkpoint.load(BUNDLED_DEFAULT).build()
    assert_decoder_matches_engine(folder, model, (14, 19), (3.7,))
    source = tmp_path / "photo.png"
    with Image.open(ROOT / "examples" / "sample.png") as sample:
        sample.convert("RGB").crop((40, 40, 61, 54)).save(source)  # 21x14: edge-padded
    ours = upscale_with_runner(runner, folder, source, tmp_path / "ours.png", "3.7")
    theirs = upscale_with_liif(source, tmp_path / "theirs.png", BUNDLED_DEFAULT, "3.7")
    assert np.abs(ours - theirs).max() <= 1


# --------------------------------------------------------------------------- the CLI


def one_error_line(result, *words: str, code: int | None = None) -> None:
    """A failure (exit `code`, or any non-zero code) told in one line naming `words`."""
    assert result.exit_code == code if code is not None else result.exit_code != 0, \
        result.output
    assert "Traceback" not in result.output
    found = [line for line in result.output.splitlines() if line.strip()]
    assert len(found) == 1, found
    for word in words:
        assert word.lower() in found[0].lower(), found[0]


def run(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_cli_export_writes_replaces_and_refuses(weights, tmp_path):
    target = tmp_path / "out"
    result = run("export", weights["lmf"], target, "--format", "onnx")
    assert result.exit_code == 0, result.output
    assert "wrote" in result.stderr and "lmf model, opset 17" in result.stderr
    assert sorted(p.name for p in target.iterdir()) == sorted(
        [ENCODER_FILE, DECODER_FILE, MANIFEST_FILE])
    before = (target / ENCODER_FILE).read_bytes()
    one_error_line(run("export", weights["liif"], target, "--format", "onnx"), "already holds",
                   code=2)
    assert (target / ENCODER_FILE).read_bytes() == before
    result = run("export", weights["liif"], target, "--format", "onnx", "--overwrite",
                 "--opset", "13")
    assert result.exit_code == 0, result.output
    props = {p.key: p.value for p in onnx.load(target / DECODER_FILE).metadata_props}
    assert props["liif.family"] == "liif" and props["liif.opset"] == "13"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folders left

    # An empty folder (a shared one, a mount point) is filled in place: it stays the same
    # folder, with its own permissions, and holds nothing else afterwards.
    empty = tmp_path / "empty"
    empty.mkdir()
    empty.chmod(0o2770)
    before = empty.stat()
    assert run("export", weights["liif"], empty, "--format", "onnx").exit_code == 0
    after = empty.stat()
    assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode)
    assert sorted(p.name for p in empty.iterdir()) == sorted(
        [ENCODER_FILE, DECODER_FILE, MANIFEST_FILE])


def test_cli_export_bad_input_is_one_line_and_writes_nothing(weights, tmp_path):
    fake = tmp_path / "fake.pth"
    fake.write_bytes(b"not a checkpoint")
    one_error_line(run("export", fake, tmp_path / "a", "--format", "onnx"),
                   "not a LIIF checkpoint", "fake.pth", code=2)
    for opset in (OPSETS[0] - 1, OPSETS[1] + 1):
        one_error_line(run("export", weights["liif"], tmp_path / "b", "--format", "onnx",
                           "--opset", opset), f"--opset {opset}", f"{OPSETS[0]} to {OPSETS[1]}",
                       code=2)
    one_error_line(run("export", weights["liif"], tmp_path / "c.pth", "--opset", "17"),
                   "--format onnx", code=2)
    blocker = tmp_path / "a-file"  # a file where a folder should be: unwritable for anyone
    blocker.write_text("x")
    one_error_line(run("export", weights["liif"], blocker / "out", "--format", "onnx"),
                   "cannot write", "not a folder", code=2)
    one_error_line(run("export", weights["liif"], blocker, "--format", "onnx", "--overwrite"),
                   "not a folder", code=2)
    other = tmp_path / "photos"
    other.mkdir()
    (other / "holiday.jpg").write_text("precious")
    one_error_line(run("export", weights["liif"], other, "--format", "onnx", "--overwrite"),
                   "holding other files", code=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "fake.pth", "photos"]
    assert [p.name for p in other.iterdir()] == ["holiday.jpg"] and blocker.read_text() == "x"


def test_cli_export_refuses_to_swap_out_the_current_folder(weights, tmp_path, monkeypatch):
    """An export replaces an earlier one's folder whole: never the one the user stands in.
    An empty current folder is filled in place."""
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    assert run("export", weights["liif"], ".", "--format", "onnx").exit_code == 0
    exported = {p.name: p.read_bytes() for p in here.iterdir()}
    assert sorted(exported) == sorted([ENCODER_FILE, DECODER_FILE, MANIFEST_FILE])
    for target in (".", str(here)):
        one_error_line(run("export", weights["lmf"], target, "--format", "onnx", "--overwrite"),
                       "current folder", code=2)
    assert {p.name: p.read_bytes() for p in here.iterdir()} == exported
    assert sorted(p.name for p in tmp_path.iterdir()) == ["here"]


def test_files_that_appear_in_a_replaced_export_are_kept(tmp_path):
    from liif_cli.errors import LiifError
    from liif_cli.onnx_export import _remove_old_export

    old = tmp_path / ".old"
    old.mkdir()
    for name in (ENCODER_FILE, MANIFEST_FILE, "notes.txt"):
        (old / name).write_text(name)
    with pytest.raises(LiifError, match="files that appeared in the folder it replaced"):
        _remove_old_export(old, tmp_path / "out")
    assert [p.name for p in old.iterdir()] == ["notes.txt"]


def test_cli_export_without_onnx_says_how_to_install(weights, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` now raises ImportError
    one_error_line(run("export", weights["liif"], tmp_path / "out", "--format", "onnx"),
                   "pip install 'liif[onnx]'", code=2)
    assert not (tmp_path / "out").exists()


def test_cli_help_states_the_module_opsets():
    assert f"{OPSETS[0]} to {OPSETS[1]}" in cli.OPSET_HELP
    text = " ".join(CliRunner().invoke(app, ["export", "--help"], env={"COLUMNS": "200"})
                    .output.replace("│", " ").split())
    assert f"[default: ({DEFAULT_OPSET})]" in text and "liif[onnx]" in text
    assert "encoder.onnx, decoder.onnx and manifest.json" in text


def test_cli_export_usage_errors_answer_without_torch(tiny_weights, tmp_path,
                                                      cli_in_fresh_process):
    for args in (["--opset", "99"], ["--opset", "12"]):
        assert cli_in_fresh_process(["export", tiny_weights, tmp_path / "out", "--format",
                                     "onnx", *args]) == (2, False)
    assert not (tmp_path / "out").exists()


def test_cli_export_that_fails_while_writing_leaves_nothing(weights, tmp_path, monkeypatch):
    import errno

    from liif_cli import onnx_export

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(onnx_export.os, "fsync", full_disk)
    one_error_line(run("export", weights["liif"], tmp_path / "out", "--format", "onnx"),
                   "cannot write", "no space left", code=1)
    assert list(tmp_path.iterdir()) == []  # neither the folder nor its temporary one
