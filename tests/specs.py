"""Model specs shared by the tests."""

from costplan import engine
from costplan.memory import MemoryBreakdown, TrainingMemory
from costplan.model import ModelSpec
from costplan.profile import default_profile

# Small enough to run real training steps on the CPU in well under a second, with GQA (8 query
# heads, 2 key/value heads) and an MLP width that is not a multiple of the hidden size.
TRACE = ModelSpec(name="trace", family="llama", hidden_size=128, num_layers=3, num_heads=8, num_kv_heads=2,
                  head_dim=16, ffn_size=344, vocab_size=512, max_positions=256)


def sharded(mem: TrainingMemory, *, dp: int = 1, zero: int = 0, grad_accum: int = 1, micro_batch: int = 1,
            tp: int = 1, pp: int = 1) -> MemoryBreakdown:
    """The engine's per-GPU memory for one sequence's terms over a layout."""
    profile = default_profile()
    phases = engine.training_phases(mem, dp=dp, zero=zero, micro_batch=micro_batch, grad_accum=grad_accum, tp=tp,
                                    pp=pp)
    return engine.breakdown(phases, profile.allocator_slack(), profile.cuda_context_bytes())
