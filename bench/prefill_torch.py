"""Plain PyTorch prefill of a Llama-shaped decoder: the baseline of `deno task bench:prefill`.

Random fp16 weights (N(0, 0.02^2)), batch B, causal prefill of a P-token prompt through all
layers: RMSNorm (F.rms_norm), fused QKV GEMM, rotate-half RoPE, the rotated K and V kept
per layer as the cache, `scaled_dot_product_attention(is_causal=True)` (GQA through enable_gqa), o_proj, RMSNorm,
fused gate/up GEMM, SiLU * up, down_proj, final norm and the last position's logits. CUDA-event
medians of `repeats` runs after a warm-up. Also times SDPA alone on the same attention shapes
(per layer, causal) and reports its TFLOP/s and the backend PyTorch picks.

    python3 bench/prefill_torch.py jobs.json results.json
jobs.json: {"model": {"layers": 32, "hidden": 4096, "heads": 32, "kv_heads": 8, "head_dim": 128,
            "ffn": 14336, "vocab": 128256}, "jobs": [{"batch": 1, "prompt": 2048}, ...],
            "repeats": 3, "sdpa_only": [16384, 32768]}
(an empty "jobs" times SDPA alone: bench/prefill_kernel.ts --sdpa)
"""
import json
import math
import sys

import torch
import torch.nn.functional as F


def rope_tables(positions, head_dim, theta, device):
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    ang = positions.float()[:, None] * inv[None, :]
    cos, sin = ang.cos(), ang.sin()
    return torch.cat([cos, cos], -1).half(), torch.cat([sin, sin], -1).half()


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], -1)


def rmsnorm(x, w, eps=1e-5):
    return F.rms_norm(x, (x.shape[-1],), w, eps)


class Model:
    def __init__(self, m, max_tokens):
        g = torch.Generator(device="cuda").manual_seed(7)
        dev, H, hd = "cuda", m["hidden"], m["head_dim"]
        q_out, kv_out = m["heads"] * hd, m["kv_heads"] * hd
        mk = lambda *s: (torch.randn(*s, device=dev, dtype=torch.float16, generator=g) * 0.02)
        self.m = m
        self.embed = mk(m["vocab"], H)
        self.layers = []
        for _ in range(m["layers"]):
            self.layers.append({
                "in_norm": torch.ones(H, device=dev, dtype=torch.float16),
                "qkv": mk(q_out + 2 * kv_out, H),
                "o": mk(H, q_out),
                "post_norm": torch.ones(H, device=dev, dtype=torch.float16),
                "gate_up": mk(2 * m["ffn"], H),
                "down": mk(H, m["ffn"]),
            })
        self.final_norm = torch.ones(H, device=dev, dtype=torch.float16)
        self.lm_head = mk(m["vocab"], H)
        # The K/V cache a decoder keeps after prefill: [layer][B][Hkv][T][d] for K and V.
        self.cache_shape = None

    @torch.no_grad()
    def prefill(self, tokens, caches):
        m = self.m
        B, P = tokens.shape
        hd, Hq, Hkv = m["head_dim"], m["heads"], m["kv_heads"]
        pos = torch.arange(P, device="cuda")
        cos, sin = rope_tables(pos, hd, 500000.0, "cuda")
        h = self.embed[tokens]  # [B, P, H] fp16
        for li, L in enumerate(self.layers):
            x = rmsnorm(h, L["in_norm"])
            qkv = x @ L["qkv"].t()
            q, k, v = qkv.split([Hq * hd, Hkv * hd, Hkv * hd], -1)
            q = q.view(B, P, Hq, hd).transpose(1, 2)
            k = k.view(B, P, Hkv, hd).transpose(1, 2)
            v = v.view(B, P, Hkv, hd).transpose(1, 2)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            # The rotated k and v are the layer's cache: kept, as a decoder keeps them.
            caches[li] = (k, v)
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=Hq != Hkv)
            a = a.transpose(1, 2).reshape(B, P, Hq * hd)
            h = h + a @ L["o"].t()
            x = rmsnorm(h, L["post_norm"])
            gu = x @ L["gate_up"].t()
            g, u = gu.chunk(2, -1)
            h = h + (F.silu(g) * u) @ L["down"].t()
        x = rmsnorm(h[:, -1], self.final_norm)
        return (x @ self.lm_head.t()).float()


