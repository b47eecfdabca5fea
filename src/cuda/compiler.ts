/**
 * Run-time compilation with caching: in-process memo -> on-disk cache -> NVRTC.
 * Generated kernels must compile cleanly: a warning is treated as an error.
 */
import { cacheKey, DiskCache } from "./compile_cache.ts";
import { CompileError, type CompileOutput, type Nvrtc, nvrtc } from "./nvrtc.ts";
import { firstLine } from "../util/errors.ts";

export const DEFAULT_ARCH = "sm_90";

export interface CompileRequest {
  readonly source: string;
  /** File name used in compiler messages, e.g. `score.cu`. */
  readonly programName: string;
  /** Target, e.g. `sm_90` (CUBIN + PTX) or `compute_90` (PTX only). */
  readonly arch?: string;
  readonly extraOptions?: readonly string[];
}

export type CompileOrigin = "memory" | "disk" | "nvrtc";

export interface CompiledKernel extends CompileOutput {
  readonly key: string;
  readonly origin: CompileOrigin;
  /** Why a disk entry was thrown away and rebuilt, when it was. */
  readonly recovered?: string;
}

export class KernelCompiler {
  readonly #memo = new Map<string, CompiledKernel>();
  readonly #nvrtc: Nvrtc;
  readonly cache: DiskCache | null;
  readonly stats = { memory: 0, disk: 0, nvrtc: 0, recovered: 0 };
  /** Why the disk cache could not be used, each reason once (the kernels still compile). */
  readonly cacheProblems: string[] = [];
  readonly #log: (line: string) => void;

  constructor(
    opts: { nvrtc?: Nvrtc; cache?: DiskCache | null; log?: (line: string) => void } = {},
  ) {
    this.#nvrtc = opts.nvrtc ?? nvrtc();
    this.cache = opts.cache === undefined ? new DiskCache() : opts.cache;
    this.#log = opts.log ?? console.error;
  }

  /** Records (and logs once) a disk-cache problem; compiling goes on without the cache. */
  #cacheProblem(reason: string): void {
    if (this.cacheProblems.includes(reason)) return;
    this.cacheProblems.push(reason);
    this.#log(`kernel cache: ${reason}; compiling without the disk cache`);
  }

  get nvrtcVersion(): string {
    return this.#nvrtc.versionString;
  }

  /** NVRTC's major version (wgmma needs 12 or newer). */
  get nvrtcMajor(): number {
    return this.#nvrtc.version.major;
  }

  optionsFor(req: CompileRequest): string[] {
    return [
      `--gpu-architecture=${req.arch ?? DEFAULT_ARCH}`,
      "--std=c++17",
      ...(req.extraOptions ?? []),
    ];
  }

  compile(req: CompileRequest): CompiledKernel {
    const options = this.optionsFor(req);
    const key = cacheKey({
      nvrtcVersion: this.nvrtcVersion,
      arch: req.arch ?? DEFAULT_ARCH,
      options,
      source: req.source,
    });
    const memo = this.#memo.get(key);
    if (memo) {
      this.stats.memory++;
      return { ...memo, origin: "memory" };
    }
    let recovered: string | undefined;
    let entryUsable = true;
    if (this.cache) {
      const found = this.cache.read(key);
      if (found.status === "hit") {
        this.stats.disk++;
        const hit: CompiledKernel = { ...found.output, key, origin: "disk" };
        this.#memo.set(key, hit);
        return hit;
      }
      if (found.status === "corrupt") {
        recovered = found.reason;
        this.stats.recovered++;
        try {
          this.cache.remove(key);
        } catch (e) {
          this.#cacheProblem(`cannot remove a corrupt entry: ${firstLine(e)}`);
        }
      }
      if (found.status === "unusable") this.#cacheProblem(found.reason);
      entryUsable = found.status !== "unusable";
    }
    const output = this.#nvrtc.compile(req.source, req.programName, options);
    if (/warning/i.test(output.log)) {
      throw new CompileError(req.programName, output.log, req.source);
    }
    this.stats.nvrtc++;
    if (this.cache && entryUsable) {
      try {
        this.cache.write(key, output);
      } catch (e) {
        this.#cacheProblem(`cannot write ${this.cache.pathOf(key)}: ${firstLine(e)}`);
      }
    }
    const compiled: CompiledKernel = { ...output, key, origin: "nvrtc", recovered };
    this.#memo.set(key, compiled);
    return compiled;
  }
}
