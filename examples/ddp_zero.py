# examples/ddp_zero.py: etakit.torch.AdamW under DistributedDataParallel and ZeroRedundancyOptimizer
import os
import tempfile

import torch
import torch.distributed as dist
from torch.distributed.optim import ZeroRedundancyOptimizer
from torch.nn.parallel import DistributedDataParallel as DDP

import etakit.torch

if "RANK" in os.environ:            # started by torchrun
    dist.init_process_group("gloo")
else:                               # alone: a group of one
    dist.init_process_group("gloo", init_method="file://" + tempfile.mktemp(), rank=0, world_size=1)
torch.manual_seed(0)                # the same model on every rank
model = DDP(torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1)))
opt = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=etakit.torch.AdamW, lr=1e-3)
torch.manual_seed(1 + dist.get_rank())   # each rank its own data
for step in range(20):
    opt.zero_grad()
    model(torch.randn(64, 16)).pow(2).mean().backward()   # DDP averages the gradients
    opt.step()                      # each rank steps its partition, then broadcasts it
opt.consolidate_state_dict(to=0)    # every rank calls it
if dist.get_rank() == 0:
    torch.save(opt.state_dict(), "zero.pt")    # loads into any ZeroRedundancyOptimizer of the model
dist.destroy_process_group()
