"""PyTorch scaled_dot_product_attention in the decode layout, the dense baseline of the benchmark.

q [B, Hq, 1, d], K/V [B, Hkv, L, d] fp16 (enable_gqa when Hq != Hkv); fresh random data,
several copies rotated so L2 does not serve them; CUDA-event medians after warm-up.

    python3 bench/sdpa.py jobs.json results.json
jobs.json: [{"batch": 8, "q_heads": 32, "kv_heads": 8, "head_dim": 128, "context": 32768}, ...]
"""
import json
import sys

import torch
import torch.nn.functional as F


def time_job(job, l2_bytes, warmup=10, repeats=50):
    b, hq, hkv, d, L = job["batch"], job["q_heads"], job["kv_heads"], job["head_dim"], job["context"]
    kv_bytes = 2 * b * hkv * L * d * 2
    copies = max(1, min(16, -(-3 * l2_bytes // kv_bytes)))
    gen = torch.Generator(device="cuda").manual_seed(1234 + L + b)
    sets = []
    for _ in range(copies):
        q = torch.randn(b, hq, 1, d, device="cuda", dtype=torch.float16, generator=gen)
        k = torch.randn(b, hkv, L, d, device="cuda", dtype=torch.float16, generator=gen)
        v = torch.randn(b, hkv, L, d, device="cuda", dtype=torch.float16, generator=gen)
        sets.append((q, k, v))
    gqa = hq != hkv

    def run(i):
        q, k, v = sets[i % copies]
        return F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)

    for i in range(warmup):
        run(i)
    torch.cuda.synchronize()
    times = []
    for i in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run(i)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    del sets
    torch.cuda.empty_cache()
    return {**job, "ms": times[len(times) // 2], "copies": copies, "bytes": kv_bytes}


def main():
    jobs = json.load(open(sys.argv[1]))
    props = torch.cuda.get_device_properties(0)
    l2 = getattr(props, "L2_cache_size", 50 * 2**20)
    out = {"device": props.name, "torch": torch.__version__, "results": []}
    for job in jobs:
        try:
            out["results"].append(time_job(job, l2))
        except torch.OutOfMemoryError:
            out["results"].append({**job, "ms": None, "error": "out of memory"})
            torch.cuda.empty_cache()
    json.dump(out, open(sys.argv[2], "w"), indent=1)


if __name__ == "__main__":
    main()
