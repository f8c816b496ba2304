"""FSDP2 peak memory of a small Llama's full fine-tuning step, traced on the CPU with torch's FSDPMemTracker
over a fake process group: the figures behind tests/test_memory.py's root-unit test (125.0 MiB of the root's
embeddings and head unsharded at the loss's backward beside a 24.5 MiB layer all-gather; peak 631.85 MiB).

    python benchmarks/fsdp_root_trace.py [WORLD_SIZE] [default|true|false: the root's reshard_after_forward]
"""
import sys

import torch
import torch.distributed as dist
from torch.distributed._tools.fsdp2_mem_tracker import FSDPMemTracker
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.testing._internal.distributed.fake_pg import FakeStore
from transformers import LlamaConfig, LlamaForCausalLM

world = int(sys.argv[1]) if len(sys.argv) > 1 else 4
root_reshard = sys.argv[2] if len(sys.argv) > 2 else "default"
dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=world)
mesh = init_device_mesh("cpu", (world,))
cfg = LlamaConfig(hidden_size=1024, intermediate_size=2816, num_hidden_layers=4, num_attention_heads=8,
                  num_key_value_heads=8, vocab_size=32000, torch_dtype=torch.bfloat16, attn_implementation="sdpa")
torch.manual_seed(0)
model = LlamaForCausalLM(cfg).to(torch.bfloat16)
for layer in model.model.layers:
    fully_shard(layer, mesh=mesh)
kw = {} if root_reshard == "default" else {"reshard_after_forward": root_reshard == "true"}
fully_shard(model, mesh=mesh, **kw)
opt = torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True)
B, S = 1, 512
inp = torch.randint(0, 32000, (B, S))
fmt = FSDPMemTracker(model, opt)
fmt.track_inputs((inp,))
with fmt:
    for it in range(2):
        out = model(input_ids=inp, labels=inp)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        if it == 0:
            fmt.reset_mod_stats()
fmt.display_snapshot("peak", units="MiB", tabulate=False)
fmt.display_modulewise_snapshots(depth=4, units="MiB", tabulate=False)
n = sum(p.numel() for p in model.parameters())
print("params", n, "world", world)
