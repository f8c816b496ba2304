"""Model specs shared by the tests."""

from costplan.model import ModelSpec

# Small enough to run real training steps on the CPU in well under a second, with GQA (8 query
# heads, 2 key/value heads) and an MLP width that is not a multiple of the hidden size.
TRACE = ModelSpec(name="trace", family="llama", hidden_size=128, num_layers=3, num_heads=8, num_kv_heads=2,
                  head_dim=16, ffn_size=344, vocab_size=512, max_positions=256)
