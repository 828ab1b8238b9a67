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
  map, which is what lets the rendering engine tile exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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
    """Local-ensemble weights from each neighbour's offset (in latent units), summing to 1.

    Each neighbour is weighted by the area of the rectangle between the query and the
    diagonally opposite neighbour, so the nearest latent gets the largest weight.
    """
    areas = [(rel[..., 0] * rel[..., 1]).abs() + AREA_EPS for rel in rel_coords]
    total = torch.stack(areas).sum(0)
    return [area / total for area in reversed(areas)]  # reversed: swap diagonal partners


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

    def query_rgb(self, proj: LatentProjection, coord: Tensor, cell: Tensor | None,
                  check_window: bool = True) -> Tensor:
        """Fast decoder: (B, Q, 2) global coordinates and cells -> (B, Q, 3) normalised RGB.

        check_window: verify that every latent the queries need lies inside the projected
        window (ValueError otherwise). The check reads indices back to the host, which stalls
        a GPU; callers that know the window covers the queries (the engine's tile plan, a
        whole-image projection) pass False.
        """
        b, q, _ = coord.shape
        big_h, big_w = proj.grid_size
        win_h, win_w = proj.window
        # Offsets and cells in latent units. Python scalars, not a tensor made from a list:
        # that would be a blocking host-to-device copy on every call.
        cell_scaled = None
        if self.spec.cell_decode:
            if cell is None:
                raise ValueError("this model decodes cells: pass the queries' cells")
            cell_scaled = torch.stack((cell[..., 0] * big_h, cell[..., 1] * big_w), dim=-1)
        shifts = ensemble_shifts(self.spec.local_ensemble)
        eps = EPS_SHIFT if self.spec.local_ensemble else 0.0
        first_rows = torch.arange(b, device=coord.device).view(b, 1) * (win_h * win_w)

        rows, small_inputs, rel_coords = [], [], []
        for dy, dx in shifts:
            iy = _shifted_index(coord[..., 0], dy / big_h + eps, big_h)  # (B, Q)
            ix = _shifted_index(coord[..., 1], dx / big_w + eps, big_w)
            local_y, local_x = iy - proj.offset[0], ix - proj.offset[1]
            if check_window and local_y.numel() and not (
                    0 <= int(local_y.min()) and int(local_y.max()) < win_h
                    and 0 <= int(local_x.min()) and int(local_x.max()) < win_w):
                raise ValueError("query falls outside the projected feature window")
            rows.append((first_rows + local_y * win_w + local_x).reshape(-1))
            rel = torch.stack(((coord[..., 0] - _centre(iy, big_h)) * big_h,
                               (coord[..., 1] - _centre(ix, big_w)) * big_w), dim=-1)  # (B, Q, 2)
            rel_coords.append(rel)
            small = [rel, cell_scaled] if self.spec.cell_decode else [rel]
            small_inputs.append(torch.cat(small, dim=-1).reshape(b * q, -1))

        # First layer for every neighbour at once: precomputed latent part + offset/cell part.
        first = self.imnet.layers[0]
        values = proj.values.reshape(-1, proj.values.shape[-1])  # (B*h*w, hidden0)
        hidden = values.index_select(0, torch.cat(rows))  # (n*B*Q, hidden0)
        small_weight = first.weight[:, self.latent_dim:].T.to(hidden.dtype)  # (2 or 4, hidden0)
        hidden = hidden.addmm_(torch.cat(small_inputs).to(hidden.dtype), small_weight)
        hidden = torch.relu_(hidden)
        out = self.imnet.layers[2:](hidden)  # (n*B*Q, 3)
        preds = out.view(len(shifts), b, q, 3).unbind(0)
        if len(shifts) == 1:
            return preds[0]
        weights = ensemble_weights(rel_coords)
        return sum(p * w.unsqueeze(-1) for p, w in zip(preds, weights, strict=True))

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


def _shifted_index(coord: Tensor, shift: float, size: int) -> Tensor:
    """Nearest latent index after shifting and clamping, as the official sampler does."""
    return nearest_latent_index((coord + shift).clamp_(-1 + 1e-6, 1 - 1e-6), size)


def _centre(index: Tensor, size: int) -> Tensor:
    """Coordinate of latent `index` along an axis of `size` latents (like make_coords)."""
    r = 1.0 / size
    return -1 + r + (2 * r) * index.float()


def build_model(spec: ModelSpec | dict[str, Any]) -> LIIF:
    """A randomly initialised LIIF from a spec (or its dict form)."""
    if isinstance(spec, dict):
        spec = ModelSpec(**spec)
    return LIIF(spec)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
