import assert from "node:assert/strict";
import {
  encodeLaunchConfig,
  encodeProgrammaticSerialization,
  LAUNCH_ATTRIBUTE_BYTES,
  LAUNCH_CONFIG_BYTES,
} from "../src/cuda/launch_config.ts";
import {
  choosePdl,
  parsePdlChoice,
  PDL_DEFAULT,
  PDL_MIN_DRIVER,
  type PdlTarget,
  pdlUnavailable,
} from "../src/runtime/pdl.ts";
import { KERNELS } from "../src/codegen/kernels.ts";
import { renderKernels } from "../src/codegen/render.ts";
import { loadSpecs } from "../src/cli/specs.ts";
import { KernelCompiler } from "../src/cuda/compiler.ts";
import { UsageError } from "../src/util/errors.ts";

/** A buffer of `n` bytes of 0xab, so bytes the encoders leave unwritten show. */
const dirty = (n: number) => new DataView(new Uint8Array(n).fill(0xab).buffer);

Deno.test("launch config: CUlaunchConfig fields at cuda.h's offsets, padding zeroed", () => {
  const v = dirty(LAUNCH_CONFIG_BYTES);
  encodeLaunchConfig(v, {
    grid: [7, 3, 2],
    block: [256, 1, 1],
    sharedBytes: 49152,
    stream: 0x7f00_1234_5678n,
    attrs: 0x5555_0000_1000n,
    numAttrs: 1,
  });
  assert.equal(LAUNCH_CONFIG_BYTES, 56);
  const u32s = [0, 4, 8, 12, 16, 20, 24, 28, 48, 52].map((o) => v.getUint32(o, true));
  assert.deepEqual(u32s, [7, 3, 2, 256, 1, 1, 49152, 0, 1, 0]);
  assert.equal(v.getBigUint64(32, true), 0x7f00_1234_5678n); // hStream, 8-byte aligned
  assert.equal(v.getBigUint64(40, true), 0x5555_0000_1000n); // attrs
});

Deno.test("launch config: out-of-range fields and short buffers are refused by name", () => {
  const ok = { grid: [1, 1, 1], block: [32, 1, 1], sharedBytes: 0, stream: 0n, attrs: 0n } as const;
  assert.throws(
    () => encodeLaunchConfig(dirty(56), { ...ok, grid: [-1, 1, 1], numAttrs: 0 }),
    /CUlaunchConfig\.gridDimX: got -1; allowed: an integer in \[0, 2\^32\)/,
  );
  assert.throws(
    () => encodeLaunchConfig(dirty(56), { ...ok, sharedBytes: 1.5, numAttrs: 0 }),
    /CUlaunchConfig\.sharedMemBytes: got 1.5/,
  );
  assert.throws(
    () => encodeLaunchConfig(dirty(48), { ...ok, numAttrs: 0 }),
    /CUlaunchConfig needs 56 bytes; the buffer has 48/,
  );
  assert.throws(() => encodeProgrammaticSerialization(dirty(64)), /needs 72 bytes/);
});

Deno.test("launch config: the programmatic-serialization attribute is id 6, int value 1", () => {
  const v = dirty(LAUNCH_ATTRIBUTE_BYTES);
  encodeProgrammaticSerialization(v);
  assert.equal(LAUNCH_ATTRIBUTE_BYTES, 72);
  const bytes = new Uint8Array(v.buffer);
  const expected = new Uint8Array(72);
  expected[0] = 6; // CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION, then 4 bytes of pad
  expected[8] = 1; // value.programmaticStreamSerializationAllowed = 1; the union's rest zero
  assert.deepEqual(bytes, expected);
});

const HOPPER: PdlTarget = {
  computeCapability: [9, 0],
  driverVersion: 12080,
  hasLaunchKernelEx: true,
};

Deno.test("pdl: DS_PDL spellings; anything else names the source, the value and the choices", () => {
  assert.equal(parsePdlChoice(undefined, "$DS_PDL"), PDL_DEFAULT);
  assert.equal(parsePdlChoice("", "$DS_PDL"), PDL_DEFAULT);
  assert.equal(PDL_DEFAULT, "off"); // bench:pdl measured 0.93x-1.05x (docs/perf-notes.md)
  assert.equal(parsePdlChoice("auto", "$DS_PDL"), "auto");
  assert.equal(parsePdlChoice("1", "$DS_PDL"), "on");
  assert.equal(parsePdlChoice(" ON ", "$DS_PDL"), "on");
  assert.equal(parsePdlChoice("0", "$DS_PDL"), "off");
  assert.equal(parsePdlChoice("off", "$DS_PDL"), "off");
  assert.throws(
    () => parsePdlChoice("yes", "$DS_PDL"),
    (e) =>
      e instanceof UsageError &&
      e.message === '$DS_PDL: got "yes"; allowed: auto, on, 1, off, 0',
  );
});

Deno.test("pdl: supported only on sm_90+ with cuLaunchKernelEx and a 12.3+ driver", () => {
  assert.equal(pdlUnavailable(HOPPER), null);
  assert.equal(pdlUnavailable({ ...HOPPER, computeCapability: [10, 0] }), null);
  assert.match(
    pdlUnavailable({ ...HOPPER, computeCapability: [8, 0] })!,
    /the device is sm_80; griddepcontrol needs sm_90/,
  );
  assert.match(pdlUnavailable({ ...HOPPER, hasLaunchKernelEx: false })!, /cuLaunchKernelEx/);
  assert.match(
    pdlUnavailable({ ...HOPPER, driverVersion: PDL_MIN_DRIVER - 10 })!,
    /12020 is older than 12030/,
  );
  assert.equal(choosePdl("auto", HOPPER), true);
  assert.equal(choosePdl("off", HOPPER), false);
  const ampere = { ...HOPPER, computeCapability: [8, 6] as const };
  assert.equal(choosePdl("auto", ampere), false, "auto falls back where unsupported");
  assert.throws(
    () => choosePdl("on", ampere),
    (e) =>
      e instanceof UsageError &&
      /^\$?DS_PDL: programmatic dependent launch asked for, but the device is sm_86/.test(
        e.message,
      ),
  );
});

