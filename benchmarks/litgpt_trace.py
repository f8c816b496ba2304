"""Saved activations of LitGPT's own layer code against costplan's ``--framework litgpt`` model.

    pip install litgpt==0.4.0 lightning   # not a costplan dependency
    python benchmarks/litgpt_trace.py

Builds LitGPT's GPT (``litgpt.model``, and ``litgpt.lora`` for LoRA on q and v with its default
dropout 0.05) in bf16 on the CPU, with one and with two layers at each model's real widths, and counts
the bytes autograd saves in the forward (``saved_tensors_hooks``, each storage once, parameters and
buffers left out). The difference is one later layer, per token, which costplan's
``activations.saved_tensors`` gives for the same layer. Two things differ from a CUDA step by
construction: the CPU's dropout keeps a 2-byte mask where CUDA keeps a 1-byte bool (``hidden`` bytes
per token), and LoRA's ``zero_pad`` keeps an int64 index per layer, which costplan leaves out; the
table shows the CUDA-equivalent figure beside the raw one. tests/test_memory.py asserts the figures
this script printed (litgpt 0.4.0, torch 2.13 CPU).
"""

from __future__ import annotations

CASES = (("Llama-2-7b-hf", "llama-2-7b", "full", 256), ("Meta-Llama-3-8B", "llama-3-8b", "full", 256),
         ("Llama-2-7b-hf", "llama-2-7b", "lora", 1304), ("Meta-Llama-3-8B", "llama-3-8b", "lora", 512))


def traced_per_token(litgpt_name: str, method: str, seq: int) -> float:
    """Bytes per token one later layer of LitGPT's model saves for backward."""
    import torch

    def saved(n_layer: int) -> int:
        if method == "lora":
            from litgpt.lora import GPT, Config, mark_only_lora_as_trainable

            cfg = Config.from_name(litgpt_name, n_layer=n_layer, lora_r=8, lora_alpha=16, lora_dropout=0.05,
                                   lora_query=True, lora_value=True)
        else:
            from litgpt.model import GPT, Config

            cfg = Config.from_name(litgpt_name, n_layer=n_layer)
        torch.set_default_dtype(torch.bfloat16)
        try:
            model = GPT(cfg)
        finally:
            torch.set_default_dtype(torch.float32)
        model.max_seq_length = seq
        if method == "lora":
            mark_only_lora_as_trainable(model)
        skip = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}
        kept: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            storage = t.untyped_storage()
            if storage.data_ptr() not in skip:
                kept[storage.data_ptr()] = storage.nbytes()
            return t

        tokens = torch.randint(0, cfg.vocab_size, (1, seq))
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            x = model.transformer.wte(tokens)
            for block in model.transformer.h:
                x = block(x, model.cos[:seq], model.sin[:seq])
        return sum(kept.values())

    return (saved(2) - saved(1)) / seq


def modelled_per_token(preset_key: str, method: str, seq: int) -> float:
    from costplan.activations import saved_tensors
    from costplan.api import stack_workload
    from costplan.frameworks import framework
    from costplan.methods import FullFineTune, Lora, parse_targets
    from costplan.model import preset

    how = Lora(rank=8, targets=parse_targets("q,v"), dropout=0.05) if method == "lora" else FullFineTune()
    work, _ = stack_workload(framework("litgpt"), how, precision="bf16", gpus=1, seq_len=seq)
    return saved_tensors(preset(preset_key), how, work).layers_saved[-1].bytes / seq


def main() -> None:
    from rich.console import Console
    from rich.table import Table

    from costplan.model import preset

    table = Table(title="One later layer's saved bytes per token: LitGPT's code (CPU trace) vs costplan")
    for column in ("model", "method", "seq", "traced (CPU)", "traced (CUDA equivalent)", "costplan", "error"):
        table.add_column(column, justify="right")
    for litgpt_name, key, method, seq in CASES:
        raw = traced_per_token(litgpt_name, method, seq)
        cuda = raw
        if method == "lora":
            model = preset(key)
            cuda -= model.hidden_size  # 2-byte CPU dropout mask -> 1-byte CUDA bool
            cuda -= 8 * (model.q_size + model.kv_size) / seq  # zero_pad's int64 index of the q and v columns
        ours = modelled_per_token(key, method, seq)
        table.add_row(key, method, str(seq), f"{raw:,.1f}", f"{cuda:,.1f}", f"{ours:,.1f}", f"{ours / cuda - 1:+.3%}")
    Console().print(table)


if __name__ == "__main__":
    main()
