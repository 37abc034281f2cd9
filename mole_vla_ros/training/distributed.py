"""Process groups for multi-process training: torchrun (GPUs or CPUs) or a local CPU spawn (`--nproc N`).

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT; `init_distributed` reads them and joins
the group (NCCL on CUDA, gloo on CPU). Without them the run is a single process and nothing is initialised.
`spawn_local(nprocs, fn, *args)` starts N CPU processes on this machine with the same environment torchrun would give.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """A process group was joined (several processes, or one FSDP process: see init_distributed)."""
        return self.backend is not None


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """'auto' -> cuda:<local_rank> when CUDA is available, else cpu. 'cuda' picks the local rank's GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' was requested but torch.cuda.is_available() is False; use --device cpu.")
        return torch.device("cuda", local_rank)
    return torch.device(name)


def init_distributed(device: torch.device, single_process_group: bool = False) -> DistInfo:
    """Join the process group described by torchrun's environment variables (no-op for a single process).

    single_process_group: a lone process still joins a group of one (on 127.0.0.1 when torchrun did not set one up).
    FSDP needs a group: with it `--strategy fsdp` on one GPU runs the same wrapping, bf16 mixed precision and full
    state-dict gathering as on many (it saves no memory there: one shard holds everything)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and not single_process_group:
        return DistInfo()
    if world <= 1:
        os.environ.setdefault("RANK", "0")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))
        world = 1
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    log.info("process %d of %d joined the %s group", rank, world, backend)
    return DistInfo(rank, world, local_rank, backend)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_reduce_mean(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of `values` over all processes (returned on the same device)."""
    if not info.enabled:
        return values
    # NCCL reduces CUDA tensors only: CPU values (loss sums, validation counts) go through this process's GPU
    device = torch.device("cuda", torch.cuda.current_device()) if info.backend == "nccl" else values.device
    out = values.to(device, copy=True)
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return (out / info.world_size).to(values.device)


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn_entry(rank: int, nprocs: int, port: int, fn, args) -> None:
    os.environ.update(
        {
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(nprocs),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
    )
    fn(*args)


def spawn_local(nprocs: int, fn, *args) -> None:
    """Run fn(*args) in `nprocs` CPU processes that form one gloo group (fn must be importable: a module function)."""
    import torch.multiprocessing as mp

    if nprocs < 1:
        raise ValueError(f"nprocs must be >= 1, got {nprocs}.")
    mp.spawn(_spawn_entry, args=(nprocs, free_port(), fn, args), nprocs=nprocs, join=True)
