/**
 * `deno task pack:gpu`: packs into .gpu/ (git-ignored) what a CUDA machine without Deno or
 * network needs to run the GPU tasks: the Deno binary (xz) and the runtime npm dependencies
 * (node_modules subset, tar.xz). `bash scripts/gpu-run.sh test:gpu` unpacks and runs there.
 */
import { join } from "node:path";
import { packageRoot } from "../src/util/package_root.ts";

const root = packageRoot();
const out = join(root, ".gpu");
Deno.mkdirSync(out, { recursive: true });

async function sh(cmd: string): Promise<void> {
  const p = await new Deno.Command("bash", { args: ["-c", cmd], cwd: root }).output();
  if (!p.success) throw new Error(`${cmd}\n${new TextDecoder().decode(p.stderr)}`);
}

const denoBin = Deno.execPath();
const denoPack = join(out, "deno.xz");
const stamp = join(out, "deno.version");
const version = Deno.version.deno;
let have = "";
try {
  have = Deno.readTextFileSync(stamp);
} catch { /* first pack */ }
if (have !== version) {
  console.log(`compressing ${denoBin} (Deno ${version}) ...`);
  // -9e: about a minute once per Deno version, and 1 MB less of the 64 MiB a device call carries
  // (30.7 -> 29.7 MB for Deno 2.9.6).
  await sh(`xz -T2 -9e -c '${denoBin}' > '${denoPack}.tmp' && mv '${denoPack}.tmp' '${denoPack}'`);
  Deno.writeTextFileSync(stamp, version);
}
/**
 * Root dependencies used only to build (scripts/build_npm.ts type-checks and emits the npm
 * package with ts-morph); the GPU tasks never load them, so the pack leaves them out.
 */
const BUILD_ONLY = ["ts-morph"];

/** The root's run-time dependencies and everything they depend on, as installed. */
function runtimeClosure(): string[] {
  const read = (dir: string) => JSON.parse(Deno.readTextFileSync(join(dir, "package.json")));
  const roots = Object.keys(read(root).dependencies ?? {}).filter((n) => !BUILD_ONLY.includes(n));
  const seen = new Set<string>();
  const visit = (name: string, optional: boolean) => {
    const dir = join(root, "node_modules", name);
    if (seen.has(name)) return;
    try {
      Deno.statSync(dir);
    } catch {
      if (optional) return;
      throw new Error(`node_modules/${name} is missing: run ./ds once to install dependencies`);
    }
    seen.add(name);
    const pkg = read(dir);
    for (const dep of Object.keys(pkg.dependencies ?? {})) visit(dep, false);
    for (const dep of Object.keys(pkg.optionalDependencies ?? {})) visit(dep, true);
  };
  for (const name of roots) visit(name, false);
  return [...seen].sort();
}
const entries = runtimeClosure().map((n) => `node_modules/${n}`);
console.log(`vendoring ${entries.length} npm packages: ${entries.join(" ")}`);
await sh(
  `tar -cf - ${
    entries.join(" ")
  } | xz -T2 -6 > .gpu/node_modules.tar.xz.tmp && mv .gpu/node_modules.tar.xz.tmp .gpu/node_modules.tar.xz`,
);
let total = 0;
for (const f of Deno.readDirSync(out)) {
  const size = Deno.statSync(join(out, f.name)).size;
  total += size;
  console.log(`${f.name.padEnd(24)} ${(size / 2 ** 20).toFixed(1)} MiB`);
}
console.log(
  `.gpu/ holds ${
    (total / 2 ** 20).toFixed(1)
  } MiB; on the GPU machine: bash scripts/gpu-run.sh test:gpu`,
);
if (total > 40 * 2 ** 20) {
  console.error("the pack exceeds 40 MiB");
  Deno.exit(1);
}
