#!/usr/bin/env python3
"""A plain PyTorch model of the same shape as a harness preset, trained on synthetic tokens for the side-by-side benchmark
(scripts/gpu/vs-pytorch.sh): what a researcher would write without Megatron, fp32 parameters under bf16 autocast, fused
AdamW, PyTorch's scaled_dot_product_attention, one micro-batch per optimizer step, no dropout (a model name ending in
-dropout, e.g. gpt2-large-dropout, drops the embedding's output and each sublayer's output at 0.1 before the residual add,
Megatron's hidden dropout, which the harness fuses into its add + norm kernel); eager or torch.compile
(each transformer layer compiled on its own, PyTorch's "regional compilation", so a 22-layer model compiles one layer's
graph once instead of the whole model).
Models: llama (RMSNorm, SwiGLU, rotary, grouped-query attention, untied embeddings) and gpt (LayerNorm with bias,
GeLU MLP with bias, learned positions, tied embeddings), shapes as the harness presets name them.
Prints one CSV row: system,model,micro_batch,seq,step_ms,tokens_per_s,peak_allocated_gib,device,torch
Usage: pytorch-reference.py MODEL MICRO_BATCH eager|compile [ITERS] [WARMUP]"""
import math, statistics, sys

import torch
import torch.nn as nn
import torch.nn.functional as F

# name: (family, layers, hidden, ffn, heads, kv_groups, seq, padded vocabulary, rotary base). The vocabulary is padded as
# the harness pads it (Megatron's --make-vocab-size-divisible-by 128): 32000 -> 32000, 32004 -> 32128, 50257 -> 50304.
MODELS = {
    "caat-1b": ("llama", 22, 2048, 5632, 32, 8, 2048, 32000, 500000.0),
    "gpt2-large": ("gpt", 36, 1280, 5120, 20, 20, 1024, 50304, 0.0),
    "llama-7b-4l": ("llama", 4, 4096, 11008, 32, 32, 4096, 32128, 10000.0),
}


class RMSNorm(nn.Module):
    def __init__(self, h, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(h))
        self.eps = eps

    def forward(self, x):
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def rotary_tables(seq, dim, base, device):
    inv = 1.0 / (base ** (torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim))
    angles = torch.outer(torch.arange(seq, device=device, dtype=torch.float32), inv)
    emb = torch.cat([angles, angles], dim=-1)
    return emb.cos()[None, None], emb.sin()[None, None]


def rotate(x, cos, sin):
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return (x * cos + rotated * sin).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, family, h, heads, groups):
        super().__init__()
        self.heads, self.groups, self.d = heads, groups, h // heads
        bias = family == "gpt"
        self.qkv = nn.Linear(h, (heads + 2 * groups) * self.d, bias=bias)
        self.proj = nn.Linear(h, h, bias=bias)

    def forward(self, x, cos, sin):
        b, s, _ = x.shape
        q, k, v = self.qkv(x).split([self.heads * self.d, self.groups * self.d, self.groups * self.d], dim=-1)
        q = q.view(b, s, self.heads, self.d).transpose(1, 2)
        k = k.view(b, s, self.groups, self.d).transpose(1, 2)
        v = v.view(b, s, self.groups, self.d).transpose(1, 2)
        if cos is not None:
            q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        if self.groups != self.heads:
            k = k.repeat_interleave(self.heads // self.groups, dim=1)
            v = v.repeat_interleave(self.heads // self.groups, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, s, -1))


class Layer(nn.Module):
    def __init__(self, family, h, ffn, heads, groups, dropout):
        super().__init__()
        self.family, self.dropout = family, dropout
        norm = (lambda: RMSNorm(h)) if family == "llama" else (lambda: nn.LayerNorm(h))
        self.norm1, self.norm2 = norm(), norm()
        self.attn = Attention(family, h, heads, groups)
        if family == "llama":
            self.up = nn.Linear(h, 2 * ffn, bias=False)  # gate and up projections as one GEMM, as Megatron's fc1
            self.down = nn.Linear(ffn, h, bias=False)
        else:
            self.up = nn.Linear(h, ffn)
            self.down = nn.Linear(ffn, h)

    def mlp(self, x):
        u = self.up(x)
        if self.family == "llama":
            gate, up = u.chunk(2, dim=-1)
            return self.down(F.silu(gate) * up)
        return self.down(F.gelu(u, approximate="tanh"))

    def forward(self, x, cos, sin):
        x = x + F.dropout(self.attn(self.norm1(x), cos, sin), self.dropout, self.training)
        return x + F.dropout(self.mlp(self.norm2(x)), self.dropout, self.training)


class Model(nn.Module):
    def __init__(self, family, layers, h, ffn, heads, groups, seq, vocab, rotary_base, dropout):
        super().__init__()
        self.family, self.seq, self.d, self.base, self.dropout = family, seq, h // heads, rotary_base, dropout
        self.embed = nn.Embedding(vocab, h)
        self.pos = nn.Embedding(seq, h) if family == "gpt" else None
        self.layers = nn.ModuleList(Layer(family, h, ffn, heads, groups, dropout) for _ in range(layers))
        self.norm = RMSNorm(h) if family == "llama" else nn.LayerNorm(h)
        self.head = nn.Linear(h, vocab, bias=False)
        if family == "gpt":
            self.head.weight = self.embed.weight  # tied embeddings
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, tokens, labels):
        x = self.embed(tokens)
        cos = sin = None
        if self.pos is not None:
            x = x + self.pos.weight[: tokens.shape[1]]
        else:
            cos, sin = rotary_tables(tokens.shape[1], self.d, self.base, tokens.device)
        x = F.dropout(x, self.dropout, self.training)  # Megatron's embedding dropout, at the hidden dropout's rate
        for layer in self.layers:
            x = layer(x, cos, sin)
        logits = self.head(self.norm(x))
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), labels.view(-1))


def main():
    name, micro_batch, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    iters = int(sys.argv[4]) if len(sys.argv) > 4 else 20
    warmup = int(sys.argv[5]) if len(sys.argv) > 5 else 5
    shape, dropout = (name[: -len("-dropout")], 0.1) if name.endswith("-dropout") else (name, 0.0)
    if shape not in MODELS or mode not in ("eager", "compile"):
        sys.exit(f"pytorch-reference.py: model {name!r} or mode {mode!r} unknown; models: {', '.join(MODELS)}, each also with -dropout; modes: eager, compile")
    family, layers, h, ffn, heads, groups, seq, vocab, base = MODELS[shape]
    torch.manual_seed(1234)
    torch.backends.cuda.matmul.allow_tf32 = True
    model = Model(family, layers, h, ffn, heads, groups, seq, vocab, base, dropout).cuda()
    if mode == "compile":
        for layer in model.layers:
            layer.compile()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.999), weight_decay=0.01, fused=True)
    tokens = torch.randint(0, vocab, (micro_batch, seq + 1), device="cuda")
    inputs, labels = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(inputs, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        loss = step()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    ms = statistics.median(times)
    if not math.isfinite(loss.item()):
        sys.exit(f"pytorch-reference.py: {name} {mode} loss is {loss.item()}")
    peak = torch.cuda.max_memory_allocated() / 2**30
    print(f"pytorch-{mode},{name},{micro_batch},{seq},{ms:.2f},{micro_batch * seq / ms * 1000:.0f},{peak:.2f},"
          f"{torch.cuda.get_device_name().replace(',', ' ')},{torch.__version__}")


if __name__ == "__main__":
    main()
