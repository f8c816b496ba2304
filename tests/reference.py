"""Real Hugging Face modules for a costplan ModelSpec (test helper; imports torch lazily)."""

from __future__ import annotations

from costplan.model import ModelSpec


def hf_config(model: ModelSpec, attention: str = "sdpa"):
    import transformers as T

    common = dict(vocab_size=model.vocab_size)
    if model.family == "gpt2":
        cfg = T.GPT2Config(n_embd=model.hidden_size, n_layer=model.num_layers, n_head=model.num_heads,
                           n_positions=model.max_positions, n_inner=model.ffn_size,
                           resid_pdrop=model.dropout, embd_pdrop=model.dropout,
                           attn_pdrop=model.attention_dropout, **common)
    elif model.family == "bert":
        cfg = T.BertConfig(hidden_size=model.hidden_size, num_hidden_layers=model.num_layers,
                           num_attention_heads=model.num_heads, intermediate_size=model.ffn_size,
                           max_position_embeddings=model.max_positions, type_vocab_size=model.token_types,
                           hidden_dropout_prob=model.dropout,
                           attention_probs_dropout_prob=model.attention_dropout, **common)
    elif model.family == "gpt_neox":
        cfg = T.GPTNeoXConfig(hidden_size=model.hidden_size, num_hidden_layers=model.num_layers,
                              num_attention_heads=model.num_heads, intermediate_size=model.ffn_size,
                              max_position_embeddings=model.max_positions,
                              tie_word_embeddings=model.tied_embeddings, **common)
    else:
        cls = {"llama": T.LlamaConfig, "mistral": T.MistralConfig, "mixtral": T.MixtralConfig,
               "qwen2": T.Qwen2Config, "gemma": T.GemmaConfig}[model.family]
        extra = {}
        if model.family == "mixtral":
            extra = dict(num_local_experts=model.num_experts, num_experts_per_tok=model.experts_per_token)
        cfg = cls(hidden_size=model.hidden_size, num_hidden_layers=model.num_layers,
                  num_attention_heads=model.num_heads, num_key_value_heads=model.num_kv_heads,
                  head_dim=model.head_dim, intermediate_size=model.ffn_size,
                  max_position_embeddings=model.max_positions,
                  tie_word_embeddings=model.tied_embeddings, **extra, **common)
    cfg._attn_implementation = attention
    return cfg


def build_model(model: ModelSpec, attention: str = "sdpa", device: str = "cpu"):
    import torch
    import transformers as T

    cfg = hf_config(model, attention)
    with torch.device(device):
        if model.family == "bert":
            return T.BertForMaskedLM(cfg)
        return T.AutoModelForCausalLM.from_config(cfg)


def build_meta_model(model: ModelSpec):
    return build_model(model, device="meta")


def apply_method(module, method):
    """Wrap a model with the real peft adapter for a costplan method."""
    import peft

    from costplan.methods import Lora, PrefixTuning, PromptTuning

    if isinstance(method, Lora):
        names = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj", "gate": "gate_proj",
                 "up": "up_proj", "down": "down_proj", "router": "gate"}
        config = peft.LoraConfig(r=method.rank, lora_alpha=2 * method.rank, lora_dropout=method.dropout,
                                 target_modules=[names[t] for t in method.targets if t in names])
        return peft.get_peft_model(module, config)
    if isinstance(method, PromptTuning):
        return peft.get_peft_model(module, peft.PromptTuningConfig(
            task_type="CAUSAL_LM", num_virtual_tokens=method.num_virtual_tokens))
    if isinstance(method, PrefixTuning):
        return peft.get_peft_model(module, peft.PrefixTuningConfig(
            task_type="CAUSAL_LM", num_virtual_tokens=method.num_virtual_tokens))
    return module


def traced_training_flops(model: ModelSpec, method, seq_len: int, grad_ckpt: bool) -> int:
    """FLOPs of one forward + backward of the real module (eager attention), counted by PyTorch."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    module = build_model(model, attention="eager")
    if grad_ckpt:
        module.gradient_checkpointing_enable()
        module.config.use_cache = False
    module = apply_method(module, method)
    module.train()
    ids = torch.randint(0, model.vocab_size, (1, seq_len))
    with FlopCounterMode(display=False) as counter:
        module(input_ids=ids, labels=ids).loss.backward()
    return counter.get_total_flops()


def traced_saved_bytes(model: ModelSpec, method, work) -> int:
    """Bytes of the distinct non-parameter storages autograd saves during one forward."""
    import torch

    torch.manual_seed(0)
    dtype = torch.float32 if work.precision == "fp32" else torch.bfloat16
    module = build_model(model, attention="sdpa" if work.attention == "flash" else "eager").to(dtype)
    module = apply_method(module, method)
    module.train()
    params = {p.untyped_storage().data_ptr() for p in module.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    ids = torch.randint(0, model.vocab_size, (1, work.seq_len))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(input_ids=ids)
    return sum(seen.values())
