"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest


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
