"""Tests for liif_cli.model: coordinates, nearest-latent selection, ensemble weights, the fast
decoder against the paper's reference decoder (values and gradients) and receptive radii."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import torch
import torch.nn.functional as F

from liif_cli import model as model_mod
from liif_cli.model import (
    EDSR,
    RDN,
    ModelSpec,
    build_model,
    ensemble_weights,
    make_cells,
    make_coords,
    nearest_latent_index,
)

EPS = 1e-6
FLAGS = list(itertools.product([False, True], repeat=3))  # feat_unfold, local_ensemble, cell
SCALES = [0.6, 1.0, 2.5, 3.0, 10.5]
IN_SIZE = (5, 7)  # non-square, odd
TINY_RDN = "T"  # registered below: 2 blocks of 3 layers, growth 4


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", autouse=True)
def tiny_rdn_config():
    """A tiny RDN configuration (same architecture as 'A'/'B', fewer and thinner blocks)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(model_mod.RDN_CONFIGS, TINY_RDN, (2, 3, 4))
        yield


def tiny_spec(encoder: str, feat_unfold=True, local_ensemble=True, cell_decode=True) -> ModelSpec:
    args = (dict(n_resblocks=1, n_feats=8) if encoder == "edsr-baseline"
            else dict(G0=6, RDNconfig=TINY_RDN))
    return ModelSpec(encoder=encoder, encoder_args=args, hidden=[16, 16],
                     feat_unfold=feat_unfold, local_ensemble=local_ensemble,
                     cell_decode=cell_decode)


def seeded_model(spec: ModelSpec, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(spec).eval()


# --------------------------------------------------------------------------- coordinates


def test_make_coords_are_pixel_centres_row_major():
    c = make_coords((2, 3))
    assert c.shape == (6, 2)
    expected_rows = torch.tensor([-0.5, -0.5, -0.5, 0.5, 0.5, 0.5])
    expected_cols = torch.tensor([-2 / 3, 0.0, 2 / 3] * 2)
    torch.testing.assert_close(c[:, 0], expected_rows, rtol=0, atol=1e-7)  # component 0: row
    torch.testing.assert_close(c[:, 1], expected_cols, rtol=0, atol=1e-7)
    grid = make_coords((2, 3), flatten=False)
    assert grid.shape == (2, 3, 2)
    assert torch.equal(grid.reshape(-1, 2), c)
    assert torch.equal(make_coords((1, 1)), torch.zeros(1, 2))


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 48])
def test_make_coords_one_axis_centres(n):
    col = make_coords((1, n))[:, 1].double()
    expected = (torch.arange(n, dtype=torch.float64) * 2 + 1) / n - 1
    torch.testing.assert_close(col, expected, rtol=0, atol=1e-6)
    # symmetric about 0 and strictly inside [-1, 1]
    torch.testing.assert_close(col, -col.flip(0), rtol=0, atol=1e-6)
    assert col.min() > -1 and col.max() < 1


def test_make_cells():
    cells = make_cells((4, 8), 5)
    assert cells.shape == (5, 2)
    assert torch.equal(cells, torch.tensor([[0.5, 0.25]]).expand(5, 2))
    cells[0, 0] = 7.0  # an independent tensor, not a view of one shared row
    assert cells[1, 0] == 0.5
    assert make_cells((3, 3), 0).shape == (0, 2)


# --------------------------------------------------------------------------- nearest latent


def grid_sample_index(coord: torch.Tensor, size: int, axis: int) -> torch.Tensor:
    """Which latent F.grid_sample(nearest, align_corners=False) picks, along rows or columns."""
    values = torch.arange(size, dtype=torch.float32) + 1  # +1: zero would mean 'outside'
    if axis == 0:
        feat = values.view(1, 1, size, 1)
        grid = torch.stack([torch.zeros_like(coord), coord], -1)  # (x, y): y varies
    else:
        feat = values.view(1, 1, 1, size)
        grid = torch.stack([coord, torch.zeros_like(coord)], -1)
    out = F.grid_sample(feat, grid.view(1, 1, -1, 2), mode="nearest", align_corners=False)
    picked = out.view(-1)
    assert (picked > 0).all(), "grid_sample sampled outside the grid"
    return picked.long() - 1


