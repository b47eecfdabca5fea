/**
 * NVRTC through Deno FFI: compile CUDA C++ source to PTX and CUBIN at run time.
 *
 * Library: $DS_NVRTC_PATH, then the loader's sonames (CUDA 13, 12, 11.2), then
 * /usr/local/cuda/lib64, then the project-local copy fetched by scripts/fetch-nvrtc.sh
 * (.cache/nvrtc, Debian's libnvrtc11.2 = CUDA 11.8) for CPU-only machines.
 */
import {
  cString,
  cStringArray,
  CUDA_LIB_DIRS,
  dirOf,
  join,
  type LibrarySearch,
  openLibrary,
  readCString,
} from "./library.ts";
import { packageRoot } from "../util/package_root.ts";
import { DeviceError } from "../util/errors.ts";

const symbols = {
  // nvrtcResult nvrtcVersion(int* major, int* minor)
  nvrtcVersion: { parameters: ["buffer", "buffer"], result: "i32" },
  // nvrtcResult nvrtcCreateProgram(nvrtcProgram* prog, const char* src, const char* name,
  //                                int numHeaders, const char* const* headers,
  //                                const char* const* includeNames)
  nvrtcCreateProgram: {
    parameters: ["buffer", "buffer", "buffer", "i32", "pointer", "pointer"],
    result: "i32",
  },
  // nvrtcResult nvrtcCompileProgram(nvrtcProgram prog, int numOptions, const char* const* options)
  nvrtcCompileProgram: { parameters: ["pointer", "i32", "buffer"], result: "i32" },
  // nvrtcResult nvrtcGetProgramLogSize(nvrtcProgram prog, size_t* logSizeRet)
  nvrtcGetProgramLogSize: { parameters: ["pointer", "buffer"], result: "i32" },
  // nvrtcResult nvrtcGetProgramLog(nvrtcProgram prog, char* log)
  nvrtcGetProgramLog: { parameters: ["pointer", "buffer"], result: "i32" },
  // nvrtcResult nvrtcGetPTXSize(nvrtcProgram prog, size_t* ptxSizeRet)
  nvrtcGetPTXSize: { parameters: ["pointer", "buffer"], result: "i32" },
  // nvrtcResult nvrtcGetPTX(nvrtcProgram prog, char* ptx)
  nvrtcGetPTX: { parameters: ["pointer", "buffer"], result: "i32" },
  // nvrtcResult nvrtcGetCUBINSize(nvrtcProgram prog, size_t* cubinSizeRet)
  nvrtcGetCUBINSize: { parameters: ["pointer", "buffer"], result: "i32" },
  // nvrtcResult nvrtcGetCUBIN(nvrtcProgram prog, char* cubin)
  nvrtcGetCUBIN: { parameters: ["pointer", "buffer"], result: "i32" },
  // nvrtcResult nvrtcDestroyProgram(nvrtcProgram* prog)
  nvrtcDestroyProgram: { parameters: ["buffer"], result: "i32" },
  // const char* nvrtcGetErrorString(nvrtcResult result)
  nvrtcGetErrorString: { parameters: ["i32"], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

/** nvrtcResult names, by value (nvrtc.h). */
const RESULT_NAMES = [
  "NVRTC_SUCCESS",
  "NVRTC_ERROR_OUT_OF_MEMORY",
  "NVRTC_ERROR_PROGRAM_CREATION_FAILURE",
  "NVRTC_ERROR_INVALID_INPUT",
  "NVRTC_ERROR_INVALID_PROGRAM",
  "NVRTC_ERROR_INVALID_OPTION",
  "NVRTC_ERROR_COMPILATION",
  "NVRTC_ERROR_BUILTIN_OPERATION_FAILURE",
  "NVRTC_ERROR_NO_NAME_EXPRESSIONS_AFTER_COMPILATION",
  "NVRTC_ERROR_NO_LOWERED_NAMES_BEFORE_COMPILATION",
  "NVRTC_ERROR_NAME_EXPRESSION_NOT_VALID",
  "NVRTC_ERROR_INTERNAL_ERROR",
  "NVRTC_ERROR_TIME_FILE_WRITE_FAILED",
];

export const NVRTC_SEARCH: LibrarySearch = {
  what: "NVRTC (libnvrtc)",
  envVar: "DS_NVRTC_PATH",
  sonames: ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2", "libnvrtc.so"],
  paths: [
    ...CUDA_LIB_DIRS.flatMap((d) => [`${d}/libnvrtc.so.13`, `${d}/libnvrtc.so.12`]),
    join(packageRoot(), ".cache/nvrtc/usr/lib/x86_64-linux-gnu/libnvrtc.so.11.2"),
  ],
};

export class NvrtcError extends DeviceError {
  constructor(readonly call: string, readonly code: number, detail: string) {
    super(`${call} failed: ${RESULT_NAMES[code] ?? `nvrtcResult ${code}`} (${detail})`);
    this.name = "NvrtcError";
  }
}

/** A failed compile: the NVRTC log with every reported line of the generated source quoted. */
export class CompileError extends DeviceError {
  constructor(readonly programName: string, readonly log: string, readonly source: string) {
    super(`NVRTC could not compile ${programName}:\n${annotateLog(log, source, programName)}`);
    this.name = "CompileError";
  }
}

/** Quotes the source lines (with two lines of context) that each log line points at. */
export function annotateLog(log: string, source: string, programName: string): string {
  const lines = source.split("\n");
  const out: string[] = [];
  const at = new RegExp(`^(?:.*/)?${escapeRegExp(programName)}\\((\\d+)\\): (.*)$`);
  for (const entry of log.split("\n")) {
    if (entry.trim() === "") continue;
    out.push(entry);
    const m = at.exec(entry);
    if (!m) continue;
    const n = Number(m[1]);
    for (let i = Math.max(1, n - 2); i <= Math.min(lines.length, n + 2); i++) {
      out.push(`  ${i === n ? ">" : " "} ${String(i).padStart(5)} | ${lines[i - 1]}`);
    }
  }
  return out.join("\n");
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

export interface CompileOutput {
  readonly ptx: string;
  /** Present when compiling for a real architecture (sm_XX). */
  readonly cubin?: Uint8Array;
  /** Compiler messages; empty on a clean compile. */
  readonly log: string;
}

export class Nvrtc {
  readonly #lib: Deno.DynamicLibrary<typeof symbols>;
  readonly path: string;
  readonly version: { major: number; minor: number };

  constructor() {
    const { lib, path } = openLibrary(NVRTC_SEARCH, symbols, preloadBuiltins);
    this.#lib = lib;
    this.path = path;
    const major = new Int32Array(1), minor = new Int32Array(1);
    this.#check("nvrtcVersion", this.#lib.symbols.nvrtcVersion(major, minor));
    this.version = { major: major[0], minor: minor[0] };
  }

  get versionString(): string {
    return `${this.version.major}.${this.version.minor}`;
  }

  #check(call: string, code: number): void {
    if (code === 0) return;
    throw new NvrtcError(call, code, readCString(this.#lib.symbols.nvrtcGetErrorString(code)));
  }

  /** Compiles `source`; throws CompileError with the annotated log on failure. */
  compile(source: string, programName: string, options: readonly string[]): CompileOutput {
    const s = this.#lib.symbols;
    const handle = new BigUint64Array(1);
    this.#check(
      "nvrtcCreateProgram",
      s.nvrtcCreateProgram(handle, cString(source), cString(programName), 0, null, null),
    );
    const prog = Deno.UnsafePointer.create(handle[0]);
    let failed = true;
    try {
      const opts = cStringArray(options);
      const result = s.nvrtcCompileProgram(prog, options.length, opts.array);
      const log = this.#readString(prog, "nvrtcGetProgramLog");
      if (result === RESULT_NAMES.indexOf("NVRTC_ERROR_COMPILATION")) {
        throw new CompileError(programName, log, source);
      }
      this.#check("nvrtcCompileProgram", result);
      const ptx = this.#readString(prog, "nvrtcGetPTX");
      const realArch = options.some((o) => /^(--gpu-architecture|-arch)=sm_/.test(o));
      const cubin = realArch ? this.#readBytes(prog, "nvrtcGetCUBIN") : undefined;
      failed = false;
      return { ptx, cubin, log };
    } finally {
      // After a failure (a CompileError above all) the destroy status is ignored: checking it
      // here would replace the error the caller needs with a secondary one.
      const destroyed = s.nvrtcDestroyProgram(handle);
      if (!failed) this.#check("nvrtcDestroyProgram", destroyed);
    }
  }

  #readBytes(
    prog: Deno.PointerValue,
    getter: "nvrtcGetCUBIN" | "nvrtcGetPTX" | "nvrtcGetProgramLog",
  ): Uint8Array {
    const s = this.#lib.symbols;
    const sizeOf = {
      nvrtcGetCUBIN: s.nvrtcGetCUBINSize,
      nvrtcGetPTX: s.nvrtcGetPTXSize,
      nvrtcGetProgramLog: s.nvrtcGetProgramLogSize,
    }[getter];
    const size = new BigUint64Array(1);
    this.#check(`${getter}Size`, sizeOf(prog, size));
    const buf = new Uint8Array(Number(size[0]));
    if (buf.length > 0) this.#check(getter, s[getter](prog, buf));
    return buf;
  }

  #readString(prog: Deno.PointerValue, getter: "nvrtcGetPTX" | "nvrtcGetProgramLog"): string {
    const bytes = this.#readBytes(prog, getter);
    const end = bytes.indexOf(0);
    return new TextDecoder().decode(end >= 0 ? bytes.subarray(0, end) : bytes);
  }

  close(): void {
    this.#lib.close();
  }
}

/**
 * NVRTC dlopens its builtins library by soname at compile time; loading it first from the same
 * directory makes that lookup succeed without LD_LIBRARY_PATH (the project-local 11.8 copy).
 */
function preloadBuiltins(nvrtcPath: string): void {
  const dir = dirOf(nvrtcPath);
  if (!dir) return;
  try {
    for (const entry of Deno.readDirSync(dir)) {
      if (entry.name.startsWith("libnvrtc-builtins.so")) {
        try {
          Deno.dlopen(join(dir, entry.name), {});
          return;
        } catch {
          // Try the next name; NVRTC reports a missing builtins library itself.
        }
      }
    }
  } catch {
    // Unreadable directory: let the dlopen of NVRTC itself report.
  }
}

let shared: Nvrtc | undefined;

/** The process-wide NVRTC instance, opened on first use. */
export function nvrtc(): Nvrtc {
  return (shared ??= new Nvrtc());
}
