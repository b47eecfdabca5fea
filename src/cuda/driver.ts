/**
 * The CUDA driver API through Deno FFI: one symbol table (the C signature beside each entry),
 * one `check()` that names the failing call and the error's name and text, and disposable
 * handles (`using`) for device memory, pinned host memory, streams, events, modules and graphs,
 * with a FinalizationRegistry only as a backstop.
 *
 * Importing this module never touches the driver; the first use opens libcuda (from
 * $DS_CUDA_DRIVER_PATH, libcuda.so.1, or the usual directories) and a machine without one gets a
 * single LibraryNotFoundError listing every path tried.
 *
 * Failures: every call is checked (CudaError names it); cuMemAlloc out of memory is an
 * OutOfMemoryError naming the bytes asked for and the free/total memory; with DS_SYNC=1 every
 * kernel launch outside a graph capture synchronizes, so a fault is reported as a KernelFaultError
 * naming the kernel that caused it instead of surfacing at some later synchronize.
 */
import { DeviceError } from "../util/errors.ts";
import { cString, CUDA_LIB_DIRS, type LibrarySearch, openLibrary, readCString } from "./library.ts";
import {
  encodeLaunchConfig,
  encodeProgrammaticSerialization,
  LAUNCH_ATTRIBUTE_BYTES,
  LAUNCH_CONFIG_BYTES,
} from "./launch_config.ts";
import {
  TENSOR_MAP_BYTES,
  TENSOR_MAP_INTERLEAVE_NONE,
  TENSOR_MAP_OOB_FILL_NONE,
  tensorMapProblems,
  type TiledTensorMap,
} from "./tensor_map.ts";

