"""The LIIF model: encoders, the MLP decoder and the local implicit image function.

Pure tensors: no file I/O, no printing. Images are (B, 3, H, W) tensors normalised as
(x - 0.5) / 0.5, exactly like the official checkpoints (github.com/yinboc/liif).

Coordinates live in the continuous square [-1, 1]^2; component 0 is the row (y) and
component 1 the column (x). A feature map of size (h, w) has one latent code per input
pixel, sitting at that pixel's centre. A query is a coordinate plus a cell: the size of
the target pixel in the same units (2 / H', 2 / W').

Two decoders compute the same function:
- `query_rgb_reference`: the paper's definition written out directly (unfold the feature
  map, gather with nearest sampling, run the whole MLP on [latent, offset, cell] for each
  of the four ensemble neighbours). Slow; the yardstick for tests and `liif bench --speed`.
- `query_rgb`: the fast path. The MLP's first layer is linear in the unfolded latent, so
  its latent part is a 3x3 convolution of the feature map computed once per *input* pixel
  (`project_latents`); per query only the small offset/cell part and the deeper layers run.
  It addresses latents by global index, so it also works on a window of a larger feature
  map, which is what lets the rendering engine tile exactly. `Decoder` is the same
  computation for rendering: no autograd, weights cast once, fused bias + ReLU.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .runtime import cpu_has_fast_bf16

# The official code nudges each ensemble shift by this much so that a query lying exactly
# between two latents picks a deterministic one, and clamps shifted coordinates inside the
# square by the same margin.
EPS_SHIFT = 1e-6
AREA_EPS = 1e-9


# --------------------------------------------------------------------------- coordinates


def make_coords(shape: tuple[int, int], flatten: bool = True) -> Tensor:
    """Pixel-centre coordinates of an (H, W) grid in [-1, 1]^2, as (H*W, 2) or (H, W, 2)."""
    axes = [axis_centres(n) for n in shape]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)  # (H, W, 2)
    return grid.reshape(-1, 2) if flatten else grid


def make_cells(shape: tuple[int, int], count: int) -> Tensor:
    """The cell (pixel size) of an (H, W) target grid, repeated for `count` queries: (count, 2)."""
    cell = torch.tensor([2.0 / shape[0], 2.0 / shape[1]])
    return cell.expand(count, 2).clone()


def axis_centres(n: int) -> Tensor:
    """Centres of n equal cells spanning [-1, 1], computed like the official make_coord."""
    r = 1.0 / n  # half a cell
    return -1 + r + (2 * r) * torch.arange(n).float()


def nearest_latent_index(coord: Tensor, size: int) -> Tensor:
    """Index of the latent nearest to each coordinate along one axis of `size` latents.

    Same rule as grid_sample(mode="nearest", align_corners=False): unnormalise, round
    half to even, and stay inside the grid.
    """
    pos = (((coord + 1) * size - 1) / 2).double()  # float64: exact +0.5 and tie test
    index = torch.floor(pos + 0.5)
    index -= (((index - pos) == 0.5) & (index.remainder(2) == 1)).double()  # ties: to even
    return index.long().clamp_(0, size - 1)


def ensemble_shifts(local_ensemble: bool) -> list[tuple[int, int]]:
    """The (row, col) neighbour shifts queried per output pixel, in the official order."""
    if not local_ensemble:
        return [(0, 0)]
    return [(-1, -1), (-1, 1), (1, -1), (1, 1)]


def ensemble_weights(rel_coords: list[Tensor]) -> list[Tensor]:
    """Local-ensemble weights from each neighbour's (..., 2) offset (in latent units),
    summing to 1; see area_weights."""
    rel = torch.stack(rel_coords)  # (n, ..., 2)
    return list(area_weights(rel[..., 0], rel[..., 1]).unbind(0))


def area_weights(rel_y: Tensor, rel_x: Tensor) -> Tensor:
    """Local-ensemble weights from the n neighbours' offsets along each axis, (n, ...) each,
    in the order of ensemble_shifts; (n, ...), summing to 1 over n.

    Each neighbour is weighted by the area of the rectangle between the query and the
    diagonally opposite neighbour, so the nearest latent gets the largest weight.
    """
    areas = (rel_y * rel_x).abs() + AREA_EPS
    return areas.flip(0) / areas.sum(0)  # flip: swap diagonal partners


# --------------------------------------------------------------------------- encoders


class ResBlock(nn.Module):
    """conv-ReLU-conv with an identity skip (EDSR's residual block, no batch norm)."""

    def __init__(self, channels: int, res_scale: float = 1.0):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
        )
        self.res_scale = res_scale

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x) * self.res_scale


