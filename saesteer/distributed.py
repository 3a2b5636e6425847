"""torchrun, set up once: every multi-process job (cache, train-sae) joins the group here.

With WORLD_SIZE > 1 (torchrun), the process joins the default group (nccl for CUDA devices, gloo
on CPU) and a CUDA process uses the GPU cuda:LOCAL_RANK; otherwise nothing is initialised.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Dist:
    """This process's place in the job: rank of world, its device, whether we created the group."""

    rank: int = 0
    world: int = 1
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))
    initialised: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str) -> Dist:
    """Join the torchrun process group when WORLD_SIZE > 1 (module docstring)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Dist(device=torch.device(device))
    cuda = device.startswith("cuda")
    local = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(local)
    created = not dist.is_initialized()
    if created:
        dist.init_process_group("nccl" if cuda else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), local, created)