def time_it(fn, repeats):
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e))
    times.sort()
    return times[len(times) // 2]


def sdpa_alone(m, P, repeats):
    """Causal SDPA of one layer at batch 1, fresh data per run, TFLOP/s and the backend used."""
    hd, Hq, Hkv = m["head_dim"], m["heads"], m["kv_heads"]
    g = torch.Generator(device="cuda").manual_seed(P)
    sets = [tuple(torch.randn(1, h, P, hd, device="cuda", dtype=torch.float16, generator=g)
                  for h in (Hq, Hkv, Hkv)) for _ in range(3)]
    flops = 2 * 2 * Hq * hd * P * (P + 1) / 2  # QK^T and PV over the causal triangle
    out = {"prompt": P, "flops": flops}
    from torch.nn.attention import SDPBackend, sdpa_kernel
    backends = {"default": None, "flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
                "efficient": SDPBackend.EFFICIENT_ATTENTION}
    for name, be in backends.items():
        i = [0]

        def run():
            q, k, v = sets[i[0] % 3]
            i[0] += 1
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=Hq != Hkv)
        try:
            if be is None:
                ms = time_it(run, repeats)
            else:
                with sdpa_kernel([be]):
                    ms = time_it(run, repeats)
            out[name] = {"ms": ms, "tflops": flops / (ms / 1e3) / 1e12}
        except Exception as e:  # a backend may refuse the shape
            out[name] = {"error": str(e).splitlines()[0][:200]}
    return out


def matmul_peak():
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.float16)
    b = torch.randn(n, n, device="cuda", dtype=torch.float16)
    ms = time_it(lambda: a @ b, 10)
    return 2 * n ** 3 / (ms / 1e3) / 1e12


def main():
    cfg = json.load(open(sys.argv[1]))
    m, repeats = cfg["model"], cfg.get("repeats", 3)
    props = torch.cuda.get_device_properties(0)
    out = {"device": props.name, "torch": torch.__version__, "model": m,
           "fp16_matmul_tflops": matmul_peak(), "results": [], "sdpa": []}
    print(f"{props.name}: fp16 8192^3 matmul {out['fp16_matmul_tflops']:.0f} TFLOP/s", flush=True)
    for P in cfg.get("sdpa_only", []):
        r = sdpa_alone(m, P, repeats=max(5, repeats))
        out["sdpa"].append(r)
        print(f"SDPA causal P={P}: " + ", ".join(
            f"{k} {v['ms']:.2f} ms {v['tflops']:.0f} TF/s" if "ms" in v else f"{k} n/a"
            for k, v in r.items() if isinstance(v, dict)), flush=True)
    jobs = cfg["jobs"]
    model = Model(m, max(j["batch"] * j["prompt"] for j in jobs)) if jobs else None  # SDPA only
    for j in jobs:
        B, P = j["batch"], j["prompt"]
        try:
            caches = [None] * m["layers"]
            tokens = torch.randint(0, m["vocab"], (B, P), device="cuda")
            torch.cuda.reset_peak_memory_stats()
            ms = time_it(lambda: model.prefill(tokens, caches), repeats)
            peak = torch.cuda.max_memory_allocated()
            out["results"].append({**j, "ms": ms, "tokens_per_s": B * P / (ms / 1e3), "peak_bytes": peak})
            print(f"prefill B={B} P={P}: {ms:.1f} ms, {B * P / (ms / 1e3):.0f} tok/s, peak {peak / 2**30:.1f} GiB",
                  flush=True)
            del caches
        except torch.OutOfMemoryError:
            out["results"].append({**j, "ms": None, "error": "out of memory"})
        torch.cuda.empty_cache()
    json.dump(out, open(sys.argv[2], "w"), indent=1)


if __name__ == "__main__":
    main()