const symbols = {
  // CUresult cuInit(unsigned int Flags)
  cuInit: { parameters: ["u32"], result: "i32" },
  // CUresult cuDriverGetVersion(int* driverVersion)
  cuDriverGetVersion: { parameters: ["buffer"], result: "i32" },
  // CUresult cuGetErrorName(CUresult error, const char** pStr)
  cuGetErrorName: { parameters: ["i32", "buffer"], result: "i32" },
  // CUresult cuGetErrorString(CUresult error, const char** pStr)
  cuGetErrorString: { parameters: ["i32", "buffer"], result: "i32" },
  // CUresult cuDeviceGetCount(int* count)
  cuDeviceGetCount: { parameters: ["buffer"], result: "i32" },
  // CUresult cuDeviceGet(CUdevice* device, int ordinal)
  cuDeviceGet: { parameters: ["buffer", "i32"], result: "i32" },
  // CUresult cuDeviceGetName(char* name, int len, CUdevice dev)
  cuDeviceGetName: { parameters: ["buffer", "i32", "i32"], result: "i32" },
  // CUresult cuDeviceGetAttribute(int* pi, CUdevice_attribute attrib, CUdevice dev)
  cuDeviceGetAttribute: { parameters: ["buffer", "i32", "i32"], result: "i32" },
  // CUresult cuDeviceTotalMem_v2(size_t* bytes, CUdevice dev)
  cuDeviceTotalMem_v2: { parameters: ["buffer", "i32"], result: "i32" },
  // CUresult cuDevicePrimaryCtxRetain(CUcontext* pctx, CUdevice dev)
  cuDevicePrimaryCtxRetain: { parameters: ["buffer", "i32"], result: "i32" },
  // CUresult cuCtxSetCurrent(CUcontext ctx)
  cuCtxSetCurrent: { parameters: ["pointer"], result: "i32" },
  // CUresult cuCtxSynchronize(void)
  cuCtxSynchronize: { parameters: [], result: "i32" },
  // CUresult cuMemGetInfo_v2(size_t* free, size_t* total)
  cuMemGetInfo_v2: { parameters: ["buffer", "buffer"], result: "i32" },
  // CUresult cuModuleLoadData(CUmodule* module, const void* image)
  cuModuleLoadData: { parameters: ["buffer", "buffer"], result: "i32" },
  // CUresult cuModuleUnload(CUmodule hmod)
  cuModuleUnload: { parameters: ["pointer"], result: "i32" },
  // CUresult cuModuleGetFunction(CUfunction* hfunc, CUmodule hmod, const char* name)
  cuModuleGetFunction: { parameters: ["buffer", "pointer", "buffer"], result: "i32" },
  // CUresult cuFuncGetAttribute(int* pi, CUfunction_attribute attrib, CUfunction hfunc)
  cuFuncGetAttribute: { parameters: ["buffer", "i32", "pointer"], result: "i32" },
  // CUresult cuFuncSetAttribute(CUfunction hfunc, CUfunction_attribute attrib, int value)
  cuFuncSetAttribute: { parameters: ["pointer", "i32", "i32"], result: "i32" },
  // CUresult cuMemAlloc_v2(CUdeviceptr* dptr, size_t bytesize)
  cuMemAlloc_v2: { parameters: ["buffer", "usize"], result: "i32" },
  // CUresult cuMemFree_v2(CUdeviceptr dptr)
  cuMemFree_v2: { parameters: ["u64"], result: "i32" },
  // CUresult cuMemAllocHost_v2(void** pp, size_t bytesize)
  cuMemAllocHost_v2: { parameters: ["buffer", "usize"], result: "i32" },
  // CUresult cuMemFreeHost(void* p)
  cuMemFreeHost: { parameters: ["pointer"], result: "i32" },
  // CUresult cuMemHostAlloc(void** pp, size_t bytesize, unsigned int Flags)
  cuMemHostAlloc: { parameters: ["buffer", "usize", "u32"], result: "i32" },
  // CUresult cuMemHostGetDevicePointer_v2(CUdeviceptr* pdptr, void* p, unsigned int Flags)
  cuMemHostGetDevicePointer_v2: { parameters: ["buffer", "pointer", "u32"], result: "i32" },
  // CUresult cuMemsetD8Async(CUdeviceptr dstDevice, unsigned char uc, size_t N, CUstream hStream)
  cuMemsetD8Async: { parameters: ["u64", "u8", "usize", "pointer"], result: "i32" },
  // CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void* src, size_t bytes, CUstream s)
  cuMemcpyHtoDAsync_v2: { parameters: ["u64", "buffer", "usize", "pointer"], result: "i32" },
  // Same, from a raw host pointer (pinned memory, whose address a graph captures).
  cuMemcpyHtoDAsync_v2_ptr: {
    name: "cuMemcpyHtoDAsync_v2",
    parameters: ["u64", "pointer", "usize", "pointer"],
    result: "i32",
  },
  // CUresult cuMemcpyDtoHAsync_v2(void* dst, CUdeviceptr src, size_t bytes, CUstream s)
  cuMemcpyDtoHAsync_v2: { parameters: ["buffer", "u64", "usize", "pointer"], result: "i32" },
  cuMemcpyDtoHAsync_v2_ptr: {
    name: "cuMemcpyDtoHAsync_v2",
    parameters: ["pointer", "u64", "usize", "pointer"],
    result: "i32",
  },
  // CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t bytes, CUstream s)
  cuMemcpyDtoDAsync_v2: { parameters: ["u64", "u64", "usize", "pointer"], result: "i32" },
  // CUresult cuTensorMapEncodeTiled(CUtensorMap* tensorMap, CUtensorMapDataType dataType,
  //   cuuint32_t rank, void* globalAddress, const cuuint64_t* globalDim,
  //   const cuuint64_t* globalStrides, const cuuint32_t* boxDim, const cuuint32_t* elementStrides,
  //   CUtensorMapInterleave, CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill)
  // (12.0+; the arguments: ./tensor_map.ts)
  cuTensorMapEncodeTiled: {
    parameters: [
      "buffer",
      "i32",
      "u32",
      "pointer",
      "buffer",
      "buffer",
      "buffer",
      "buffer",
      "i32",
      "i32",
      "i32",
      "i32",
    ],
    result: "i32",
    optional: true,
  },
  // CUresult cuStreamCreate(CUstream* phStream, unsigned int Flags)
  cuStreamCreate: { parameters: ["buffer", "u32"], result: "i32" },
  // CUresult cuStreamDestroy_v2(CUstream hStream)
  cuStreamDestroy_v2: { parameters: ["pointer"], result: "i32" },
  // CUresult cuStreamSynchronize(CUstream hStream)
  cuStreamSynchronize: { parameters: ["pointer"], result: "i32" },
  // CUresult cuStreamWaitEvent(CUstream hStream, CUevent hEvent, unsigned int Flags)
  cuStreamWaitEvent: { parameters: ["pointer", "pointer", "u32"], result: "i32" },
  // CUresult cuEventCreate(CUevent* phEvent, unsigned int Flags)
  cuEventCreate: { parameters: ["buffer", "u32"], result: "i32" },
  // CUresult cuEventDestroy_v2(CUevent hEvent)
  cuEventDestroy_v2: { parameters: ["pointer"], result: "i32" },
  // CUresult cuEventRecord(CUevent hEvent, CUstream hStream)
  cuEventRecord: { parameters: ["pointer", "pointer"], result: "i32" },
  // CUresult cuEventRecordWithFlags(CUevent hEvent, CUstream hStream, unsigned int flags) (11.1+)
  cuEventRecordWithFlags: { parameters: ["pointer", "pointer", "u32"], result: "i32" },
  // CUresult cuEventSynchronize(CUevent hEvent)
  cuEventSynchronize: { parameters: ["pointer"], result: "i32" },
  // CUresult cuEventElapsedTime_v2(float* pMilliseconds, CUevent hStart, CUevent hEnd) (12.8+)
  cuEventElapsedTime_v2: {
    parameters: ["buffer", "pointer", "pointer"],
    result: "i32",
    optional: true,
  },
  // CUresult cuEventElapsedTime(float* pMilliseconds, CUevent hStart, CUevent hEnd) (older)
  cuEventElapsedTime: {
    parameters: ["buffer", "pointer", "pointer"],
    result: "i32",
    optional: true,
  },
  // CUresult cuLaunchKernel(CUfunction f, unsigned gridX, gridY, gridZ, blockX, blockY, blockZ,
  //                         unsigned sharedMemBytes, CUstream hStream, void** kernelParams,
  //                         void** extra)
  cuLaunchKernel: {
    parameters: [
      "pointer",
      "u32",
      "u32",
      "u32",
      "u32",
      "u32",
      "u32",
      "u32",
      "pointer",
      "buffer",
      "pointer",
    ],
    result: "i32",
  },
  // CUresult cuLaunchKernelEx(const CUlaunchConfig* config, CUfunction f, void** kernelParams,
  //                           void** extra) (12.0+; the config's layout: ./launch_config.ts)
  cuLaunchKernelEx: {
    parameters: ["buffer", "pointer", "buffer", "pointer"],
    result: "i32",
    optional: true,
  },
  // CUresult cuLaunchCooperativeKernel(CUfunction f, unsigned gridX, gridY, gridZ, blockX, blockY,
  //                                    blockZ, unsigned sharedMemBytes, CUstream hStream,
  //                                    void** kernelParams)
  // (9.0+): refuses a grid whose blocks cannot all be resident at once, so grid barriers are safe.
  cuLaunchCooperativeKernel: {
    parameters: ["pointer", "u32", "u32", "u32", "u32", "u32", "u32", "u32", "pointer", "buffer"],
    result: "i32",
  },
  // CUresult cuOccupancyMaxActiveBlocksPerMultiprocessor(int* numBlocks, CUfunction func,
  //                                                      int blockSize, size_t dynamicSMemSize)
  cuOccupancyMaxActiveBlocksPerMultiprocessor: {
    parameters: ["buffer", "pointer", "i32", "usize"],
    result: "i32",
  },
  // CUresult cuStreamBeginCapture_v2(CUstream hStream, CUstreamCaptureMode mode)
  cuStreamBeginCapture_v2: { parameters: ["pointer", "i32"], result: "i32" },
  // CUresult cuStreamIsCapturing(CUstream hStream, CUstreamCaptureStatus* captureStatus)
  cuStreamIsCapturing: { parameters: ["pointer", "buffer"], result: "i32" },
  // CUresult cuStreamEndCapture(CUstream hStream, CUgraph* phGraph)
  cuStreamEndCapture: { parameters: ["pointer", "buffer"], result: "i32" },
  // CUresult cuGraphInstantiateWithFlags(CUgraphExec* phGraphExec, CUgraph hGraph,
  //                                      unsigned long long flags)
  cuGraphInstantiateWithFlags: { parameters: ["buffer", "pointer", "u64"], result: "i32" },
  // CUresult cuGraphLaunch(CUgraphExec hGraphExec, CUstream hStream)
  cuGraphLaunch: { parameters: ["pointer", "pointer"], result: "i32" },
  // CUresult cuGraphExecDestroy(CUgraphExec hGraphExec)
  cuGraphExecDestroy: { parameters: ["pointer"], result: "i32" },
  // CUresult cuGraphDestroy(CUgraph hGraph)
  cuGraphDestroy: { parameters: ["pointer"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

type Symbols = Deno.DynamicLibrary<typeof symbols>["symbols"];

export const DRIVER_SEARCH: LibrarySearch = {
  what: "the CUDA driver (libcuda)",
  envVar: "DS_CUDA_DRIVER_PATH",
  sonames: ["libcuda.so.1", "libcuda.so"],
  paths: [
    ...CUDA_LIB_DIRS.map((d) => `${d}/libcuda.so.1`),
    "/usr/local/nvidia/lib64/libcuda.so.1",
    "/usr/lib64/libcuda.so.1",
  ],
};

export class CudaError extends DeviceError {
  constructor(
    readonly call: string,
    readonly code: number,
    readonly errorName: string,
    readonly errorText: string,
  ) {
    super(`${call} failed: ${errorName} (${code}): ${errorText}`);
    this.name = "CudaError";
  }
}

/** CUDA_ERROR_OUT_OF_MEMORY. */
export const CUDA_ERROR_OUT_OF_MEMORY = 2;
/** cuMemHostAlloc flags: usable from every context; mapped into the device address space. */
const CU_MEMHOSTALLOC_PORTABLE = 1;
const CU_MEMHOSTALLOC_DEVICEMAP = 2;

/** cuMemAlloc could not find the bytes: says how many were asked for and how many are free. */
export class OutOfMemoryError extends CudaError {
  constructor(
    call: string,
    code: number,
    errorName: string,
    errorText: string,
    readonly requestedBytes: number,
    readonly freeBytes: number | undefined,
    readonly totalBytes: number | undefined,
  ) {
    super(call, code, errorName, errorText);
    this.name = "OutOfMemoryError";
    const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;
    this.message = `out of device memory: ${call} asked for ${requestedBytes} bytes ` +
      `(${mib(requestedBytes)}); ` +
      (freeBytes === undefined || totalBytes === undefined
        ? "free memory unknown"
        : `${freeBytes} bytes (${mib(freeBytes)}) free of ${totalBytes} (${mib(totalBytes)})`) +
      ` [${errorName}]`;
  }
}

/** cuMemHostAlloc could not pin the bytes: says how many were asked for. */
export class HostOutOfMemoryError extends CudaError {
  constructor(
    call: string,
    code: number,
    errorName: string,
    errorText: string,
    readonly requestedBytes: number,
  ) {
    super(call, code, errorName, errorText);
    this.name = "HostOutOfMemoryError";
    this.message = `out of pinned host memory: ${call} asked for ${requestedBytes} bytes ` +
      `(${(requestedBytes / 2 ** 30).toFixed(2)} GiB) [${errorName}]`;
  }
}

/** A kernel that failed while running (seen by the synchronize after it under DS_SYNC=1). */
export class KernelFaultError extends CudaError {
  constructor(readonly kernel: string, cause: CudaError) {
    super(cause.call, cause.code, cause.errorName, cause.errorText);
    this.name = "KernelFaultError";
    this.message = `kernel ${kernel} faulted: ${cause.errorName} (${cause.code}): ` +
      `${cause.errorText} (DS_SYNC=1: synchronized after its launch)`;
  }
}

/** Whether DS_SYNC=1 asks every launch to synchronize (read once). */
let syncLaunches: boolean | undefined;
export function syncEveryLaunch(): boolean {
  if (syncLaunches === undefined) {
    try {
      syncLaunches = Deno.env.get("DS_SYNC") === "1";
    } catch {
      syncLaunches = false;
    }
  }
  return syncLaunches;
}

export const DeviceAttribute = {
  CLOCK_RATE: 13,
  MULTIPROCESSOR_COUNT: 16,
  MEMORY_CLOCK_RATE: 36,
  GLOBAL_MEMORY_BUS_WIDTH: 37,
  L2_CACHE_SIZE: 38,
  COMPUTE_CAPABILITY_MAJOR: 75,
  COMPUTE_CAPABILITY_MINOR: 76,
  MAX_SHARED_MEMORY_PER_MULTIPROCESSOR: 81,
  MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: 97,
} as const;

export const FunctionAttribute = {
  MAX_THREADS_PER_BLOCK: 0,
  SHARED_SIZE_BYTES: 1,
  LOCAL_SIZE_BYTES: 3,
  NUM_REGS: 4,
  MAX_DYNAMIC_SHARED_SIZE_BYTES: 8,
} as const;

/** The opened driver: raw symbols plus the error check. */
export class Driver {
  readonly sym: Symbols;
  readonly path: string;

  constructor() {
    const { lib, path } = openLibrary(DRIVER_SEARCH, symbols);
    this.sym = lib.symbols;
    this.path = path;
    this.check("cuInit", this.sym.cuInit(0));
  }

  /** Throws CudaError naming the call, the CUresult's name and its description. */
  check(call: string, code: number): void {
    if (code === 0) return;
    throw this.error(call, code);
  }

  /** The CudaError for a failed call (not thrown). */
  error(call: string, code: number): CudaError {
    return new CudaError(
      call,
      code,
      this.#errorText("cuGetErrorName", code),
      this.#errorText("cuGetErrorString", code),
    );
  }

  /** cuMemAlloc, with out-of-memory reported as OutOfMemoryError (bytes asked, free, total). */
  memAlloc(bytes: number): bigint {
    const out = new BigUint64Array(1);
    const code = this.sym.cuMemAlloc_v2(out, BigInt(Math.max(bytes, 1)));
    if (code === CUDA_ERROR_OUT_OF_MEMORY) {
      const free = new BigUint64Array(1), total = new BigUint64Array(1);
      const known = this.sym.cuMemGetInfo_v2(free, total) === 0;
      const e = this.error("cuMemAlloc", code);
      throw new OutOfMemoryError(
        e.call,
        code,
        e.errorName,
        e.errorText,
        bytes,
        known ? Number(free[0]) : undefined,
        known ? Number(total[0]) : undefined,
      );
    }
    this.check("cuMemAlloc", code);
    return out[0];
  }

  /**
   * cuMemHostAlloc(PORTABLE | DEVICEMAP): pinned host memory mapped into the device's address
   * space; out of memory is a HostOutOfMemoryError naming the bytes asked for.
   */
  memHostAllocMapped(bytes: number): { host: Deno.PointerValue; device: bigint } {
    const out = new BigUint64Array(1);
    const code = this.sym.cuMemHostAlloc(
      out,
      BigInt(Math.max(bytes, 1)),
      CU_MEMHOSTALLOC_PORTABLE | CU_MEMHOSTALLOC_DEVICEMAP,
    );
    if (code === CUDA_ERROR_OUT_OF_MEMORY) {
      const e = this.error("cuMemHostAlloc", code);
      throw new HostOutOfMemoryError(e.call, code, e.errorName, e.errorText, bytes);
    }
    this.check("cuMemHostAlloc", code);
    const host = ptr(out[0]);
    try {
      const device = this.out64(
        "cuMemHostGetDevicePointer",
        (o) => this.sym.cuMemHostGetDevicePointer_v2(o, host, 0),
      );
      return { host, device };
    } catch (e) {
      this.sym.cuMemFreeHost(host);
      throw e;
    }
  }

  /** Whether `stream` is being captured into a graph (synchronizing it then is an error). */
  isCapturing(stream: Deno.PointerValue): boolean {
    const status = new Int32Array(1);
    this.check("cuStreamIsCapturing", this.sym.cuStreamIsCapturing(stream, status));
    return status[0] !== 0;
  }

  #errorText(which: "cuGetErrorName" | "cuGetErrorString", code: number): string {
    const out = new BigUint64Array(1);
    if (this.sym[which](code, out) !== 0 || out[0] === 0n) return `CUresult ${code}`;
    return readCString(Deno.UnsafePointer.create(out[0]));
  }

  /** Out-parameter helper: calls fn with an 8-byte buffer, checks, returns the value. */
  out64(call: string, fn: (out: BigUint64Array<ArrayBuffer>) => number): bigint {
    const out = new BigUint64Array(1);
    this.check(call, fn(out));
    return out[0];
  }

  outI32(call: string, fn: (out: Int32Array<ArrayBuffer>) => number): number {
    const out = new Int32Array(1);
    this.check(call, fn(out));
    return out[0];
  }

  get version(): number {
    return this.outI32("cuDriverGetVersion", (o) => this.sym.cuDriverGetVersion(o));
  }

  /** Whether this driver exports cuLaunchKernelEx (12.0+), which launch attributes need. */
  get hasLaunchKernelEx(): boolean {
    return this.sym.cuLaunchKernelEx != null;
  }

  elapsedMs(start: Deno.PointerValue, end: Deno.PointerValue): number {
    const out = new Float32Array(1);
    const fn = this.sym.cuEventElapsedTime_v2 ?? this.sym.cuEventElapsedTime;
    if (!fn) {
      throw new Error(
        "the CUDA driver exports neither cuEventElapsedTime_v2 nor cuEventElapsedTime",
      );
    }
    this.check("cuEventElapsedTime", fn(out, start, end));
    return out[0];
  }
}

const ptr = (v: bigint): Deno.PointerValue => Deno.UnsafePointer.create(v);

/** Frees handles that were never disposed (a backstop: prefer `using` or dispose()). */
const leaks = new FinalizationRegistry<() => void>((release) => {
  try {
    release();
  } catch {
    // The context may already be gone at exit.
  }
});

abstract class Handle implements Disposable {
  #alive = true;
  protected constructor(release: () => void) {
    this.#release = release;
    leaks.register(this, release, this);
  }
  readonly #release: () => void;
  get alive(): boolean {
    return this.#alive;
  }
  dispose(): void {
    if (!this.#alive) return;
    this.#alive = false;
    leaks.unregister(this);
    this.#release();
  }
  [Symbol.dispose](): void {
    this.dispose();
  }
}

export interface DeviceInfo {
  readonly ordinal: number;
  readonly name: string;
  readonly computeCapability: readonly [number, number];
  readonly arch: string;
  readonly multiprocessors: number;
  readonly l2Bytes: number;
  readonly totalMemBytes: number;
  readonly maxSharedPerBlockOptin: number;
  readonly driverVersion: number;
}

/** The driver, one device and its primary context, made current on this thread. */
export class Cuda {
  readonly driver: Driver;
  readonly device: number;
  readonly info: DeviceInfo;
  readonly #ctx: Deno.PointerValue;

  constructor(ordinal = 0) {
    const d = (this.driver = new Driver());
    const count = d.outI32("cuDeviceGetCount", (o) => d.sym.cuDeviceGetCount(o));
    if (ordinal < 0 || ordinal >= count) {
      throw new RangeError(`CUDA device ${ordinal} requested; this machine has ${count}`);
    }
    this.device = d.outI32("cuDeviceGet", (o) => d.sym.cuDeviceGet(o, ordinal));
    this.#ctx = ptr(
      d.out64("cuDevicePrimaryCtxRetain", (o) => d.sym.cuDevicePrimaryCtxRetain(o, this.device)),
    );
    d.check("cuCtxSetCurrent", d.sym.cuCtxSetCurrent(this.#ctx));
    const attr = (a: number) =>
      d.outI32("cuDeviceGetAttribute", (o) => d.sym.cuDeviceGetAttribute(o, a, this.device));
    const nameBuf = new Uint8Array(256);
    d.check("cuDeviceGetName", d.sym.cuDeviceGetName(nameBuf, nameBuf.length, this.device));
    const cc = [
      attr(DeviceAttribute.COMPUTE_CAPABILITY_MAJOR),
      attr(DeviceAttribute.COMPUTE_CAPABILITY_MINOR),
    ] as const;
    this.info = Object.freeze({
      ordinal,
      name: new TextDecoder().decode(nameBuf.subarray(0, nameBuf.indexOf(0))),
      computeCapability: cc,
      arch: `sm_${cc[0]}${cc[1]}`,
      multiprocessors: attr(DeviceAttribute.MULTIPROCESSOR_COUNT),
      l2Bytes: attr(DeviceAttribute.L2_CACHE_SIZE),
      totalMemBytes: Number(
        d.out64("cuDeviceTotalMem", (o) => d.sym.cuDeviceTotalMem_v2(o, this.device)),
      ),
      maxSharedPerBlockOptin: attr(DeviceAttribute.MAX_SHARED_MEMORY_PER_BLOCK_OPTIN),
      driverVersion: d.version,
    });
  }

  synchronize(): void {
    this.driver.check("cuCtxSynchronize", this.driver.sym.cuCtxSynchronize());
  }

  memInfo(): { free: number; total: number } {
    const free = new BigUint64Array(1), total = new BigUint64Array(1);
    this.driver.check("cuMemGetInfo", this.driver.sym.cuMemGetInfo_v2(free, total));
    return { free: Number(free[0]), total: Number(total[0]) };
  }

  alloc(bytes: number): DeviceBuffer {
    return new DeviceBuffer(this.driver, bytes);
  }

  allocHost(bytes: number): HostBuffer {
    return new HostBuffer(this.driver, bytes);
  }

  /**
   * Pinned host memory the kernels address directly (zero-copy over PCIe): `ptr` is its device
   * address, so a mapped buffer stands wherever a device buffer's address is taken.
   */
  allocHostMapped(bytes: number): MappedHostBuffer {
    return new MappedHostBuffer(this.driver, bytes);
  }

  stream(): Stream {
    return new Stream(this.driver);
  }

  event(timing = true): Event {
    return new Event(this.driver, timing);
  }

  /**
   * The CUtensorMap (128 opaque bytes, to be copied to 64-byte-aligned device memory) of the
   * tiled tensor `m` at device address `address`; a RangeError naming every field outside the
   * driver's limits, CudaError naming cuTensorMapEncodeTiled if the driver still refuses.
   */
  encodeTensorMapTiled(m: TiledTensorMap, address: bigint): Uint8Array {
    const problems = tensorMapProblems(m);
    if (address % 16n !== 0n) {
      problems.push(`global address 0x${address.toString(16)}; allowed: 16-byte aligned`);
    }
    if (problems.length > 0) {
      throw new RangeError(`cuTensorMapEncodeTiled: ${problems.join("; ")}`);
    }
    const fn = this.driver.sym.cuTensorMapEncodeTiled;
    if (fn === null) {
      throw new DeviceError(
        "cuTensorMapEncodeTiled: the driver lacks it (needs CUDA 12.0 or newer)",
      );
    }
    const map = new Uint8Array(TENSOR_MAP_BYTES);
    const u64 = (xs: readonly number[]) => new BigUint64Array(xs.map(BigInt));
    this.driver.check(
      "cuTensorMapEncodeTiled",
      fn(
        map,
        m.dataType,
        m.globalDim.length,
        ptr(address),
        u64(m.globalDim),
        u64(m.globalStrides),
        new Uint32Array(m.boxDim),
        new Uint32Array(m.elementStrides),
        TENSOR_MAP_INTERLEAVE_NONE,
        m.swizzle,
        m.l2Promotion,
        TENSOR_MAP_OOB_FILL_NONE,
      ),
    );
    return map;
  }

  loadModule(image: Uint8Array, name: string): Module {
    return new Module(this.driver, image, name);
  }
}

let shared: Cuda | undefined;

/** The process-wide CUDA context on device $DS_CUDA_DEVICE (default 0), opened on first use. */
export function cuda(): Cuda {
  return (shared ??= new Cuda(Number(Deno.env.get("DS_CUDA_DEVICE") ?? 0)));
}

/** Device memory. `ptr` is the CUdeviceptr. */
export class DeviceBuffer extends Handle {
  readonly ptr: bigint;
  constructor(readonly driver: Driver, readonly bytes: number) {
    if (!Number.isSafeInteger(bytes) || bytes < 0) {
      throw new RangeError(`cuMemAlloc: ${bytes} bytes; allowed: an integer >= 0`);
    }
    const p = driver.memAlloc(bytes);
    super(() => driver.check("cuMemFree", driver.sym.cuMemFree_v2(p)));
    this.ptr = p;
  }

  upload(src: ArrayBufferView, stream: Stream, offset = 0): void {
    this.#range(offset, src.byteLength, "upload");
    const bytes = new Uint8Array(src.buffer, src.byteOffset, src.byteLength);
    this.driver.check(
      "cuMemcpyHtoDAsync",
      this.driver.sym.cuMemcpyHtoDAsync_v2(
        this.ptr + BigInt(offset),
        bytes,
        BigInt(bytes.length),
        stream.handle,
      ),
    );
  }

  /** Copies into `dst` and waits for the stream (pageable host memory). */
  download(dst: ArrayBufferView, stream: Stream, offset = 0): void {
    this.#range(offset, dst.byteLength, "download");
    const bytes = new Uint8Array(dst.buffer, dst.byteOffset, dst.byteLength);
    this.driver.check(
      "cuMemcpyDtoHAsync",
      this.driver.sym.cuMemcpyDtoHAsync_v2(
        bytes,
        this.ptr + BigInt(offset),
        BigInt(bytes.length),
        stream.handle,
      ),
    );
    stream.synchronize();
  }

  fill8(value: number, stream: Stream, offset = 0, bytes = this.bytes - offset): void {
    this.#range(offset, bytes, "fill");
    this.driver.check(
      "cuMemsetD8Async",
      this.driver.sym.cuMemsetD8Async(
        this.ptr + BigInt(offset),
        value,
        BigInt(bytes),
        stream.handle,
      ),
    );
  }

  #range(offset: number, bytes: number, what: string): void {
    this.#alive(what);
    checkRange(offset, bytes, this.bytes, what);
  }

  #alive(what: string): void {
    if (!this.alive) {
      throw new RangeError(`${what}: the ${this.bytes}-byte device buffer was freed`);
    }
  }
}

/** Throws unless [offset, offset + bytes) lies inside a buffer of `size` bytes. */
function checkRange(offset: number, bytes: number, size: number, what: string): void {
  if (
    !Number.isSafeInteger(offset) || !Number.isSafeInteger(bytes) || offset < 0 || bytes < 0 ||
    offset + bytes > size
  ) {
    throw new RangeError(`${what} of ${bytes} bytes at ${offset} outside a ${size}-byte buffer`);
  }
}

/**
 * Pinned (page-locked) host memory: async copies from it overlap and can be graph-captured.
 * After dispose, `buffer` and the copies throw (views taken earlier must not be used: they would
 * read freed memory).
 */
export class HostBuffer extends Handle {
  readonly ptr: Deno.PointerValue;
  readonly #buffer: ArrayBuffer;
  constructor(readonly driver: Driver, readonly bytes: number) {
    const p = ptr(
      driver.out64(
        "cuMemAllocHost",
        (o) => driver.sym.cuMemAllocHost_v2(o, BigInt(Math.max(bytes, 1))),
      ),
    );
    super(() => driver.check("cuMemFreeHost", driver.sym.cuMemFreeHost(p)));
    this.ptr = p;
    this.#buffer = Deno.UnsafePointerView.getArrayBuffer(p!, Math.max(bytes, 1));
  }

  /** The pinned memory as an ArrayBuffer; throws once the buffer is disposed. */
  get buffer(): ArrayBuffer {
    this.#alive("buffer");
    return this.#buffer;
  }

  #alive(what: string): void {
    if (!this.alive) throw new RangeError(`${what}: the ${this.bytes}-byte host buffer was freed`);
  }

  /** Async copy of `bytes` from this pinned buffer (at `offset`) to device memory. */
  copyTo(dst: bigint, stream: Stream, bytes = this.bytes, offset = 0): void {
    this.#alive("copyTo");
    checkRange(offset, bytes, this.bytes, "copyTo");
    this.driver.check(
      "cuMemcpyHtoDAsync",
      this.driver.sym.cuMemcpyHtoDAsync_v2_ptr(
        dst,
        Deno.UnsafePointer.offset(this.ptr!, offset),
        BigInt(bytes),
        stream.handle,
      ),
    );
  }

  /** Async copy from device memory into this pinned buffer. */
  copyFrom(src: bigint, stream: Stream, bytes = this.bytes, offset = 0): void {
    this.#alive("copyFrom");
    checkRange(offset, bytes, this.bytes, "copyFrom");
    this.driver.check(
      "cuMemcpyDtoHAsync",
      this.driver.sym.cuMemcpyDtoHAsync_v2_ptr(
        Deno.UnsafePointer.offset(this.ptr!, offset),
        src,
        BigInt(bytes),
        stream.handle,
      ),
    );
  }
}

/**
 * Pinned host memory mapped into the device address space (cuMemHostAlloc with DEVICEMAP): `ptr`
 * is the device address kernels read and write over PCIe, `host` the same bytes seen from the
 * CPU. After dispose both throw.
 */
export class MappedHostBuffer extends Handle {
  readonly ptr: bigint;
  readonly #hostPtr: Deno.PointerValue;
  readonly #host: ArrayBuffer;
  constructor(readonly driver: Driver, readonly bytes: number) {
    if (!Number.isSafeInteger(bytes) || bytes < 0) {
      throw new RangeError(`cuMemHostAlloc: ${bytes} bytes; allowed: an integer >= 0`);
    }
    const { host, device } = driver.memHostAllocMapped(bytes);
    super(() => driver.check("cuMemFreeHost", driver.sym.cuMemFreeHost(host)));
    this.ptr = device;
    this.#hostPtr = host;
    // One ArrayBuffer view is limited to 2^53 bytes, far above any host memory here.
    this.#host = Deno.UnsafePointerView.getArrayBuffer(host!, Math.max(bytes, 1));
  }

  /** The bytes as the CPU sees them (read after the stream that wrote them is synchronized). */
  get host(): ArrayBuffer {
    if (!this.alive) throw new RangeError(`host: the ${this.bytes}-byte mapped buffer was freed`);
    return this.#host;
  }

  /** Waits for `stream` (kernels may write through the mapping), then copies into `dst`. */
  download(dst: ArrayBufferView, stream: Stream, offset = 0): void {
    checkRange(offset, dst.byteLength, this.bytes, "download");
    stream.synchronize();
    new Uint8Array(dst.buffer, dst.byteOffset, dst.byteLength).set(
      new Uint8Array(this.host, offset, dst.byteLength),
    );
  }

  /** Waits for `stream`, then sets the bytes from the CPU (no device memset on host memory). */
  fill8(value: number, stream: Stream, offset = 0, bytes = this.bytes - offset): void {
    checkRange(offset, bytes, this.bytes, "fill");
    stream.synchronize();
    new Uint8Array(this.host, offset, bytes).fill(value);
  }

  /** Async DMA copy of `bytes` at `offset` to device memory (the copy engines, not the SMs). */
  copyTo(dst: bigint, stream: Stream, bytes = this.bytes, offset = 0): void {
    checkRange(offset, bytes, this.bytes, "copyTo");
    if (!this.alive) throw new RangeError(`copyTo: the ${this.bytes}-byte mapped buffer was freed`);
    this.driver.check(
      "cuMemcpyHtoDAsync",
      this.driver.sym.cuMemcpyHtoDAsync_v2_ptr(
        dst,
        Deno.UnsafePointer.offset(this.#hostPtr!, offset),
        BigInt(bytes),
        stream.handle,
      ),
    );
  }
}

export class Stream extends Handle {
  readonly handle: Deno.PointerValue;
  constructor(readonly driver: Driver) {
    // CU_STREAM_NON_BLOCKING: no implicit synchronization with the legacy default stream.
    const h = ptr(driver.out64("cuStreamCreate", (o) => driver.sym.cuStreamCreate(o, 1)));
    super(() => driver.check("cuStreamDestroy", driver.sym.cuStreamDestroy_v2(h)));
    this.handle = h;
  }

  synchronize(): void {
    this.driver.check("cuStreamSynchronize", this.driver.sym.cuStreamSynchronize(this.handle));
  }

  /** Later work on this stream waits for `event` (no host wait; a fork/join inside a capture). */
  waitEvent(event: Event): void {
    this.driver.check(
      "cuStreamWaitEvent",
      this.driver.sym.cuStreamWaitEvent(this.handle, event.handle, 0),
    );
  }

  copyDeviceToDevice(dst: bigint, src: bigint, bytes: number): void {
    this.driver.check(
      "cuMemcpyDtoDAsync",
      this.driver.sym.cuMemcpyDtoDAsync_v2(dst, src, BigInt(bytes), this.handle),
    );
  }

  /**
   * Records everything launched on this stream by `body` into a graph, ready to replay. The
   * capture always ends and the captured graph is always destroyed; the first error wins (the
   * body's over cuStreamEndCapture's, which a failed body usually causes; instantiation's over
   * the graph's destroy).
   */
  capture(body: () => void): GraphExec {
    const d = this.driver;
    d.check(
      "cuStreamBeginCapture",
      d.sym.cuStreamBeginCapture_v2(this.handle, 1 /* THREAD_LOCAL */),
    );
    let bodyFailed = false, bodyError: unknown;
    try {
      body();
    } catch (e) {
      bodyFailed = true;
      bodyError = e;
    }
    const out = new BigUint64Array(1);
    const ended = d.sym.cuStreamEndCapture(this.handle, out);
    const graph = out[0];
    const destroyGraph = () => graph === 0n ? 0 : d.sym.cuGraphDestroy(ptr(graph));
    if (bodyFailed) {
      destroyGraph();
      throw bodyError;
    }
    if (ended !== 0) {
      destroyGraph();
      d.check("cuStreamEndCapture", ended);
    }
    let exec: GraphExec;
    try {
      exec = new GraphExec(d, ptr(graph));
    } catch (e) {
      destroyGraph();
      throw e;
    }
    const destroyed = destroyGraph();
    if (destroyed !== 0) {
      exec.dispose();
      d.check("cuGraphDestroy", destroyed);
    }
    return exec;
  }
}

export class GraphExec extends Handle {
  readonly handle: Deno.PointerValue;
  constructor(readonly driver: Driver, graph: Deno.PointerValue) {
    const h = ptr(
      driver.out64(
        "cuGraphInstantiateWithFlags",
        (o) => driver.sym.cuGraphInstantiateWithFlags(o, graph, 0n),
      ),
    );
    super(() => driver.check("cuGraphExecDestroy", driver.sym.cuGraphExecDestroy(h)));
    this.handle = h;
  }

  launch(stream: Stream): void {
    this.driver.check("cuGraphLaunch", this.driver.sym.cuGraphLaunch(this.handle, stream.handle));
    if (syncEveryLaunch()) {
      // A graph's kernels cannot be told apart here: the fault names the graph launch.
      const code = this.driver.sym.cuStreamSynchronize(stream.handle);
      if (code !== 0) {
        throw new KernelFaultError(
          "(a kernel of a CUDA graph)",
          this.driver.error("cuGraphLaunch", code),
        );
      }
    }
  }
}

export class Event extends Handle {
  readonly handle: Deno.PointerValue;
  constructor(readonly driver: Driver, timing: boolean) {
    const h = ptr(
      driver.out64("cuEventCreate", (o) => driver.sym.cuEventCreate(o, timing ? 0 : 2)),
    );
    super(() => driver.check("cuEventDestroy", driver.sym.cuEventDestroy_v2(h)));
    this.handle = h;
  }

  record(stream: Stream): void {
    this.driver.check("cuEventRecord", this.driver.sym.cuEventRecord(this.handle, stream.handle));
  }

  /**
   * Records this event into the graph `stream` is capturing, as an event record node
   * (CU_EVENT_RECORD_EXTERNAL): every replay then records it, so a timing event marks a point of
   * the replayed graph. A plain record() during capture only orders streams inside the graph.
   * The driver refuses it outside a capture.
   */
  recordInCapture(stream: Stream): void {
    this.driver.check(
      "cuEventRecordWithFlags(CU_EVENT_RECORD_EXTERNAL)",
      this.driver.sym.cuEventRecordWithFlags(this.handle, stream.handle, 1),
    );
  }

  synchronize(): void {
    this.driver.check("cuEventSynchronize", this.driver.sym.cuEventSynchronize(this.handle));
  }

  /** Milliseconds from `start` to this event (both recorded and complete). */
  since(start: Event): number {
    return this.driver.elapsedMs(start.handle, this.handle);
  }
}

export interface FunctionInfo {
  readonly registers: number;
  readonly staticSharedBytes: number;
  readonly localBytes: number;
  readonly maxThreadsPerBlock: number;
}

export class Module extends Handle {
  readonly handle: Deno.PointerValue;
  constructor(readonly driver: Driver, image: Uint8Array, readonly name: string) {
    const h = ptr(
      driver.out64(
        `cuModuleLoadData(${name})`,
        (o) => driver.sym.cuModuleLoadData(o, image as Uint8Array<ArrayBuffer>),
      ),
    );
    super(() => driver.check("cuModuleUnload", driver.sym.cuModuleUnload(h)));
    this.handle = h;
  }

  function(symbol: string): KernelFunction {
    const d = this.driver;
    const h = ptr(
      d.out64(
        `cuModuleGetFunction(${symbol})`,
        (o) => d.sym.cuModuleGetFunction(o, this.handle, cString(symbol)),
      ),
    );
    return new KernelFunction(d, h, symbol);
  }
}

export type Dim3 = readonly [number, number, number];

export class KernelFunction {
  constructor(
    readonly driver: Driver,
    readonly handle: Deno.PointerValue,
    readonly symbol: string,
  ) {}

  info(): FunctionInfo {
    const a = (attr: number) =>
      this.driver.outI32(
        `cuFuncGetAttribute(${this.symbol})`,
        (o) => this.driver.sym.cuFuncGetAttribute(o, attr, this.handle),
      );
    return {
      registers: a(FunctionAttribute.NUM_REGS),
      staticSharedBytes: a(FunctionAttribute.SHARED_SIZE_BYTES),
      localBytes: a(FunctionAttribute.LOCAL_SIZE_BYTES),
      maxThreadsPerBlock: a(FunctionAttribute.MAX_THREADS_PER_BLOCK),
    };
  }

  /** Blocks of `blockSize` threads one multiprocessor holds at once (registers, shared memory). */
  maxActiveBlocksPerMultiprocessor(blockSize: number, dynamicSharedBytes = 0): number {
    return this.driver.outI32(
      `cuOccupancyMaxActiveBlocksPerMultiprocessor(${this.symbol})`,
      (o) =>
        this.driver.sym.cuOccupancyMaxActiveBlocksPerMultiprocessor(
          o,
          this.handle,
          blockSize,
          BigInt(dynamicSharedBytes),
        ),
    );
  }

  setMaxDynamicShared(bytes: number): void {
    this.driver.check(
      `cuFuncSetAttribute(${this.symbol})`,
      this.driver.sym.cuFuncSetAttribute(
        this.handle,
        FunctionAttribute.MAX_DYNAMIC_SHARED_SIZE_BYTES,
        bytes,
      ),
    );
  }

  /** A launch slot: 8 bytes per argument, the kernelParams array pointing into them. */
  slot(argCount: number, block: Dim3, sharedBytes = 0, stream?: Stream): LaunchSlot {
    return new LaunchSlot(this, argCount, block, sharedBytes, stream);
  }
}

/**
 * The runtime side of a generated launcher's KernelSlot: the launcher writes argument values into
 * `args`; `launch` hands cuLaunchKernel the array of pointers to them. With `programmatic` set,
 * the launch goes through cuLaunchKernelEx with programmatic stream serialization (Programmatic
 * Dependent Launch): the kernel may start while the previous kernel of the stream still runs, so
 * it must begin with `griddepcontrol.wait` (the decode-step kernels' pdl_begin()); whoever sets
 * it checks that the device and driver support it (src/runtime/pdl.ts).
 */
export class LaunchSlot {
  readonly args: DataView;
  readonly #params: BigUint64Array<ArrayBuffer>;
  stream: Stream | undefined;
  /** Launch with programmatic stream serialization (set per launch by the decode plan). */
  programmatic = false;
  /**
   * Launch cooperatively (cuLaunchCooperativeKernel): the driver refuses a grid whose blocks
   * cannot all be resident at once, which a kernel with grid barriers needs (the persistent step).
   */
  cooperative = false;
  /** cuLaunchKernelEx's CUlaunchConfig and its one CUlaunchAttribute, reused by every launch. */
  readonly #config = new Uint8Array(LAUNCH_CONFIG_BYTES);
  readonly #attrs = new Uint8Array(LAUNCH_ATTRIBUTE_BYTES);
  readonly #attrsAddress: bigint;

  constructor(
    readonly fn: KernelFunction,
    readonly argCount: number,
    readonly block: Dim3,
    readonly sharedBytes: number,
    stream?: Stream,
  ) {
    const storage = new ArrayBuffer(8 * argCount);
    this.args = new DataView(storage);
    this.#params = new BigUint64Array(argCount);
    const base = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(storage)));
    for (let i = 0; i < argCount; i++) this.#params[i] = base + BigInt(8 * i);
    this.stream = stream;
    encodeProgrammaticSerialization(new DataView(this.#attrs.buffer));
    this.#attrsAddress = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(this.#attrs)));
  }

  launch(grid: Dim3): void {
    if (grid[0] === 0 || grid[1] === 0 || grid[2] === 0) return; // an empty grid launches nothing
    if (this.programmatic && !this.cooperative) this.#launchProgrammatic(grid);
    else this.#launchPlain(grid, this.cooperative);
    if (syncEveryLaunch()) this.#syncAfterLaunch();
  }

  /**
   * cuLaunchKernel, or cuLaunchCooperativeKernel (same arguments but `extra`) when `cooperative`.
   */
  #launchPlain(grid: Dim3, cooperative: boolean): void {
    const d = this.fn.driver;
    const shape = [
      this.fn.handle,
      grid[0],
      grid[1],
      grid[2],
      this.block[0],
      this.block[1],
      this.block[2],
      this.sharedBytes,
      this.stream?.handle ?? null,
      this.#params,
    ] as const;
    if (cooperative) {
      d.check(
        `cuLaunchCooperativeKernel(${this.fn.symbol})`,
        d.sym.cuLaunchCooperativeKernel(...shape),
      );
    } else d.check(`cuLaunchKernel(${this.fn.symbol})`, d.sym.cuLaunchKernel(...shape, null));
  }

  #launchProgrammatic(grid: Dim3): void {
    const d = this.fn.driver;
    const launchEx = d.sym.cuLaunchKernelEx;
    if (!launchEx) {
      throw new Error(
        `cuLaunchKernelEx(${this.fn.symbol}): this CUDA driver (${d.path}) does not export ` +
          "cuLaunchKernelEx (needs 12.0+); launch without programmatic serialization (DS_PDL=0)",
      );
    }
    encodeLaunchConfig(new DataView(this.#config.buffer), {
      grid,
      block: this.block,
      sharedBytes: this.sharedBytes,
      stream: BigInt(Deno.UnsafePointer.value(this.stream?.handle ?? null)),
      attrs: this.#attrsAddress,
      numAttrs: 1,
    });
    d.check(
      `cuLaunchKernelEx(${this.fn.symbol}, programmatic)`,
      launchEx(this.#config, this.fn.handle, this.#params, null),
    );
  }

  /** DS_SYNC=1: waits for this launch and names this kernel if it faulted (not while capturing). */
  #syncAfterLaunch(): void {
    const d = this.fn.driver;
    const stream = this.stream?.handle ?? null;
    if (d.isCapturing(stream)) return;
    const code = stream === null ? d.sym.cuCtxSynchronize() : d.sym.cuStreamSynchronize(stream);
    if (code !== 0) {
      throw new KernelFaultError(
        this.fn.symbol,
        d.error(`cuLaunchKernel(${this.fn.symbol})`, code),
      );
    }
  }
}
