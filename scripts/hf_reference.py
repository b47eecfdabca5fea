"""Reference checkpoints for the model families of issue 12, written by Hugging Face transformers.

For each family below: a scaled-down random-weight checkpoint with the real config's structure and
RoPE (real head_dim 128, GQA 8 q / 2 kv heads, tiny hidden and intermediate sizes, 2 layers, a
scaled-down original_max_position_embeddings of 64 so that a ~200-token prompt crosses the scaling's
range), stored in the Hugging Face layout (config.json in the spelling real checkpoints use,
safetensors in bf16 or fp16, one family sharded with an index, one with a trained byte-level BPE
tokenizer.json), and transformers' outputs for it:

  reference.json  prompt ids; prefill logits at a subset of positions (float32, base64); the greedy
                  continuation and the logits of each decode step through the KV cache; the RoPE
                  inverse frequencies and attention factor of the model's rotary embedding module;
                  native_*: the same logits from transformers run as its users run it, the
                  checkpoint in its own dtype (bf16/fp16) on CUDA with the default attention,
                  feeding the same greedy ids: the reference's own 16-bit noise floor.

The reference is computed on the CPU from the checkpoint as transformers reads it back from disk
(float32, eager attention), so it checks the config parsing and the weight storage as well as the
math. Everything but the native_* fields is deterministic: --expect DIR (the committed fixtures)
checks that the checkpoints and every field DIR's reference.json files hold come out identical.

    python3 scripts/hf_reference.py OUTDIR [--expect DIR]   -> OUTDIR/families.tar (needs CUDA
                                                               for native_*, no network)
"""
import argparse
import base64
import io
import json
import math
import os
import sys
import tarfile
import tempfile

import torch
import transformers
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModelForCausalLM

HEAD_DIM = 128
NUM_HEADS = 8
NUM_KV_HEADS = 2
HIDDEN = 16
INTERMEDIATE = 48
LAYERS = 2
ORIGINAL_MAX = 64
PROMPT_BYTES = 200
DECODE_STEPS = 16
# Prefill positions whose logits are stored: every 16th, both sides of ORIGINAL_MAX, the last few.
STRIDE = 16

PROMPT_TEXT = (
    "def rope_scaling(config):\n"
    "    # Llama 3.1 rescales the low frequencies by `factor` and keeps the high ones; the band\n"
    "    # between them is interpolated smoothly. YaRN also scales the attention logits.\n"
    "    kind = config.get('rope_type', 'default')\n"
    "    if kind == 'llama3':\n"
    "        return llama3_inverse_frequencies(config)\n"
    "    raise ValueError(f'unsupported rope type {kind}')\n"
)

TOKENIZER_CORPUS = (
    "The quick brown fox jumps over the lazy dog. def main():\n    return 0\n"
    "for i in range(10):\n    print(i)\nimport math\nclass Model:\n    pass\n"
    "Rotary position embeddings rotate pairs of channels by an angle that grows with position. "
    "Long-context models rescale the frequencies so that positions past the training length "
    "look like positions the model has seen. config = {'rope_type': 'llama3', 'factor': 8.0}\n"
) * 4


def base_config(model_type, arch, **extra):
    cfg = {
        "architectures": [arch],
        "model_type": model_type,
        "hidden_size": HIDDEN,
        "intermediate_size": INTERMEDIATE,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": NUM_HEADS,
        "num_key_value_heads": NUM_KV_HEADS,
        "head_dim": HEAD_DIM,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-5,
        "vocab_size": 256,
        "bos_token_id": None,
        "eos_token_id": None,
        "pad_token_id": None,
        "use_cache": True,
    }
    cfg.update(extra)
    return cfg


def llama3_params():
    return {
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": ORIGINAL_MAX,
        "rope_type": "llama3",
    }


