import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { candidatesOf } from "../src/cuda/library.ts";
import { cuda, DRIVER_SEARCH } from "../src/cuda/driver.ts";
import { NoGpuError } from "../src/util/errors.ts";

// The driver module is imported above on a machine without a GPU: importing must not touch the
// driver. Using it must fail once, clearly, listing every place it looked.
const driverPresent = candidatesOf(DRIVER_SEARCH).some((p) => p.startsWith("/") && existsSync(p));

Deno.test({
  name: "driver: without a driver, first use gives one error listing every path tried",
  ignore: driverPresent, // a machine with libcuda (a GPU host) runs deno task test:gpu instead
  fn() {
    Deno.env.set("DS_CUDA_DRIVER_PATH", "/nonexistent/libcuda.so.1");
    try {
      let err: Error | undefined;
      try {
        cuda();
      } catch (e) {
        err = e as Error;
      }
      assert.ok(err, "cuda() must throw without a driver");
      assert.equal(err.name, "LibraryNotFoundError");
      assert.ok(err instanceof NoGpuError, "a missing driver is a NoGpuError");
      assert.match(err.message, /^the CUDA driver \(libcuda\) could not be loaded \(.*tried /);
      assert.match(err.message, /\/nonexistent\/libcuda\.so\.1 \(from DS_CUDA_DRIVER_PATH\)/);
      assert.ok(!err.message.includes("\n"), "one line");
      assert.ok(
        !/Could not open library:\s*Could not open library/.test(err.message),
        "the loader's prefix is not repeated",
      );
      for (const p of ["libcuda.so.1", "/usr/local/cuda/lib64/libcuda.so.1"]) {
        assert.ok(err.message.includes(`${p},`), `the message lists ${p}`);
      }
    } finally {
      Deno.env.delete("DS_CUDA_DRIVER_PATH");
    }
  },
});
