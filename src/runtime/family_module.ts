/**
 * A loaded kernel family (src/codegen/families.ts): one compiled module, a launch slot per kernel,
 * and a typed `launch` that packs the arguments in signature order from the family's description
 * (the same list that rendered the CUDA parameters), so call sites name arguments, never offsets.
 */
import { type ArgsOf, type FamilyKernel, familySymbol } from "../codegen/families.ts";
import type { Cuda, Dim3, LaunchSlot, Module, Stream } from "../cuda/driver.ts";
import { sharedCompiler } from "./variant.ts";

const camel = (snake: string) => snake.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());

export class FamilyModule<T extends Record<string, FamilyKernel>> implements Disposable {
  readonly #module: Module;
  readonly #slots: Map<keyof T, LaunchSlot>;

  constructor(
    cuda: Cuda,
    readonly table: T,
    source: string,
    programName: string,
    dtype: "fp16" | "bf16",
    stream?: Stream,
  ) {
    const compiled = sharedCompiler().compile({ source, programName, arch: cuda.info.arch });
    if (!compiled.cubin) throw new Error(`${programName}: NVRTC produced no CUBIN`);
    this.#module = cuda.loadModule(compiled.cubin, programName);
    try {
      this.#slots = new Map(
        Object.entries(table).map(([id, k]) => [
          id as keyof T,
          this.#module.function(familySymbol(k, dtype)).slot(
            k.args.length,
            [k.threads, 1, 1],
            0,
            stream,
          ),
        ]),
      );
    } catch (e) {
      this.#module.dispose();
      throw e;
    }
  }

  /** Points every kernel's launches at `stream`. */
  bindStream(stream: Stream): void {
    for (const s of this.#slots.values()) s.stream = stream;
  }

  /** Packs `args` (by name, in the description's order) and launches `id` on `grid`. */
  launch<K extends keyof T & string>(id: K, grid: Dim3, args: ArgsOf<T[K]>): void {
    const slot = this.#slots.get(id)!;
    const v = slot.args;
    const values = args as Record<string, bigint | number>;
    this.table[id].args.forEach((a, i) => {
      const x = values[camel(a.name)];
      switch (a.kind) {
        case "ptr":
        case "u64":
          v.setBigUint64(8 * i, x as bigint, true);
          break;
        case "i32":
          v.setInt32(8 * i, x as number, true);
          break;
        case "u32":
          v.setUint32(8 * i, x as number, true);
          break;
        case "f32":
          v.setFloat32(8 * i, x as number, true);
          break;
      }
    });
    slot.launch(grid);
  }

  [Symbol.dispose](): void {
    this.#module.dispose();
  }
}
