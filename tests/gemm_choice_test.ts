/**
 * The decoder's GEMM choice (src/runtime/gemm_choice.ts): GpuDecoderOptions.gemm, else DS_GEMM,
 * else cuBLAS; a bad value of either is one line naming it, the value and what is allowed, before
 * any GPU work. (The family's GEMM kernels are compiled by nvrtc_compile_test.ts with the model
 * family and checked against float64 on the GPU by tests/gpu/gemm.ts.)
 */
import assert from "node:assert/strict";
import { chooseGemm, GEMM_ENV_VAR, gemmFromEnv } from "../src/runtime/gemm_choice.ts";
import { GpuDecoder } from "../src/decoding/gpu_decoder.ts";
import {
  decodeLinearGrid,
  fitsDecodeGemm,
  gemmGrid,
  linearGrid,
  workspaceBytes,
} from "../src/decoding/gpu_decoder_layout.ts";
import { ArgumentError, InputError } from "../src/util/errors.ts";
import { DECODE_GEMM_MAX_ROWS, DECODE_GEMM_TILE_N, GEMM_TILE } from "../src/codegen/families.ts";
import type { ModelConfig } from "../src/checkpoint/config.ts";
import { runScript } from "./helpers.ts";

/** Runs `body` with DS_GEMM set to `value` (unset for undefined), restoring it afterwards. */
function withEnv(value: string | undefined, body: () => void): void {
  const saved = Deno.env.get(GEMM_ENV_VAR);
  try {
    if (value === undefined) Deno.env.delete(GEMM_ENV_VAR);
    else Deno.env.set(GEMM_ENV_VAR, value);
    body();
  } finally {
    if (saved === undefined) Deno.env.delete(GEMM_ENV_VAR);
    else Deno.env.set(GEMM_ENV_VAR, saved);
  }
}

Deno.test("gemm choice: option, else DS_GEMM, else cublas", () => {
  withEnv(undefined, () => {
    assert.equal(gemmFromEnv(), undefined);
    assert.equal(chooseGemm(undefined, "f"), "cublas");
    assert.equal(chooseGemm("builtin", "f"), "builtin");
  });
  withEnv("", () => assert.equal(chooseGemm(undefined, "f"), "cublas"));
  withEnv("builtin", () => {
    assert.equal(chooseGemm(undefined, "f"), "builtin");
    assert.equal(chooseGemm("cublas", "f"), "cublas", "an explicit option wins over DS_GEMM");
  });
  withEnv("cublas", () => assert.equal(chooseGemm(undefined, "f"), "cublas"));
});

Deno.test("gemm choice: a bad DS_GEMM or option is one line naming it and what is allowed", () => {
  withEnv("mkl", () => {
    assert.throws(
      () => chooseGemm(undefined, "GpuDecoder.create"),
      (e: unknown) =>
        e instanceof InputError &&
        e.message === `environment variable DS_GEMM: got "mkl"; allowed: cublas, builtin`,
    );
  });
  withEnv(undefined, () => {
    assert.throws(
      () => chooseGemm("Builtin", "GpuDecoder.create"),
      (e: unknown) =>
        e instanceof ArgumentError &&
        e.message ===
          `GpuDecoder.create: options.gemm: got "Builtin"; allowed: cublas, builtin`,
    );
  });
});

Deno.test("gemm choice: GpuDecoder.create refuses a bad gemm before touching the GPU", async () => {
  // No CUDA context and no weights: the check must come first.
  const model = { config: {} as ModelConfig, seed: 1, scale: 1 };
  await assert.rejects(
    GpuDecoder.create({} as never, model, { batch: 1, maxContext: 8, gemm: "fast" as never }),
    (e: unknown) => e instanceof ArgumentError && /options\.gemm: got "fast"/.test(e.message),
  );
});

Deno.test("gemm choice: the builtin GEMM needs no cuBLAS workspace; its grid covers y", () => {
  const c = {
    hiddenSize: 64,
    intermediateSize: 128,
    numHeads: 4,
    numKvHeads: 2,
    headDim: 16,
    vocabSize: 256,
  } as ModelConfig;
  assert.equal(workspaceBytes(c, 8, 2, "cublas") - workspaceBytes(c, 8, 2, "builtin"), 32 << 20);
  assert.equal(workspaceBytes(c, 8, 2), workspaceBytes(c, 8, 2, "cublas"));
  for (const [m, n] of [[1, 1], [2, 128256], [300, 257], [64, 64], [65, 63]]) {
    const [gx, gy, gz] = linearGrid(m, n);
    assert.deepEqual([gz, gx * GEMM_TILE >= n, gy * GEMM_TILE >= m], [1, true, true]);
    assert.ok((gx - 1) * GEMM_TILE < n && (gy - 1) * GEMM_TILE < m, `no empty tiles for ${m}x${n}`);
  }
});

Deno.test("gemm choice: examples/decode.ts checks DS_GEMM before loading anything", async () => {
  const r = await runScript("examples/decode.ts", ["--device", "cpu"], { DS_GEMM: "mkl" });
  assert.equal(r.code, 1, r.stderr);
  assert.equal(
    r.stderr.trim(),
    `decode: environment variable DS_GEMM: got "mkl"; allowed: cublas, builtin`,
  );
});

Deno.test("gemm choice: the decode GEMM takes at most 16 rows, k in eights, aligned operands", () => {
  assert.ok(fitsDecodeGemm(1, 4096, 0n, 256n));
  assert.ok(fitsDecodeGemm(DECODE_GEMM_MAX_ROWS, 8, 16n, 32n));
  assert.ok(!fitsDecodeGemm(DECODE_GEMM_MAX_ROWS + 1, 4096, 0n, 0n), "a prefill chunk");
  assert.ok(!fitsDecodeGemm(4, 4100, 0n, 0n), "k not a multiple of 8");
  assert.ok(!fitsDecodeGemm(4, 4096, 8n, 0n), "x not 16-byte aligned");
  assert.ok(!fitsDecodeGemm(4, 4096, 0n, 2n), "w not 16-byte aligned");
  for (const [m, n] of [[1, 1], [16, 128256], [3, 17]]) {
    assert.deepEqual(gemmGrid("decode_linear", m, n), decodeLinearGrid(n));
    assert.deepEqual(gemmGrid("linear", m, n), linearGrid(m, n));
  }
  for (const n of [1, 16, 17, 128256]) {
    const [gx, gy, gz] = decodeLinearGrid(n);
    assert.deepEqual([gy, gz, gx * DECODE_GEMM_TILE_N >= n, (gx - 1) * DECODE_GEMM_TILE_N < n], [
      1,
      1,
      true,
      true,
    ]);
  }
});