/** The kernel body: the lines after the one closing the parameter list. */
function bodyLines(source: string): string[] {
  const lines = source.split("\n");
  const open = lines.findIndex((l, i) =>
    l.endsWith(") {") && lines.slice(0, i).some((p) => p.includes('extern "C" __global__'))
  );
  assert.ok(open > 0, "kernel body not found");
  return lines.slice(open + 1);
}

/**
 * Lines resolve may run before pdl_begin(): comments, shared declarations, the block indices and
 * the query label (q and channels only; templates/resolve.cu.hbs says why that is safe).
 */
const RESOLVE_PRE_WAIT =
  /^\s*(\/\/.*|__shared__ .*;|const int sh = blockIdx\.x, b = blockIdx\.z;|build_query_label\(q, channels, b, sh, s_scratch, &s_query\);)$/;

Deno.test("pdl: every programmatic kernel begins with pdl_begin(); no other kernel calls it", async () => {
  const prelude = renderKernels((await loadSpecs())[0]).find((k) => k.id === "score")!.source;
  const def = prelude.slice(prelude.indexOf("DS_INLINE void pdl_begin()"));
  const fn = def.slice(0, def.indexOf("\n}\n"));
  assert.match(
    fn,
    /#if defined\(__CUDA_ARCH__\) && __CUDA_ARCH__ >= 900\n\s+asm volatile\("griddepcontrol\.wait;" ::: "memory"\);\n\s+asm volatile\("griddepcontrol\.launch_dependents;" ::: "memory"\);\n#endif/,
    "griddepcontrol must sit inside the sm_90 guard, the wait before the trigger",
  );
  const programmatic = new Map(KERNELS.map((k) => [k.id, k.programmatic]));
  assert.deepEqual(
    KERNELS.filter((k) => k.programmatic).map((k) => k.id).sort(),
    ["append", "dense", "merge", "resolve", "score", "select", "sort_selection", "sparse"],
  );
  for (const spec of await loadSpecs()) {
    for (const k of renderKernels(spec)) {
      const where = `${spec.variant}/${k.file}`;
      const body = bodyLines(k.source);
      const at = body.findIndex((l) => l.trim().startsWith("pdl_begin();"));
      if (!programmatic.get(k.id)) {
        assert.equal(at, -1, `${where}: not programmatic but calls pdl_begin()`);
        continue;
      }
      assert.ok(at >= 0, `${where}: programmatic but never calls pdl_begin()`);
      const before = body.slice(0, at).filter((l) => l.trim() !== "");
      if (k.id === "resolve") {
        const bad = before.filter((l) => !RESOLVE_PRE_WAIT.test(l));
        assert.deepEqual(bad, [], `${where}: statements before pdl_begin()`);
      } else {
        assert.deepEqual(before, [], `${where}: pdl_begin() is not the first statement`);
      }
    }
  }
});

/** Memory instructions of a PTX entry before its first griddepcontrol.wait (ld.param excluded). */
function beforeWait(ptx: string): { loads: string[]; writes: string[] } {
  const wait = ptx.indexOf("griddepcontrol.wait;");
  assert.ok(wait > 0, "no griddepcontrol.wait in the sm_90 PTX");
  const head = ptx.slice(0, wait).split("\n").map((l) => l.trim());
  const mem = (l: string, ops: string) =>
    new RegExp(`^(@%p\\d+ )?(${ops})\\.`).test(l) && !/\.(param|shared|local)\b/.test(l);
  return {
    loads: head.filter((l) => mem(l, "ld|ldu")),
    writes: head.filter((l) => mem(l, "st|atom|red")),
  };
}

Deno.test("pdl: griddepcontrol only for sm_90+, before every global access of the PTX", async () => {
  const variant = "ds_d128_q32_kv8_p16_fp16_r16b8_group";
  const spec = (await loadSpecs()).find((s) => s.variant === variant);
  if (!spec) throw new Error(`no example spec gives ${variant}`);
  const compiler = new KernelCompiler({ cache: null });
  for (
    const k of renderKernels(spec).filter((k) => KERNELS.find((d) => d.id === k.id)!.programmatic)
  ) {
    const where: string = `${variant}/${k.file}`;
    const old = compiler.compile({ source: k.source, programName: k.file, arch: "sm_80" });
    assert.equal(old.log, "", `${where} sm_80: NVRTC log:\n${old.log}`);
    assert.ok(!old.ptx.includes("griddepcontrol"), `${where}: griddepcontrol in sm_80 PTX`);
    const hopper = compiler.compile({ source: k.source, programName: k.file, arch: "sm_90" });
    assert.equal(hopper.log, "", `${where} sm_90: NVRTC log:\n${hopper.log}`);
    assert.ok(hopper.ptx.includes("griddepcontrol.launch_dependents;"), `${where}: no trigger`);
    const { loads, writes } = beforeWait(hopper.ptx);
    assert.deepEqual(writes, [], `${where}: global writes before griddepcontrol.wait`);
    // resolve reads q and channels for its query label first (see its template); nothing else may
    // read global memory before waiting for the previous kernel.
    if (k.id !== "resolve") {
      assert.deepEqual(loads, [], `${where}: global loads before griddepcontrol.wait`);
    } else {
      assert.ok(loads.length > 0, `${where}: expected the query label's loads before the wait`);
    }
  }
});
