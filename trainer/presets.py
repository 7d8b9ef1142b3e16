"""Named model sizes and run shapes.

MODEL_PRESETS are model dims only (usable as `"model": "tiny"` in a spec). RUN_PRESETS are the
rest of a spec for that scale (data, batch, steps), so a study can say `preset = "seed-moe"`.
Plain dicts here so that spec.py can import them without a cycle.
"""

from __future__ import annotations

MODEL_PRESETS: dict[str, dict] = {
    # CPU default: about 10 s per 100 optimizer steps on 2 cores, still separates good from bad.
    "tiny": dict(kind="moe", d_model=64, n_heads=4, n_layers=2, d_ff=256, n_experts=4, top_k=2,
                 router_noise=0.1, dropout=0.0),
    # Seed 002: MinimalLLM, 128d, 2 layers, 4 heads, ff 512.
    "seed-ablation": dict(kind="dense", d_model=128, n_heads=4, n_layers=2, d_ff=512, dropout=0.1),
    # Seeds 000/001: MoEMinimalLLM, 384d, 8 heads, 6 layers, ff 1536, 8 experts top-2 (~79M params
    # with the 49,152-token SmolLM tokenizer).
    "seed-moe": dict(kind="moe", d_model=384, n_heads=8, n_layers=6, d_ff=1536, n_experts=8,
                     top_k=2, router_noise=0.1, dropout=0.1),
    # Seed 003: Qwen2.5-0.5B-like dims (hidden 1024, 12 layers, 16 heads, intermediate 4864).
    "qwen-block": dict(kind="dense", d_model=1024, n_heads=16, n_layers=12, d_ff=4864, dropout=0.0),
}

_COSMOPEDIA = "hf:HuggingFaceTB/smollm-corpus:cosmopedia-v2"
_SMOLLM_TOKENIZER = "HuggingFaceTB/SmolLM-135M"

RUN_PRESETS: dict[str, dict] = {
    "tiny": dict(model="tiny", steps=100, batch_size=16, grad_accum=1, seq_len=64, eval_every=25,
                 eval_batches=8, data=dict(source="sotu", tokenizer="bpe", bpe_vocab_size=1024)),
    "seed-ablation": dict(model="seed-ablation", steps=1500, batch_size=32, grad_accum=1,
                          seq_len=256, eval_every=25, eval_batches=20,
                          data=dict(source=_COSMOPEDIA, tokenizer=_SMOLLM_TOKENIZER, max_docs=1000,
                                    val_fraction=0.1)),
    # Steps are optimizer steps: the seeds' "500 steps" with accumulation 4 were 125 updates.
    "seed-moe": dict(model="seed-moe", steps=500, batch_size=24, grad_accum=4, seq_len=512,
                     eval_every=10, eval_batches=20,
                     data=dict(source=_COSMOPEDIA, tokenizer=_SMOLLM_TOKENIZER, max_docs=2000,
                               val_fraction=0.1)),
    "qwen-block": dict(model="qwen-block", steps=10000, batch_size=8, grad_accum=1, seq_len=512,
                       eval_every=500, eval_batches=20, lr=1e-3, weight_decay=0.1,
                       data=dict(source="hf:Elriggs/openwebtext-100k",
                                 tokenizer="Qwen/Qwen2.5-0.5B", val_fraction=0.01)),
}
