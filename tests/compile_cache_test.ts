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

Deno.test("compile cache: a cache directory that cannot be created compiles without caching, saying so", async () => {
  await withTempDir((dir) => {
    // A regular file where the cache directory's parent should be: not writable even for root.
    const blocker = join(dir, "not-a-directory");
    Deno.writeTextFileSync(blocker, "");
    const said: string[] = [];
    const compiler = new KernelCompiler({
      cache: new DiskCache(join(blocker, "cache")),
      log: (line) => said.push(line),
    });
    const a = compiler.compile(request);
    assert.equal(a.origin, "nvrtc");
    assert.ok(a.cubin && a.cubin.length > 0);
    assert.equal(compiler.compile(request).origin, "memory");
    assert.equal(said.length, 1, said.join("\n"));
    assert.match(
      said[0],
      /^kernel cache: .*not-a-directory\/cache\/kernels\/.*; compiling without the disk cache$/,
    );
    assert.deepEqual(compiler.cacheProblems.length, 1);
  });
});

Deno.test("compile cache: a directory where an entry should be is left alone and the kernel compiles", async () => {
  await withTempDir((dir) => {
    const cache = new DiskCache(dir);
    const key = new KernelCompiler({ cache: null }).compile(request).key;
    Deno.mkdirSync(cache.pathOf(key), { recursive: true });
    Deno.writeTextFileSync(join(cache.pathOf(key), "someone-elses-file"), "keep me");
    assert.equal(cache.read(key).status, "unusable");
    const said: string[] = [];
    const compiler = new KernelCompiler({ cache, log: (line) => said.push(line) });
    const a = compiler.compile(request);
    assert.equal(a.origin, "nvrtc");
    assert.equal(a.key, key);
    assert.ok(
      said.length >= 1 && said.every((l) => l.startsWith("kernel cache: ")),
      said.join("\n"),
    );
    assert.equal(
      Deno.readTextFileSync(join(cache.pathOf(key), "someone-elses-file")),
      "keep me",
      "the directory and its content are untouched",
    );
  });
});

Deno.test("compile cache: two processes compiling the same kernel at once both succeed, one whole entry", async () => {
  await withTempDir(async (dir) => {
    const cacheDir = join(dir, "cache");
    const script = join(dir, "compile_once.ts");
    const compilerUrl = new URL("../src/cuda/compiler.ts", import.meta.url).href;
    const cacheUrl = new URL("../src/cuda/compile_cache.ts", import.meta.url).href;
    // Each process says it is ready, waits for the go file, then compiles: the two compiles and
    // the two writes of the same entry overlap.
    Deno.writeTextFileSync(
      script,
      `import { KernelCompiler } from ${JSON.stringify(compilerUrl)};
import { DiskCache } from ${JSON.stringify(cacheUrl)};
const [cacheDir, ready, go] = Deno.args;
const compiler = new KernelCompiler({ cache: new DiskCache(cacheDir) });
Deno.writeTextFileSync(ready, "");
const deadline = Date.now() + 60_000;
while (true) {
  try { Deno.statSync(go); break; } catch { /* not yet */ }
  if (Date.now() > deadline) throw new Error("no go file");
  await new Promise((r) => setTimeout(r, 5));
}
const out = compiler.compile({ source: ${JSON.stringify(TINY)}, programName: "tiny.cu" });
console.log(JSON.stringify({ origin: out.origin, key: out.key, problems: compiler.cacheProblems }));
`,
    );
    const go = join(dir, "go");
    const children = [0, 1].map((i) =>
      new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", script, cacheDir, join(dir, `ready-${i}`), go],
        stdout: "piped",
        stderr: "piped",
      }).spawn()
    );
    const deadline = Date.now() + 60_000;
    const ready = () =>
      [0, 1].every((i) => {
        try {
          Deno.statSync(join(dir, `ready-${i}`));
          return true;
        } catch {
          return false;
        }
      });
    while (!ready() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    Deno.writeTextFileSync(go, "");
    const results = await Promise.all(children.map((c) => c.output()));
    const dec = new TextDecoder();
    const reports = results.map((r, i) => {
      assert.equal(r.code, 0, `process ${i}: ${dec.decode(r.stderr)}`);
      return JSON.parse(dec.decode(r.stdout));
    });
    assert.equal(reports[0].key, reports[1].key);
    for (const r of reports) {
      assert.ok(r.origin === "nvrtc" || r.origin === "disk", r.origin);
      assert.deepEqual(r.problems, []);
    }
    const files = entries(cacheDir);
    assert.equal(files.length, 1, `one entry, no temporary files: ${files.join(", ")}`);
    const hit = new DiskCache(cacheDir).read(reports[0].key);
    assert.equal(hit.status, "hit", "the entry is whole (its checksum matches)");
    console.log(`concurrent compiles: ${reports.map((r) => r.origin).join(" + ")}, one entry`);
  });
});
