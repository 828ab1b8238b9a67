"""Shared pytest fixtures."""

from __future__ import annotations

import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(autouse=True, scope="session")
def subprocess_temp_files(tmp_path_factory: pytest.TempPathFactory):
    """Subprocesses make their temporary files under pytest's own temporary folder, which
    pytest prunes: torchrun's launcher (tests/test_distributed.py) leaves a
    /tmp/torchelastic_* log folder behind for every run otherwise."""
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("TMPDIR", str(tmp_path_factory.mktemp("subprocess-tmp")))
    yield
    monkeypatch.undo()


@pytest.fixture
def cli_in_fresh_process() -> Callable[[list[str]], tuple[int, bool]]:
    """Run `liif ARGS` in a new Python process: (exit code, whether torch got imported)."""

    def run(args: list[str]) -> tuple[int, bool]:
        code = ("import sys\nfrom typer.testing import CliRunner\nfrom liif_cli.cli import app\n"
                f"result = CliRunner().invoke(app, {[str(a) for a in args]!r})\n"
                "print(result.exit_code, 'torch' in sys.modules)")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=120, check=True)
        exit_code, imported = done.stdout.split()
        return int(exit_code), imported == "True"

    return run


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny randomly initialised LIIF checkpoint (fast on CPU; for plumbing tests only)."""
    import torch

    from liif_cli import checkpoint
    from liif_cli.model import ModelSpec, build_model

    with torch.random.fork_rng(devices=[]):  # deterministic, without touching others' RNG
        torch.manual_seed(0)
        model = build_model(ModelSpec(encoder_args=dict(n_resblocks=1, n_feats=8), hidden=[16]))
    path = tmp_path_factory.mktemp("weights") / "tiny.pth"
    checkpoint.save(checkpoint.to_dict(model, {"note": "tiny"}), path)
    return path


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one thread is fastest, and avoids spinning on a busy machine.
    Use it for a whole test module with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A weights/ folder holding a different tiny checkpoint under each bundled name (LIIF
    for the default and the real-photo model, the fast family for the fast ones), in place
    of the shipped ones."""
    import torch

    from liif_cli import bundled, checkpoint
    from liif_cli.model import ModelSpec, build_model

    TINY_FAST_SPEC = ModelSpec(encoder_args=dict(n_resblocks=1, n_feats=8), decoder="lmf",
                               latent_hidden=[16], render_width=4, render_depth=2)
    folder = tmp_path / "bundle"
    folder.mkdir()
    for seed, model in enumerate(bundled.MODELS):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            tiny = build_model(TINY_FAST_SPEC if model.short.startswith("fast") else
                               ModelSpec(encoder_args=dict(n_resblocks=1, n_feats=8),
                                         hidden=[16]))
        checkpoint.save(checkpoint.to_dict(tiny, {"note": model.short}),
                        folder / f"{model.name}.pth")
    monkeypatch.setattr(bundled, "WEIGHTS_DIR", folder)
    return folder


@pytest.fixture(scope="session")
def cmyk_profile() -> bytes:
    """A minimal ICC v2 CMYK printer profile (CMYK to Lab through a 2-point lookup table)
    whose colours differ from Pillow's plain CMYK-to-RGB formula."""
    def fixed(v: float) -> bytes:
        return struct.pack(">i", round(v * 65536))

    text = b"test CMYK\x00"
    desc = (b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(8) + bytes(3)
            + bytes(67))
    white = fixed(0.9642) + fixed(1.0) + fixed(0.8249)  # D50
    clut = bytearray()
    for c in (0, 1):
        for m in (0, 1):
            for y in (0, 1):
                for k in (0, 1):
                    lightness = max(0.0, 1 - 0.2 * c - 0.3 * m - 0.1 * y - 0.8 * k)
                    clut += bytes([round(255 * lightness), min(255, 128 + 60 * m - 40 * c),
                                   min(255, 128 + 60 * y - 30 * c)])
    ramp = bytes(range(256))
    identity = b"".join(fixed(float(i == j)) for i in range(3) for j in range(3))
    lut = b"mft1" + bytes(4) + bytes([4, 3, 2, 0]) + identity + ramp * 4 + bytes(clut) + ramp * 3
    tags = [(b"desc", desc), (b"wtpt", b"XYZ " + bytes(4) + white), (b"A2B0", lut)]
    offset = 128 + 4 + 12 * len(tags)
    table, body = struct.pack(">I", len(tags)), b""
    for signature, data in tags:
        data += bytes(-len(data) % 4)
        table += signature + struct.pack(">II", offset + len(body), len(data))
        body += data
    header = (struct.pack(">I", offset + len(body)) + bytes(4) + struct.pack(">I", 0x02100000)
              + b"prtrCMYKLab " + bytes(12) + b"acsp" + bytes(28) + white)
    return header + bytes(128 - len(header)) + table + body