class EDSR(nn.Module):
    """EDSR without its upsampling tail: an image becomes a (B, n_feats, H, W) feature map."""

    def __init__(self, n_resblocks: int = 16, n_feats: int = 64, res_scale: float = 1.0,
                 n_colors: int = 3):
        super().__init__()
        self.head = nn.Sequential(nn.Conv2d(n_colors, n_feats, 3, padding=1))
        blocks: list[nn.Module] = [ResBlock(n_feats, res_scale) for _ in range(n_resblocks)]
        blocks.append(nn.Conv2d(n_feats, n_feats, 3, padding=1))
        self.body = nn.Sequential(*blocks)
        self.out_dim = n_feats
        # Pixels of context each side that reach one output feature (3x3 convs: 1 each).
        self.receptive_radius = 2 + 2 * n_resblocks

    def forward(self, x: Tensor) -> Tensor:
        x = self.head(x)
        return x + self.body(x)


class DenseLayer(nn.Module):
    """RDN's conv-ReLU whose output is concatenated to its input."""

    def __init__(self, in_channels: int, growth: int, kernel: int = 3):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(in_channels, growth, kernel, padding=kernel // 2),
                                  nn.ReLU(inplace=True))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat((x, self.conv(x)), 1)


class ResidualDenseBlock(nn.Module):
    """C dense layers, a 1x1 local fusion and a residual skip."""

    def __init__(self, channels: int, growth: int, n_layers: int, kernel: int = 3):
        super().__init__()
        self.convs = nn.Sequential(*[DenseLayer(channels + i * growth, growth, kernel)
                                     for i in range(n_layers)])
        self.LFF = nn.Conv2d(channels + n_layers * growth, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.LFF(self.convs(x)) + x


RDN_CONFIGS = {"A": (20, 6, 32), "B": (16, 8, 64)}  # (blocks D, layers per block C, growth G)


class RDN(nn.Module):
    """Residual Dense Network without its upsampling tail (the LIIF paper uses config B)."""

    def __init__(self, G0: int = 64, RDNkSize: int = 3, RDNconfig: str = "B", n_colors: int = 3):
        super().__init__()
        n_blocks, n_layers, growth = RDN_CONFIGS[RDNconfig]
        pad = RDNkSize // 2
        self.SFENet1 = nn.Conv2d(n_colors, G0, RDNkSize, padding=pad)
        self.SFENet2 = nn.Conv2d(G0, G0, RDNkSize, padding=pad)
        # The official RDB never passes RDNkSize on: its dense layers are always 3x3.
        self.RDBs = nn.ModuleList([ResidualDenseBlock(G0, growth, n_layers)
                                   for _ in range(n_blocks)])
        self.GFF = nn.Sequential(nn.Conv2d(n_blocks * G0, G0, 1),
                                 nn.Conv2d(G0, G0, RDNkSize, padding=pad))
        self.out_dim = G0
        self.receptive_radius = 3 * pad + n_blocks * n_layers

    def forward(self, x: Tensor) -> Tensor:
        shallow = self.SFENet1(x)
        x = self.SFENet2(shallow)
        block_outputs = []
        for block in self.RDBs:
            x = block(x)
            block_outputs.append(x)
        return self.GFF(torch.cat(block_outputs, 1)) + shallow


def _edsr_full(**kwargs: Any) -> EDSR:
    """EDSR at full size (32 blocks, 256 channels, residual scaling 0.1)."""
    return EDSR(**{"n_resblocks": 32, "n_feats": 256, "res_scale": 0.1, **kwargs})


ENCODERS: dict[str, Any] = {"edsr-baseline": EDSR, "edsr": _edsr_full, "rdn": RDN}


# --------------------------------------------------------------------------- decoder


class MLP(nn.Module):
    """Linear-ReLU stack; `layers` is named like the official code so checkpoints load."""

    def __init__(self, in_dim: int, out_dim: int, hidden: list[int]):
        super().__init__()
        layers: list[nn.Module] = []
        last = in_dim
        for width in hidden:
            layers += [nn.Linear(last, width), nn.ReLU(inplace=True)]
            last = width
        layers.append(nn.Linear(last, out_dim))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


@dataclass
class ModelSpec:
    """Everything needed to rebuild a LIIF model (stored in checkpoints)."""

    encoder: str = "edsr-baseline"
    encoder_args: dict[str, Any] = field(default_factory=dict)
    hidden: list[int] = field(default_factory=lambda: [256, 256, 256, 256])
    feat_unfold: bool = True
    local_ensemble: bool = True
    cell_decode: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LatentProjection:
    """The first MLP layer's latent part, precomputed per latent: the fast path's state.

    `values` is channels-last, one row per latent of a (possibly windowed) feature map that
    starts at `offset` inside a global grid of `grid_size` latents.
    """

    values: Tensor  # (B, h*w, hidden0)
    window: tuple[int, int]  # (h, w) of this window
    offset: tuple[int, int]  # (row, col) of the window's first latent in the global grid
    grid_size: tuple[int, int]  # (H, W) of the global latent grid


@dataclass
class Neighbours:
    """What the fast decoders need per query and ensemble neighbour (n of them), flattened
    neighbour-major: row n*B*Q + b*Q + q belongs to neighbour n, image b, query q."""

    rows: Tensor  # (n*B*Q,) long: row of the neighbour's latent in the projection's values
    small: Tensor  # (n*B*Q, 2 or 4): offset to that latent in latent units (and the cell)
    weights: Tensor | None  # (n, B, Q): local-ensemble weights; None without the ensemble


class LIIF(nn.Module):
    """Encoder + local implicit image function: RGB at any coordinate of any image."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        if spec.encoder not in ENCODERS:
            raise ValueError(f"unknown encoder {spec.encoder!r}; choose from {sorted(ENCODERS)}")
        self.spec = spec
        self.encoder = ENCODERS[spec.encoder](**spec.encoder_args)
        latent_dim = self.encoder.out_dim * (9 if spec.feat_unfold else 1)
        in_dim = latent_dim + 2 + (2 if spec.cell_decode else 0)
        self.imnet = MLP(in_dim, 3, list(spec.hidden))
        self.latent_dim = latent_dim

    @property
    def context_radius(self) -> int:
        """Input pixels each side that one output pixel can depend on (for tiling halos)."""
        unfold = 1 if self.spec.feat_unfold else 0
        ensemble = 1  # a neighbouring latent may be picked, whether ensembling or not
        return self.encoder.receptive_radius + unfold + ensemble

    def encode(self, image: Tensor) -> Tensor:
        """(B, 3, H, W) normalised image -> (B, C, H, W) feature map."""
        return self.encoder(image)

    def forward(self, image: Tensor, coord: Tensor, cell: Tensor) -> Tensor:
        """Normalised image, (B, Q, 2) coordinates and cells -> (B, Q, 3) normalised RGB."""
        return self.query_rgb(self.project_latents(self.encode(image)), coord, cell)

    # ---------------------------------------------------------------- fast decoder

    def project_latents(self, feat: Tensor, offset: tuple[int, int] = (0, 0),
                        grid_size: tuple[int, int] | None = None) -> LatentProjection:
        """Apply the first MLP layer's latent weights to every latent of `feat` (B, C, h, w).

        With feature unfolding this is a zero-padded 3x3 convolution; the weight layout of
        F.unfold (channel-major, then kernel row, then kernel column) is exactly a conv kernel.
        """
        first = self.imnet.layers[0]
        b, c, h, w = feat.shape
        kernel = 3 if self.spec.feat_unfold else 1
        weight = first.weight[:, : self.latent_dim].reshape(-1, c, kernel, kernel)
        proj = F.conv2d(feat, weight, first.bias, padding=kernel // 2)  # (B, hidden0, h, w)
        values = proj.flatten(2).transpose(1, 2).contiguous()  # (B, h*w, hidden0)
        return LatentProjection(values, (h, w), offset, grid_size or (h, w))

    def neighbours(self, proj: LatentProjection, coord: Tensor, cell: Tensor | None,
                   check_window: bool = True) -> Neighbours:
        """The latents each query reads and the small inputs it pairs them with, for all
        ensemble neighbours at once; (B, Q, 2) global coordinates and cells.

        One vectorised pass per axis over the n neighbours (n = 4 with the local ensemble,
        else 1), computing exactly what the reference decoder's per-neighbour sampling does.
        check_window: verify that every latent the queries need lies inside the projected
        window (ValueError otherwise). The check reads indices back to the host, which stalls
        a GPU; callers that know the window covers the queries (the engine's tile plan, a
        whole-image projection) pass False.
        """
        b, q, _ = coord.shape
        big_h, big_w = proj.grid_size
        win_h, win_w = proj.window
        n = len(ensemble_shifts(self.spec.local_ensemble))
        eps = EPS_SHIFT if self.spec.local_ensemble else 0.0
        # Neighbour k's shift in latent steps: (-1, -1), (-1, 1), (1, -1), (1, 1), the order
        # of ensemble_shifts; made on the device (a tensor made from a list would be a
        # blocking host-to-device copy on every call). float64 like the Python scalars of
        # the reference, so each shifted coordinate is rounded exactly as it rounds them.
        k = torch.arange(n, device=coord.device, dtype=torch.float64)
        steps = ((k // 2) * 2 - 1, (k % 2) * 2 - 1) if n > 1 else (k, k)  # (n,) each
        iy, rel_y = _neighbour_axis(coord[..., 0], steps[0], big_h, eps)  # (n, B, Q) each
        ix, rel_x = _neighbour_axis(coord[..., 1], steps[1], big_w, eps)
        local_y, local_x = iy - proj.offset[0], ix - proj.offset[1]
        if check_window and local_y.numel() and not (
                0 <= int(local_y.min()) and int(local_y.max()) < win_h
                and 0 <= int(local_x.min()) and int(local_x.max()) < win_w):
            raise ValueError("query falls outside the projected feature window")
        first_rows = torch.arange(b, device=coord.device).view(1, b, 1) * (win_h * win_w)
        rows = (first_rows + local_y * win_w + local_x).view(-1)  # (n*B*Q,)
        small = [rel_y, rel_x]
        if self.spec.cell_decode:
            if cell is None:
                raise ValueError("this model decodes cells: pass the queries' cells")
            small += [(cell[..., 0] * big_h).expand(n, b, q),
                      (cell[..., 1] * big_w).expand(n, b, q)]
        weights = area_weights(rel_y, rel_x) if n > 1 else None  # (n, B, Q)
        return Neighbours(rows, torch.stack(small, dim=-1).view(n * b * q, -1), weights)

    def query_rgb(self, proj: LatentProjection, coord: Tensor, cell: Tensor | None,
                  check_window: bool = True) -> Tensor:
        """Fast decoder: (B, Q, 2) global coordinates and cells -> (B, Q, 3) normalised RGB.

        Differentiable (training uses it) and autocast-aware; rendering uses the equivalent
        `Decoder`. check_window: see `neighbours`.
        """
        b, q, _ = coord.shape
        nb = self.neighbours(proj, coord, cell, check_window)
        # First layer for every neighbour at once: precomputed latent part + offset/cell part.
        first = self.imnet.layers[0]
        values = proj.values.reshape(-1, proj.values.shape[-1])  # (B*h*w, hidden0)
        hidden = values.index_select(0, nb.rows)  # (n*B*Q, hidden0)
        small_weight = first.weight[:, self.latent_dim:].T.to(hidden.dtype)  # (2 or 4, hidden0)
        hidden = hidden.addmm_(nb.small.to(hidden.dtype), small_weight)
        hidden = torch.relu_(hidden)
        out = self.imnet.layers[2:](hidden).view(-1, b, q, 3)  # (n, B, Q, 3)
        return _blend(out, nb.weights)

    # ---------------------------------------------------------------- reference decoder

    def query_rgb_reference(self, feat: Tensor, coord: Tensor, cell: Tensor | None) -> Tensor:
        """The paper's decoder written out directly; (B, Q, 2) -> (B, Q, 3). Slow, exact."""
        b, c, h, w = feat.shape
        if self.spec.feat_unfold:
            feat = F.unfold(feat, 3, padding=1).view(b, c * 9, h, w)
        latent_coord = make_coords((h, w), flatten=False).to(feat)
        latent_coord = latent_coord.permute(2, 0, 1).unsqueeze(0).expand(b, 2, h, w)

        eps = EPS_SHIFT if self.spec.local_ensemble else 0.0
        preds, rel_coords = [], []
        for dy, dx in ensemble_shifts(self.spec.local_ensemble):
            shifted = coord.clone()
            shifted[..., 0] += dy / h + eps
            shifted[..., 1] += dx / w + eps
            shifted.clamp_(-1 + 1e-6, 1 - 1e-6)
            grid = shifted.flip(-1).unsqueeze(1)  # grid_sample wants (x, y): (B, 1, Q, 2)
            q_feat = F.grid_sample(feat, grid, mode="nearest", align_corners=False)
            q_coord = F.grid_sample(latent_coord, grid, mode="nearest", align_corners=False)
            q_feat = q_feat[:, :, 0, :].permute(0, 2, 1)  # (B, Q, C*9)
            q_coord = q_coord[:, :, 0, :].permute(0, 2, 1)  # (B, Q, 2)
            rel = (coord - q_coord) * coord.new_tensor([h, w])
            inputs = [q_feat, rel]
            if self.spec.cell_decode:
                inputs.append(cell * cell.new_tensor([h, w]))
            x = torch.cat(inputs, dim=-1)
            preds.append(self.imnet(x.view(b * coord.shape[1], -1)).view(b, coord.shape[1], -1))
            rel_coords.append(rel)
        if len(preds) == 1:
            return preds[0]
        weights = ensemble_weights(rel_coords)
        return sum(p * wt.unsqueeze(-1) for p, wt in zip(preds, weights, strict=True))


def _blend(out: Tensor, weights: Tensor | None) -> Tensor:
    """(n, B, Q, 3) neighbour predictions -> (B, Q, 3): their ensemble-weighted sum, or the
    one prediction without the ensemble."""
    if weights is None:
        return out[0]
    return (out * weights.unsqueeze(-1)).sum(0)


def _centre(index: Tensor, size: int) -> Tensor:
    """Coordinate of latent `index` along an axis of `size` latents (like make_coords)."""
    r = 1.0 / size
    return -1 + r + (2 * r) * index.float()


class Decoder:
    """`LIIF.query_rgb` for rendering: no autograd, and no autocast around every chunk.

    The MLP's weights are cast to the compute dtype once, here (autocast casts them again
    for every chunk). Each hidden layer is one GEMM whose bias and ReLU are applied as it
    writes its output (oneDNN's fused linear on the CPU; elsewhere addmm, then an in-place
    ReLU), instead of a GEMM and two more passes over a (4*Q, 256) tensor. The first layer
    is the gathered latent part plus the offset/cell part, added in place. Same arithmetic
    and dtypes as query_rgb under autocast (bf16) or without it (float32), so the same
    pixels up to float rounding.
    """

    def __init__(self, model: LIIF, dtype: torch.dtype = torch.float32):
        linears = [m for m in model.imnet.layers if isinstance(m, nn.Linear)]
        device = linears[0].weight.device

        def cast(t: Tensor) -> Tensor:
            return t.detach().to(dtype).contiguous()

        self.model, self.dtype = model, dtype
        self.small_weight = cast(linears[0].weight[:, model.latent_dim:].T)  # (2 or 4, hidden0)
        self.layers = [(cast(m.weight), cast(m.bias)) for m in linears[1:]]  # (out, in), (out,)
        self.fused = device.type == "cpu" and _onednn_linear_relu_works(dtype)

    @torch.no_grad()
    def __call__(self, proj: LatentProjection, coord: Tensor, cell: Tensor | None,
                 check_window: bool = False) -> Tensor:
        """(B, Q, 2) global coordinates and cells -> (B, Q, 3) float32 normalised RGB.

        No window check by default: the engine plans windows that cover their queries."""
        b, q, _ = coord.shape
        nb = self.model.neighbours(proj, coord, cell, check_window)
        values = proj.values.reshape(-1, proj.values.shape[-1]).to(self.dtype)  # (B*h*w, hidden0)
        hidden = values.index_select(0, nb.rows)  # (n*B*Q, hidden0)
        hidden.addmm_(nb.small.to(self.dtype), self.small_weight).relu_()
        *deep, (last_weight, last_bias) = self.layers
        for weight, bias in deep:  # (n*B*Q, hidden) -> (n*B*Q, hidden)
            if self.fused:
                hidden = torch.ops.mkldnn._linear_pointwise(hidden, weight, bias, "relu", [], "")
            else:
                hidden = torch.addmm(bias, hidden, weight.T).relu_()
        out = torch.addmm(last_bias, hidden, last_weight.T).float().view(-1, b, q, 3)
        return _blend(out, nb.weights)


@functools.cache
def _onednn_linear_relu_works(dtype: torch.dtype) -> bool:
    """Whether oneDNN's fused linear + bias + ReLU (the op torch.compile uses on the CPU)
    runs here in `dtype`: a private op of torch, so try it once rather than trust it."""
    if dtype == torch.bfloat16 and not cpu_has_fast_bf16():
        return False  # it would emulate bf16; addmm picks the best kernel there
    try:
        x, w = torch.ones(2, 3, dtype=dtype), torch.ones(4, 3, dtype=dtype)
        y = torch.ops.mkldnn._linear_pointwise(x, w, -torch.ones(4, dtype=dtype), "relu", [], "")
        return y.shape == (2, 4) and bool((y == 2).all())
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


def _neighbour_axis(coord: Tensor, steps: Tensor, size: int,
                    eps: float) -> tuple[Tensor, Tensor]:
    """Along one axis of `size` latents, for (B, Q) coordinates and (n,) float64 neighbour
    steps: each neighbour's latent index and the query's offset from it in latent units,
    both (n, B, Q). Rounds like the reference: shift = step / size + eps in float64, then
    one rounding to the coordinates' dtype."""
    shift = (steps / size + eps).to(coord.dtype).view(-1, 1, 1)  # (n, 1, 1)
    index = nearest_latent_index((coord + shift).clamp_(-1 + 1e-6, 1 - 1e-6), size)
    return index, (coord - _centre(index, size)) * size


def build_model(spec: ModelSpec | dict[str, Any]) -> LIIF:
    """A randomly initialised LIIF from a spec (or its dict form)."""
    if isinstance(spec, dict):
        spec = ModelSpec(**spec)
    return LIIF(spec)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