# name -> (config.json as written, storage dtype, shard count, with tokenizer.json)
FAMILIES = {
    # Llama-3.2-style: tied embeddings, the older `rope_scaling` spelling with top-level rope_theta.
    "llama3-tied": (
        base_config(
            "llama", "LlamaForCausalLM",
            max_position_embeddings=ORIGINAL_MAX * 16, rope_theta=500000.0,
            rope_scaling=llama3_params(), tie_word_embeddings=True, attention_bias=False,
            mlp_bias=False, torch_dtype="bfloat16",
        ),
        torch.bfloat16, 1, False,
    ),
    # Llama-3.1-style: untied, the newer `rope_parameters` spelling, sharded with an index and a
    # trained byte-level BPE tokenizer.json (vocab 320).
    "llama3-untied": (
        base_config(
            "llama", "LlamaForCausalLM",
            max_position_embeddings=ORIGINAL_MAX * 16,
            rope_parameters={**llama3_params(), "rope_theta": 500000.0},
            tie_word_embeddings=False, attention_bias=False, mlp_bias=False, dtype="bfloat16",
            vocab_size=320,
        ),
        torch.bfloat16, 3, True,
    ),
    # Qwen2.5-style YaRN (q/k/v biases), fp16, `rope_scaling` with the old "type" key.
    "qwen2-yarn": (
        base_config(
            "qwen2", "Qwen2ForCausalLM",
            max_position_embeddings=ORIGINAL_MAX, rope_theta=1000000.0,
            rope_scaling={"factor": 4.0, "original_max_position_embeddings": ORIGINAL_MAX,
                          "type": "yarn"},
            tie_word_embeddings=False, use_sliding_window=False, sliding_window=32,
            max_window_layers=LAYERS, torch_dtype="float16",
        ),
        torch.float16, 1, False,
    ),
    # Linear position interpolation, `rope_parameters` spelling, fp16.
    "llama-linear": (
        base_config(
            "llama", "LlamaForCausalLM",
            max_position_embeddings=ORIGINAL_MAX * 4,
            rope_parameters={"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0},
            tie_word_embeddings=False, attention_bias=False, mlp_bias=False, dtype="float16",
        ),
        torch.float16, 1, False,
    ),
    # Mistral-7B-v0.1-style: default RoPE, a sliding window much shorter than the prompt.
    "mistral-window": (
        base_config(
            "mistral", "MistralForCausalLM",
            max_position_embeddings=4096, rope_theta=10000.0, sliding_window=48,
            tie_word_embeddings=False, torch_dtype="bfloat16",
        ),
        torch.bfloat16, 1, False,
    ),
}


def f32_b64(t):
    return base64.b64encode(t.detach().to(torch.float32).contiguous().numpy().tobytes()).decode()


def init_weights(model, seed):
    """Weights of order-one activations, so that RoPE (the thing under test) moves the logits:
    unit-variance embeddings, fan-in-scaled projections, q/k large enough that attention is
    peaked, norms and biases visibly different from 1 and 0."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g, dtype=torch.float32)
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * r)
            elif name.endswith(".bias"):
                p.copy_(0.5 * r)
            elif "embed_tokens" in name:
                p.copy_(r)
            elif "q_proj" in name or "k_proj" in name:
                p.copy_(1.5 * r / math.sqrt(p.shape[1]))
            else:
                p.copy_(r / math.sqrt(p.shape[1]))


def write_checkpoint(model, directory, dtype, shards, tied):
    state = {k: v.detach().to(dtype).contiguous().clone() for k, v in model.state_dict().items()}
    if tied:
        state.pop("lm_head.weight", None)
    names = sorted(state)
    if shards == 1:
        save_file(state, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
        return state
    weight_map = {}
    per = math.ceil(len(names) / shards)
    total = 0
    for s in range(shards):
        file = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: state[k] for k in names[s * per:(s + 1) * per]}
        save_file(part, os.path.join(directory, file), metadata={"format": "pt"})
        for k, v in part.items():
            weight_map[k] = file
            total += v.numel() * v.element_size()
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    with open(os.path.join(directory, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)
    return state


def train_tokenizer(path, vocab_size):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[], show_progress=False,
    )
    tok.train_from_iterator([TOKENIZER_CORPUS], trainer)
    tok.save(path)
    return tok


@torch.no_grad()
def native_logits(directory, dtype, ids, positions, greedy):
    """transformers as its users run it: the checkpoint in its own dtype on CUDA, default
    attention; logits of one prefill forward at `positions` and of decode steps through the KV
    cache feeding `greedy` (the float32 reference's continuation, so the rows line up)."""
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype).to("cuda").eval()
    out = model(input_ids=torch.tensor([ids], device="cuda"), use_cache=True)
    prefill = out.logits[0, positions].to(torch.float32).cpu()
    past, steps = out.past_key_values, []
    for t in greedy:
        step = model(input_ids=torch.tensor([[t]], device="cuda"), past_key_values=past, use_cache=True)
        past = step.past_key_values
        steps.append(step.logits[0, -1].to(torch.float32).cpu())
    return prefill, torch.stack(steps), model.config._attn_implementation


def check_expected(name, directory, expect_root):
    """The family's files must equal the committed ones: checkpoints and config byte for byte,
    reference.json field by field for every field the committed file has."""
    old_dir = os.path.join(expect_root, name)
    old_files, new_files = sorted(os.listdir(old_dir)), sorted(os.listdir(directory))
    if old_files != new_files:
        sys.exit(f"{name}: files {new_files} differ from {old_dir}'s {old_files}")
    for file in old_files:
        with open(os.path.join(old_dir, file), "rb") as f:
            old = f.read()
        with open(os.path.join(directory, file), "rb") as f:
            new = f.read()
        if file != "reference.json":
            if old != new:
                sys.exit(f"{name}: {file} differs from {old_dir}/{file} (the script is not deterministic)")
            continue
        old_ref, new_ref = json.loads(old), json.loads(new)
        for key, value in old_ref.items():
            if new_ref.get(key) != value:
                sys.exit(f"{name}: reference.json field {key!r} differs from {old_dir}/{file}")
    print(f"{name}: identical to {old_dir} (checkpoints, config and every committed field)", flush=True)


def rotary_module(model):
    rotary = getattr(model.model, "rotary_emb", None)
    if rotary is None:
        rotary = model.model.layers[0].self_attn.rotary_emb
    return rotary


@torch.no_grad()
def reference_for(name, cfg_json, dtype, shards, with_tokenizer, root, seed, expect_root):
    directory = os.path.join(root, name)
    os.makedirs(directory)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(cfg_json, f, indent=2)
    tied = bool(cfg_json.get("tie_word_embeddings", False))

    config = AutoConfig.from_pretrained(directory)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    model = model.to(torch.float32).eval()
    init_weights(model, seed)
    stored = write_checkpoint(model, directory, dtype, shards, tied)
    # save_pretrained would rewrite config.json in transformers' own spelling; the hand-written
    # one above is what real checkpoints look like and stays as it is.

    prompt_text = None
    if with_tokenizer:
        tok = train_tokenizer(os.path.join(directory, "tokenizer.json"), cfg_json["vocab_size"])
        prompt_text = PROMPT_TEXT
        ids = tok.encode(prompt_text).ids
        assert tok.decode(ids) == prompt_text, "tokenizer round trip failed"
        assert max(ids) < cfg_json["vocab_size"]
        assert 120 <= len(ids) <= 400, f"{name}: prompt is {len(ids)} tokens"
    else:
        ids = list(PROMPT_TEXT.encode("utf-8"))[:PROMPT_BYTES]
    assert len(ids) > ORIGINAL_MAX + 32

    # The reference: the checkpoint as transformers reads it back.
    reloaded = AutoModelForCausalLM.from_pretrained(
        directory, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    reloaded_state = reloaded.state_dict()
    for k, v in stored.items():
        assert torch.equal(reloaded_state[k], v.to(torch.float32)), f"{name}: {k} differs on reload"
    if tied:
        assert torch.equal(reloaded_state["lm_head.weight"], reloaded_state["model.embed_tokens.weight"])

    rotary = rotary_module(reloaded)
    inv_freq = rotary.inv_freq.detach().to(torch.float32).cpu()
    attention_scaling = float(getattr(rotary, "attention_scaling", 1.0))
    rope_type = getattr(rotary, "rope_type", None)

    input_ids = torch.tensor([ids], dtype=torch.long)
    out = reloaded(input_ids=input_ids, use_cache=True)
    logits = out.logits[0].to(torch.float32)
    past = out.past_key_values
    n = len(ids)
    positions = sorted(set(
        list(range(0, n, STRIDE))
        + [ORIGINAL_MAX - 2, ORIGINAL_MAX - 1, ORIGINAL_MAX, ORIGINAL_MAX + 1]
        + list(range(n - 4, n))
    ))
    greedy, step_logits = [], []
    nxt = int(logits[-1].argmax())
    for _ in range(DECODE_STEPS):
        greedy.append(nxt)
        step = reloaded(input_ids=torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
        past = step.past_key_values
        row = step.logits[0, -1].to(torch.float32)
        step_logits.append(row)
        nxt = int(row.argmax())

    # The decode path must agree with one forward over the whole sequence (a check of the
    # reference itself, e.g. of the sliding-window cache).
    full = reloaded(input_ids=torch.tensor([ids + greedy]), use_cache=False).logits[0]
    decode_vs_full = float(
        (torch.stack(step_logits) - full[n:]).abs().max() / full[n:].abs().max()
    )
    assert decode_vs_full < 1e-4, f"{name}: decode vs full forward {decode_vs_full}"

    window_effect = None
    if cfg_json.get("sliding_window") and cfg_json["model_type"] == "mistral":
        # The window must change the result, or the fixture would not test it.
        wide = dict(cfg_json, sliding_window=None)
        with open(os.path.join(directory, "config.json"), "w") as f:
            json.dump(wide, f, indent=2)
        unwindowed = AutoModelForCausalLM.from_pretrained(
            directory, dtype=torch.float32, attn_implementation="eager"
        ).eval()
        other = unwindowed(input_ids=input_ids, use_cache=False).logits[0, -1]
        window_effect = float((other - logits[-1]).abs().max() / logits[-1].abs().max())
        assert window_effect > 1e-3, f"{name}: the sliding window changes nothing ({window_effect})"
        with open(os.path.join(directory, "config.json"), "w") as f:
            json.dump(cfg_json, f, indent=2)

    ref = {
        "family": name,
        "source": "transformers AutoModelForCausalLM.from_pretrained(dir, dtype=float32, "
                  "attn_implementation='eager'), random weights",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "storage_dtype": str(dtype).replace("torch.", ""),
        "hf_rope_parameters": getattr(reloaded.config, "rope_parameters", None)
        or getattr(reloaded.config, "rope_scaling", None),
        "hf_rope_type": rope_type,
        "inv_freq": [float(x) for x in inv_freq.tolist()],
        "attention_scaling": attention_scaling,
        "prompt_text": prompt_text,
        "input_ids": ids,
        "logit_positions": positions,
        "prefill_logits_f32_b64": f32_b64(logits[positions]),
        "greedy_continuation_ids": greedy,
        "step_logits_f32_b64": f32_b64(torch.stack(step_logits)),
        "decode_vs_full_forward_rel": decode_vs_full,
        "sliding_window_effect_rel": window_effect,
    }
    # Last, after every float32 field: nothing below draws random numbers or touches the CPU path.
    native_prefill, native_steps, attn = native_logits(directory, dtype, ids, positions, greedy)
    ref.update({
        "native_source": "transformers AutoModelForCausalLM.from_pretrained(dir, dtype="
                         f"{ref['storage_dtype']}) on CUDA ({attn} attention): one prefill forward "
                         "at logit_positions, decode steps through the KV cache feeding "
                         "greedy_continuation_ids",
        "native_dtype": ref["storage_dtype"],
        "native_device": torch.cuda.get_device_name(),
        "native_prefill_logits_f32_b64": f32_b64(native_prefill),
        "native_step_logits_f32_b64": f32_b64(native_steps),
    })
    with open(os.path.join(directory, "reference.json"), "w") as f:
        json.dump(ref, f)
    if expect_root is not None:
        check_expected(name, directory, expect_root)
    native_rel = float((native_steps - torch.stack(step_logits)).norm() / torch.stack(step_logits).norm())
    print(
        f"{name}: {len(ids)} prompt tokens, rope {rope_type}, attention_scaling "
        f"{attention_scaling:.6f}, greedy {greedy[:8]}..., decode vs full {decode_vs_full:.2e}"
        + (f", window effect {window_effect:.3f}" if window_effect is not None else "")
        + f", native {ref['native_dtype']} decode steps vs float32 {native_rel:.2e}",
        flush=True,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir")
    parser.add_argument("--expect", metavar="DIR",
                        help="committed fixtures (tests/fixtures/families): fail unless the "
                             "checkpoints and every field they hold come out identical")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("hf_reference.py: the native_* logits run transformers on CUDA, and "
                 "torch.cuda.is_available() is False; run it on the GPU machine")
    out_dir = args.outdir
    os.makedirs(out_dir, exist_ok=True)
    torch.set_num_threads(min(8, os.cpu_count() or 1))
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "families")
        os.makedirs(root)
        for i, (name, (cfg, dtype, shards, with_tok)) in enumerate(FAMILIES.items()):
            reference_for(name, cfg, dtype, shards, with_tok, root, seed=1234 + i,
                          expect_root=args.expect)
        target = os.path.join(out_dir, "families.tar")
        partial = target + ".partial"
        with tarfile.open(partial, "w") as tar:
            tar.add(root, arcname="families")
        os.replace(partial, target)
    size = os.path.getsize(target)
    print(f"wrote {target} ({size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
