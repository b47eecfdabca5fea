import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { DiskCache } from "../src/cuda/compile_cache.ts";
import { KernelCompiler } from "../src/cuda/compiler.ts";
import { CompileError, nvrtc } from "../src/cuda/nvrtc.ts";
import { withTempDir } from "./helpers.ts";

const TINY = `extern "C" __global__ void tiny(float* out, float x) {
  out[threadIdx.x] = x * 2.0f;
}
`;
const request = { source: TINY, programName: "tiny.cu" };

/** Every entry file under a cache directory. */
function entries(dir: string): string[] {
  const root = join(dir, "kernels");
  let subdirs: string[];
  try {
    subdirs = readdirSync(root);
  } catch {
    return [];
  }
  return subdirs.flatMap((d) => readdirSync(join(root, d)).map((f) => join(root, d, f)));
}

const ELF_MAGIC = [0x7f, 0x45, 0x4c, 0x46];

Deno.test("compile cache: nvrtc, then memory, then disk in a new compiler, with identical output", async () => {
  await withTempDir((dir) => {
    const first = new KernelCompiler({ cache: new DiskCache(dir) });
    const a = first.compile(request);
    assert.equal(a.origin, "nvrtc");
    assert.equal(a.recovered, undefined);
    assert.equal(a.log, "");
    assert.match(a.ptx, /\.entry tiny\(/);
    assert.match(a.ptx, /\.target sm_90/);
    assert.ok(a.cubin && a.cubin.length > 0, "sm_90 gives a CUBIN");
    assert.deepEqual([...a.cubin.subarray(0, 4)], ELF_MAGIC);
    assert.equal(entries(dir).length, 1, "one entry written");

    const b = first.compile(request);
    assert.equal(b.origin, "memory");
    assert.equal(b.key, a.key);
    assert.equal(b.ptx, a.ptx);
    assert.deepEqual(first.stats, { memory: 1, disk: 0, nvrtc: 1, recovered: 0 });

    const second = new KernelCompiler({ cache: new DiskCache(dir) });
    const c = second.compile(request);
    assert.equal(c.origin, "disk");
    assert.equal(c.key, a.key);
    assert.equal(c.ptx, a.ptx);
    assert.deepEqual(c.cubin, a.cubin);
    assert.equal(c.log, "");
    assert.equal(second.compile(request).origin, "memory", "a disk hit is memoized");
    assert.deepEqual(second.stats, { memory: 1, disk: 1, nvrtc: 0, recovered: 0 });
  });
});

Deno.test("compile cache: a different option or architecture is a miss, each cached on its own", async () => {
  await withTempDir((dir) => {
    const compiler = new KernelCompiler({ cache: new DiskCache(dir) });
    const base = compiler.compile(request);
    const lineinfo = compiler.compile({ ...request, extraOptions: ["-lineinfo"] });
    assert.equal(lineinfo.origin, "nvrtc");
    assert.notEqual(lineinfo.key, base.key);
    assert.match(lineinfo.ptx, /\.loc\s/, "-lineinfo adds line records to the PTX");

    const ptxOnly = compiler.compile({ ...request, arch: "compute_90" });
    assert.equal(ptxOnly.origin, "nvrtc");
    assert.notEqual(ptxOnly.key, base.key);
    assert.equal(ptxOnly.cubin, undefined, "a virtual architecture gives PTX only");
    assert.match(ptxOnly.ptx, /\.entry tiny\(/);
    assert.equal(entries(dir).length, 3);

    const fresh = new KernelCompiler({ cache: new DiskCache(dir) });
    const again = fresh.compile({ ...request, arch: "compute_90" });
    assert.equal(again.origin, "disk");
    assert.equal(again.cubin, undefined, "no CUBIN comes back from a PTX-only entry");
    assert.equal(again.ptx, ptxOnly.ptx);
    assert.equal(fresh.compile({ ...request, extraOptions: ["-lineinfo"] }).origin, "disk");
  });
});

Deno.test("compile cache: corrupted and truncated entries are detected, rebuilt and then read fine", async () => {
  await withTempDir((dir) => {
    const cache = new DiskCache(dir);
    const original = new KernelCompiler({ cache }).compile(request);
    const path = cache.pathOf(original.key);

    const damage: [string, (bytes: Uint8Array) => Uint8Array, RegExp][] = [
      ["flipped payload byte", (b) => {
        const copy = b.slice();
        copy[copy.length - 1] ^= 0x01;
        return copy;
      }, /checksum/],
      ["truncated", (b) => b.slice(0, Math.floor(b.length / 2)), /payload is \d+ bytes/],
      ["header only", (b) => b.slice(0, b.indexOf(10)), /no header line|payload is 0 bytes/],
      ["garbage header", (b) => new Uint8Array([0x7b, 0x7b, 10, ...b.slice(10)]), /header/],
    ];
    for (const [what, damageFn, reason] of damage) {
      Deno.writeFileSync(path, damageFn(Deno.readFileSync(path)));
      const compiler = new KernelCompiler({ cache });
      const rebuilt = compiler.compile(request);
      assert.equal(rebuilt.origin, "nvrtc", what);
      assert.ok(rebuilt.recovered, `${what}: recovered must say why`);
      assert.match(rebuilt.recovered, reason, what);
      assert.equal(compiler.stats.recovered, 1, what);
      assert.equal(rebuilt.ptx, original.ptx, what);
      assert.deepEqual(rebuilt.cubin, original.cubin, what);

      const reader = new KernelCompiler({ cache });
      const hit = reader.compile(request);
      assert.equal(hit.origin, "disk", `${what}: the rebuilt entry reads back`);
      assert.equal(hit.recovered, undefined, what);
      assert.deepEqual(hit.cubin, original.cubin, what);
    }
    assert.equal(entries(dir).length, 1, "no stray temporary files");
  });
});

Deno.test("compile cache: a compile error quotes the offending source line and caches nothing", async () => {
  await withTempDir((dir) => {
    const source = [
      `extern "C" __global__ void broken(float* out) {`,
      `  float y = 1.0f;`,
      `  out[0] = y + undefined_identifier;`,
      `}`,
      ``,
    ].join("\n");
    const compiler = new KernelCompiler({ cache: new DiskCache(dir) });
    let error: unknown;
    try {
      compiler.compile({ source, programName: "broken.cu" });
    } catch (e) {
      error = e;
    }
    assert.ok(error instanceof CompileError, `expected a CompileError, got ${error}`);
    assert.equal(error.programName, "broken.cu");
    assert.match(error.log, /broken\.cu\(3\): error/);
    assert.match(error.message, /undefined_identifier/);
    // The annotated line: a marker, its line number and the source text.
    assert.match(error.message, /> +3 \| {3}out\[0\] = y \+ undefined_identifier;/);
    assert.match(error.message, /  +2 \| {3}float y = 1\.0f;/, "context lines are quoted too");
    assert.deepEqual(entries(dir), []);
    assert.equal(compiler.stats.nvrtc, 0);
  });
});

Deno.test("compile cache: NVRTC warnings are errors for the compiler (and are not cached)", async () => {
  await withTempDir((dir) => {
    const sources: [string, string, RegExp][] = [
      ["#warning", `#warning "deliberate"\n${TINY}`, /#warning directive/],
      [
        "unused variable",
        `extern "C" __global__ void tiny(float* out) {\n  int unused = 3;\n  out[0] = 1.0f;\n}\n`,
        /"unused" was declared but never referenced/,
      ],
    ];
    for (const [what, source, message] of sources) {
      // NVRTC itself succeeds and only logs the warning...
      const raw = nvrtc().compile(source, "warn.cu", ["--gpu-architecture=sm_90"]);
      assert.match(raw.log, /warning/, what);
      assert.match(raw.ptx, /\.entry tiny\(/, what);
      // ...the KernelCompiler refuses it.
      const compiler = new KernelCompiler({ cache: new DiskCache(dir) });
      assert.throws(
        () => compiler.compile({ source, programName: "warn.cu" }),
        (e: unknown) => e instanceof CompileError && message.test(e.message),
        what,
      );
      assert.deepEqual(entries(dir), [], what);
    }
  });
});
