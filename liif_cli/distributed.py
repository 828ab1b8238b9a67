"""Running under torchrun: PyTorch's own launcher and process groups, nothing home-made.

`torchrun --nproc-per-node N -m liif_cli COMMAND ...` starts N copies of the command with
RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT set (across machines too, with
--nnodes and --rdzv-*). `init_from_env` joins them into one process group (env://); the
helpers below are then collectives over it. In a plain process (no torchrun, or a world of
one) nothing is initialised and every helper is the identity or a no-op, so the
single-process code paths do not change.

Backends: gloo where the ranks compute on the CPU. Where they compute on CUDA, one group
with NCCL for CUDA tensors (DistributedDataParallel's gradients) and gloo for CPU tensors
(the few small control values exchanged here: stop flags, counts, file lists), i.e. the
backend string "cpu:gloo,cuda:nccl". Each rank uses GPU LOCAL_RANK of its machine.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from .errors import LiifError, one_line

T = TypeVar("T")
_owned = False  # init_from_env created the group, so cleanup() destroys it


def launched_world_size() -> int:
    """WORLD_SIZE as torchrun set it (1 when not launched by torchrun)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def uses_cuda(device: str = "auto") -> bool:
    """Whether a rank asked to run on `device` (auto, cpu, cuda, cuda:N, mps) uses CUDA."""
    return torch.cuda.is_available() and (device == "auto" or device.startswith("cuda"))


def init_from_env(device: str = "auto") -> bool:
    """Join the process group torchrun describes in the environment; False if there is none.

    A no-op (False) outside torchrun or for a world of one, and when a group already
    exists (returns True then: the caller set it up). `device` is the command's --device:
    with CUDA it selects GPU LOCAL_RANK and adds NCCL for CUDA tensors.
    """
    global _owned
    if not dist.is_available() or launched_world_size() < 2 or "RANK" not in os.environ:
        return False
    if dist.is_initialized():
        return True
    if uses_cuda(device):
        gpus = torch.cuda.device_count()
        if local_rank() >= gpus:
            raise LiifError(f"rank {os.environ['RANK']} needs GPU {local_rank()}, but this "
                            f"machine has {gpus}: start at most {gpus} ranks per machine "
                            "(--nproc-per-node), or use --device cpu")
        torch.cuda.set_device(local_rank())
        backend = "cpu:gloo,cuda:nccl"
    else:
        backend = "gloo"
    try:
        dist.init_process_group(backend=backend, init_method="env://")
    except (ValueError, RuntimeError, TimeoutError) as exc:  # e.g. no MASTER_ADDR, a port in use
        raise LiifError(f"rank {os.environ['RANK']} cannot join the process group the "
                        f"environment describes (start ranks with torchrun): "
                        f"{one_line(exc)}") from None
    _owned = True
    return True


def is_distributed() -> bool:
    """Whether this process is one rank of a process group of two or more."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    """This rank's index on its own machine (selects its GPU); 0 outside torchrun."""
    return int(os.environ.get("LOCAL_RANK", "0")) if launched_world_size() > 1 else 0


def is_main() -> bool:
    """Rank 0 (or a plain process): the one that writes files, logs and progress."""
    return rank() == 0


def backend() -> str | None:
    return str(dist.get_backend()) if is_distributed() else None


def device_name(device: str) -> str:
    """The device this rank should use for the command's --device: in a group on CUDA,
    'auto' and 'cuda' mean this rank's own GPU, cuda:LOCAL_RANK; anything else is kept."""
    if is_distributed() and device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{local_rank()}"
    return device


def shard(items: Sequence[T]) -> list[T]:
    """This rank's share of `items`: items[rank::world] (every item on exactly one rank)."""
    return list(items[rank()::world_size()])


def all_sum(values: Sequence[float]) -> list[float]:
    """Element-wise sum over the ranks (float64: exact for counts below 2**53)."""
    if not is_distributed():
        return [float(v) for v in values]
    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def broadcast(obj: T) -> T:
    """Rank 0's `obj` on every rank (pickled; for small things such as a file list)."""
    if not is_distributed():
        return obj
    box: list[Any] = [obj if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def first_error(message: str | None) -> str | None:
    """The error message of the lowest rank that has one (None if no rank has), on every rank."""
    if not is_distributed():
        return message
    messages: list[str | None] = [None] * world_size()
    dist.all_gather_object(messages, message)
    return next((m for m in messages if m is not None), None)


@contextmanager
def agreed_errors() -> Iterator[None]:
    """Run a setup step on every rank; if it raises LiifError on any rank, raise it on all.

    Without this, one rank failing early (e.g. a bad option) would leave the others waiting
    in their next collective. Outside a group it simply lets the LiifError through.
    """
    message = None
    try:
        yield
    except LiifError as exc:
        if not is_distributed():
            raise
        message = str(exc)
    agreed = first_error(message)
    if agreed is not None:
        raise LiifError(agreed)


def barrier() -> None:
    """Wait for every rank (gloo's monitored barrier, on the CPU, whatever the tensors'
    backend).

    Not dist.barrier, nor any collective on tensors made here: gloo's worker thread lets
    go of a finished collective's tensors (a barrier's: those of all the earlier
    collectives, the gradient all-reduces among them) just after the caller has moved on,
    and that needs the GIL. When the process exits right after the barrier, the thread
    takes the GIL from a finalising interpreter and the process aborts ("terminate called
    without an active exception": 5 of 42 two-rank `liif train` runs on a 2-core CPU, and
    0 of 60 with this barrier). The monitored barrier runs in the calling thread, on
    tensors of its own, with the GIL released, so the worker is done with the earlier
    collectives by the time it returns.
    """
    if is_distributed():
        dist.group.WORLD.monitored_barrier(dist.default_pg_timeout)  # the group's own


def cleanup() -> None:
    """Leave the process group if init_from_env created it."""
    global _owned
    if _owned and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _owned = False
