"""A tiny randomly initialised Llama for the training tests and benchmarks (not production code)."""

from __future__ import annotations


def build_tiny_model(out_dir: str, tokenizer_dir: str | None = None, hidden: int = 64, layers: int = 2,
                     seed: int = 0, max_positions: int = 4096) -> str:
    """A randomly initialised Llama with the embedded model's tokenizer and chat template.

    Small enough to train in seconds on CPU; used by tests/test_train.py, benchmarks/train_throughput.py
    and benchmarks/train_gpu.py.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from core.models import embedded_model_dir

    tdir = tokenizer_dir or str(embedded_model_dir())
    tok = AutoTokenizer.from_pretrained(tdir)
    torch.manual_seed(seed)
    heads = max(1, hidden // 64)  # head_dim 64: a size every attention backend (vLLM CPU too) supports
    conf = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2,
                       num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                       max_position_embeddings=max(4096, max_positions), tie_word_embeddings=True,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                       pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(conf)
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    return out_dir