def tie_prone_coords(size: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(size)
    parts = [
        torch.rand(2000, generator=g) * 2 - 1,
        -1 + 2 * torch.arange(size + 1, dtype=torch.float32) / size,  # boundaries in float32
        (-1 + 2 * torch.arange(size + 1, dtype=torch.float64) / size).float(),  # rounded
        make_coords((size, 1))[:, 0],  # latent centres
        torch.tensor([-1.0, 1.0, 0.0, -0.5, 0.5]),
    ]
    for out in (size * 3, max(1, size // 2), size * 3 // 2, size * 2):  # output pixel grids
        centres = make_coords((out, 1))[:, 0]
        parts.append(centres)
        for shift in (-1, 1):
            parts.append(centres + shift / size + EPS)
            parts.append(centres + shift / size)
    coords = torch.cat(parts).float()
    return coords.clamp(-1 + 1e-6, 1 - 1e-6)  # what the samplers see after clamping


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 7, 12, 48, 1000])
@pytest.mark.parametrize("axis", [0, 1])
def test_nearest_latent_index_matches_grid_sample(size, axis):
    coords = tie_prone_coords(size)
    ours = nearest_latent_index(coords, size)
    assert torch.equal(ours, grid_sample_index(coords, size, axis))


def test_tie_prone_coords_really_contain_ties():
    """Guard for the test above: exact half-way positions are present (round half to even)."""
    size = 4
    coords = tie_prone_coords(size)
    pos = ((coords.double() + 1) * size - 1) / 2
    ties = pos[(pos - pos.floor()) == 0.5]
    assert ties.numel() > 0
    # half-way between latents 0 and 1 (coordinate -0.5 on 4 latents) goes to the even one
    assert nearest_latent_index(torch.tensor([-0.5]), 4).item() == 0
    assert nearest_latent_index(torch.tensor([0.0]), 4).item() == 2
    assert grid_sample_index(torch.tensor([0.0]), 4, 1).item() == 2


def test_nearest_latent_index_clamps_to_grid():
    idx = nearest_latent_index(torch.tensor([-1.5, -1.0, 1.0, 1.5]), 4)
    assert idx.tolist() == [0, 0, 3, 3]


# --------------------------------------------------------------------------- ensemble weights


def neighbour_offsets(coord: torch.Tensor, size: tuple[int, int]) -> list[torch.Tensor]:
    """(Q, 2) offsets in latent units from the four ensemble neighbours, official order."""
    rels = []
    for dy, dx in [(-1, -1), (-1, 1), (1, -1), (1, 1)]:
        parts = []
        for axis, d in ((0, dy), (1, dx)):
            n = size[axis]
            shifted = (coord[:, axis] + d / n + EPS).clamp(-1 + 1e-6, 1 - 1e-6)
            idx = nearest_latent_index(shifted, n)
            centre = -1 + (2 * idx.double() + 1) / n
            parts.append((coord[:, axis].double() - centre) * n)
        rels.append(torch.stack(parts, -1))
    return rels


def test_ensemble_weights_sum_to_one_and_favour_nearest():
    size = (6, 9)
    g = torch.Generator().manual_seed(3)
    coord = (torch.rand(4000, 2, generator=g) * 2 - 1) * torch.tensor([1 - 1 / 6, 1 - 1 / 9])
    rels = neighbour_offsets(coord, size)
    weights = torch.stack(ensemble_weights(rels))  # (4, Q)
    torch.testing.assert_close(weights.sum(0), torch.ones(coord.shape[0], dtype=weights.dtype))
    assert (weights >= 0).all()
    dist = torch.stack([r.norm(dim=-1) for r in rels])  # (4, Q)
    # away from exact ties, the nearest neighbour carries the largest weight
    sorted_dist = dist.sort(0).values
    clear = (sorted_dist[1] - sorted_dist[0]) > 1e-3
    assert clear.sum() > 3000
    assert torch.equal(weights.argmax(0)[clear], dist.argmin(0)[clear])


def test_ensemble_weights_are_bilinear():
    # query at (+0.1, +0.2) latent units from its nearest latent: neighbours in official order
    rels = [torch.tensor([[0.1, 0.2]]), torch.tensor([[0.1, -0.8]]),
            torch.tensor([[-0.9, 0.2]]), torch.tensor([[-0.9, -0.8]])]
    w = [x.item() for x in ensemble_weights(rels)]
    expected = [0.9 * 0.8, 0.9 * 0.2, 0.1 * 0.8, 0.1 * 0.2]  # opposite rectangle's area
    assert w == pytest.approx(expected, abs=1e-6)
    assert max(range(4), key=w.__getitem__) == 0


# --------------------------------------------------------------------------- fast decoder


def query_batch(scale: float, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Coordinates and cells for a batch: the output grid of each scale plus random points."""
    out = (max(1, round(IN_SIZE[0] * scale)), max(1, round(IN_SIZE[1] * scale)))
    grid = make_coords(out)
    g = torch.Generator().manual_seed(int(scale * 10))
    coords, cells = [], []
    for b in range(batch):
        extra = torch.rand(64, 2, generator=g) * 2 - 1
        edges = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [-1.0, 1.0], [0.0, 0.0]])
        c = torch.cat([grid, extra, edges]) if b == 0 else torch.cat([extra, grid.flip(0), edges])
        coords.append(c)
        cells.append(make_cells(out, c.shape[0]) * (1 + 0.5 * b))
    return torch.stack(coords), torch.stack(cells)


@pytest.mark.parametrize("encoder", ["edsr-baseline", "rdn"])
@pytest.mark.parametrize("flags", FLAGS, ids=lambda f: "".join("UEC"[i] if v else "-"
                                                              for i, v in enumerate(f)))
def test_fast_decoder_equals_reference(encoder, flags):
    model = seeded_model(tiny_spec(encoder, *flags))
    g = torch.Generator().manual_seed(1)
    image = torch.rand(2, 3, *IN_SIZE, generator=g) * 2 - 1
    with torch.no_grad():
        feat = model.encode(image)
        proj = model.project_latents(feat)
        for scale in SCALES:
            coord, cell = query_batch(scale)
            fast = model.query_rgb(proj, coord, cell)
            ref = model.query_rgb_reference(feat, coord, cell)
            assert fast.shape == ref.shape == (2, coord.shape[1], 3)
            assert ref.abs().max() > 1e-2  # a non-trivial output
            err = (fast - ref).abs().max().item()
            assert err <= 1e-5, f"scale {scale}: max abs error {err}"
            # forward() is the fast path end to end
            torch.testing.assert_close(model(image, coord, cell), fast, rtol=0, atol=1e-6)


def test_fast_decoder_is_sensitive_to_each_flag():
    """Guard: the flags change the function, so the equality test above compares something."""
    coord, cell = query_batch(2.5)
    image = torch.rand(2, 3, *IN_SIZE, generator=torch.Generator().manual_seed(5))
    outs = []
    for flags in [(True, True, True), (True, True, False), (True, False, True)]:
        model = seeded_model(tiny_spec("edsr-baseline", *flags))
        with torch.no_grad():
            outs.append(model(image, coord, cell))
    # same seed but different architecture: outputs differ
    assert not torch.allclose(outs[0], outs[1]) and not torch.allclose(outs[0], outs[2])


def test_query_outside_window_is_refused():
    model = seeded_model(tiny_spec("edsr-baseline"))
    feat = torch.randn(1, 8, 3, 3)
    proj = model.project_latents(feat, offset=(0, 0), grid_size=(9, 9))  # top-left window
    coord = torch.tensor([[[0.9, 0.9]]])
    with pytest.raises(ValueError, match="outside"):
        model.query_rgb(proj, coord, torch.full((1, 1, 2), 0.1))


def test_windowed_projection_matches_global():
    """A window of the feature map, addressed globally, gives the same values."""
    model = seeded_model(tiny_spec("edsr-baseline"))
    feat = torch.randn(1, 8, 9, 11, generator=torch.Generator().manual_seed(2))
    full = model.project_latents(feat)
    # queries whose neighbours + unfold stay inside rows 2..7, cols 3..9 of the grid
    window = feat[:, :, 1:8, 2:10]  # one latent of margin for the 3x3 unfold
    part = model.project_latents(window, offset=(1, 2), grid_size=(9, 11))
    rows = torch.linspace(-1 + 2 * 2.6 / 9, -1 + 2 * 6.4 / 9, 7)
    cols = torch.linspace(-1 + 2 * 3.6 / 11, -1 + 2 * 8.4 / 11, 5)
    coord = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), -1).view(1, -1, 2)
    cell = torch.full_like(coord, 0.05)
    with torch.no_grad():
        a = model.query_rgb(full, coord, cell)
        b = model.query_rgb(part, coord, cell)
    assert (a - b).abs().max() <= 1e-6


@pytest.mark.parametrize("encoder", ["edsr-baseline", "rdn"])
def test_fast_path_gradients_match_reference(encoder):
    """Gradients wrt every parameter and the input image agree (float64: tolerance 1e-9)."""
    model = seeded_model(tiny_spec(encoder)).double()
    g = torch.Generator().manual_seed(4)
    image = torch.rand(2, 3, *IN_SIZE, generator=g, dtype=torch.float64)
    coord, cell = query_batch(2.5)
    coord, cell = coord.double(), cell.double()
    target = torch.randn(2, coord.shape[1], 3, generator=g, dtype=torch.float64)

    def grads(fast: bool):
        model.zero_grad()
        img = image.clone().requires_grad_(True)
        feat = model.encode(img)
        out = (model.query_rgb(model.project_latents(feat), coord, cell) if fast
               else model.query_rgb_reference(feat, coord, cell))
        ((out - target) ** 2).mean().backward()
        result = {n: p.grad.clone() for n, p in model.named_parameters()}
        result["image"] = img.grad.clone()
        return result

    fast, ref = grads(True), grads(False)
    assert fast.keys() == ref.keys()
    for name in ref:
        assert ref[name].abs().max() > 0, name  # every parameter takes part
        torch.testing.assert_close(fast[name], ref[name], rtol=1e-7, atol=1e-9, msg=name)


def test_fast_path_gradients_match_reference_float32():
    """The same in float32, where the tolerance is relative to each gradient's scale: 1e-4."""
    model = seeded_model(tiny_spec("edsr-baseline"))
    g = torch.Generator().manual_seed(6)
    image = torch.rand(1, 3, *IN_SIZE, generator=g)
    coord, cell = query_batch(3.0, batch=1)
    out_fast, out_ref = [], []
    for fast, store in ((True, out_fast), (False, out_ref)):
        model.zero_grad()
        feat = model.encode(image)
        out = (model.query_rgb(model.project_latents(feat), coord, cell) if fast
               else model.query_rgb_reference(feat, coord, cell))
        out.square().mean().backward()
        store.extend(p.grad.clone() for p in model.parameters())
    for a, b in zip(out_fast, out_ref, strict=True):
        assert (a - b).abs().max() <= 1e-4 * b.abs().max() + 1e-8


# --------------------------------------------------------------------------- receptive radius


def radius_probe(encoder, radius: int) -> torch.Tensor:
    """Chebyshev distance -> max |change| of the encoder output when one input pixel moves."""
    size = 2 * radius + 5
    centre = size // 2
    encoder = encoder.double().eval()
    g = torch.Generator().manual_seed(7)
    image = torch.rand(1, 3, size, size, generator=g, dtype=torch.float64) * 2 - 1
    bumped = image.clone()
    bumped[0, :, centre, centre] += torch.tensor([3.0, -2.0, 4.0], dtype=torch.float64)
    with torch.no_grad():
        diff = (encoder(bumped) - encoder(image)).abs().amax(dim=(0, 1))  # (H, W)
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    dist = torch.maximum((ys - centre).abs(), (xs - centre).abs())
    return torch.stack([diff[dist == d].max() for d in range(int(dist.max()) + 1)])


@pytest.mark.parametrize("n_resblocks", [0, 1, 2])
def test_edsr_receptive_radius_is_exact(n_resblocks):
    torch.manual_seed(8)
    encoder = EDSR(n_resblocks=n_resblocks, n_feats=8)
    r = encoder.receptive_radius
    assert r == 2 + 2 * n_resblocks
    by_distance = radius_probe(encoder, r)
    assert (by_distance[: r + 1] > 1e-6).all()  # reaches every distance up to the radius
    assert (by_distance[r + 1:] == 0).all()  # and nothing beyond it


@pytest.mark.parametrize("config, k", [(TINY_RDN, 3), ("U", 3), (TINY_RDN, 5)])
def test_rdn_receptive_radius_bounds_the_influence(config, k, monkeypatch):
    monkeypatch.setitem(model_mod.RDN_CONFIGS, "U", (1, 2, 3))
    torch.manual_seed(9)
    encoder = RDN(G0=4, RDNkSize=k, RDNconfig=config)
    r = encoder.receptive_radius
    by_distance = radius_probe(encoder, r)
    assert (by_distance[r + 1:] == 0).all()
    assert by_distance[r] > 1e-9  # the deepest path reaches exactly the radius


def test_context_radius_covers_unfold_and_ensemble():
    for unfold in (False, True):
        m = build_model(tiny_spec("edsr-baseline", feat_unfold=unfold))
        assert m.context_radius == m.encoder.receptive_radius + (1 if unfold else 0) + 1


def test_unknown_encoder_is_refused():
    with pytest.raises(ValueError, match="unknown encoder"):
        build_model(ModelSpec(encoder="vgg"))


def test_spec_dict_round_trip():
    spec = tiny_spec("rdn", feat_unfold=False)
    again = ModelSpec(**spec.to_dict())
    assert again == spec
    a, b = seeded_model(spec), build_model(spec.to_dict())
    assert a.state_dict().keys() == b.state_dict().keys()


# --------------------------------------------------------------------------- rendering decoder


@pytest.mark.parametrize("fused", [True, False], ids=["onednn", "addmm"])
@pytest.mark.parametrize("flags", FLAGS, ids=lambda f: "".join("UEC"[i] if v else "-"
                                                              for i, v in enumerate(f)))
def test_rendering_decoder_equals_query_rgb(monkeypatch, flags, fused):
    """model.Decoder (no autograd, weights cast once, fused bias + ReLU where oneDNN has it,
    addmm + ReLU elsewhere) computes query_rgb's function, in float32 to 1e-6."""
    if not fused:
        monkeypatch.setattr(model_mod, "_onednn_linear_relu_works", lambda dtype: False)
    model = seeded_model(tiny_spec("edsr-baseline", *flags))
    decoder = model_mod.Decoder(model)
    assert decoder.fused == (fused and model_mod._onednn_linear_relu_works(torch.float32))
    image = torch.rand(2, 3, *IN_SIZE, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.no_grad():
        proj = model.project_latents(model.encode(image))
        for scale in SCALES:
            coord, cell = query_batch(scale)
            fast = decoder(proj, coord, cell)
            assert fast.dtype == torch.float32 and fast.shape == (2, coord.shape[1], 3)
            assert (fast - model.query_rgb(proj, coord, cell)).abs().max() <= 1e-6


def test_rendering_decoder_bf16_is_query_rgb_under_autocast():
    """In bf16 the decoder does what query_rgb does under bf16 autocast (training's bf16
    path and the engine's before it cast the weights once): same dtypes, same roundings."""
    model = seeded_model(tiny_spec("edsr-baseline"))
    image = torch.rand(1, 3, *IN_SIZE, generator=torch.Generator().manual_seed(4)) * 2 - 1
    coord, cell = query_batch(3.0, batch=1)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        proj = model.project_latents(model.encode(image))
        autocast = model.query_rgb(proj, coord, cell).float()
    with torch.no_grad():
        fast = model_mod.Decoder(model, torch.bfloat16)(proj, coord, cell)
        as_fp32 = dataclasses.replace(proj, values=proj.values.float())  # same latents
        exact = model.query_rgb(as_fp32, coord, cell)
    assert fast.dtype == torch.float32
    # bf16 keeps 8 significant bits: a few 1e-3 on these outputs (|out| < 1); measured 0 here
    assert (fast - autocast).abs().max() <= 2e-3
    assert 0 < (fast - exact).abs().max() <= 2e-2  # > 0: bf16 really ran


def test_neighbours_are_the_reference_samples():
    """The vectorised neighbour pass picks, per query and shift, the latent that grid_sample
    picks in the reference decoder, and its weights are ensemble_weights'."""
    model = seeded_model(tiny_spec("edsr-baseline"))
    h, w = IN_SIZE
    feat = torch.arange(h * w, dtype=torch.float32).view(1, 1, h, w)  # latent = its own index
    proj = model_mod.LatentProjection(feat.view(1, -1, 1), (h, w), (0, 0), (h, w))
    coord, cell = query_batch(2.5, batch=1)
    nb = model.neighbours(proj, coord, cell)
    rels = []
    for k, (dy, dx) in enumerate(model_mod.ensemble_shifts(True)):
        shifted = coord.clone()
        shifted[..., 0] += dy / h + EPS
        shifted[..., 1] += dx / w + EPS
        shifted.clamp_(-1 + 1e-6, 1 - 1e-6)
        picked = F.grid_sample(feat, shifted.flip(-1).unsqueeze(1), mode="nearest",
                               align_corners=False)[0, 0, 0]  # (Q,)
        q = coord.shape[1]
        assert torch.equal(nb.rows[k * q:(k + 1) * q], picked.long())
        rels.append(nb.small[k * q:(k + 1) * q, :2])
    assert torch.equal(nb.weights[:, 0], torch.stack(ensemble_weights(rels)))
