/**
 * Builds the npm package `double-sparsity` into dist/npm/, doing what dnt would (dnt comes from
 * JSR, which this project does not depend on):
 *
 * 1. Collects the modules reachable from the entry points (ENTRY_POINTS: `.`, `./dsl`,
 *    `./codegen`, `./reference`, `./interop`, each a mod.ts of src/) and fails if one imports
 *    something outside the pure part of src/ (src/cuda, src/runtime, src/decoding, src/quality
 *    and src/checkpoint use Deno FFI or Deno APIs), a package other than the dependencies and
 *    `node:` built-ins, or uses the `Deno` global.
 * 2. Type-checks and emits them with the TypeScript compiler (through ts-morph): ES2022 modules
 *    and declarations in dist/npm/esm/, with `./x.ts` imports rewritten to `./x.js`.
 * 3. Writes package.json and copies templates/ (codegen/render.js reads ../../templates/),
 *    npm/README.md (the package's own README, for Node users) and LICENSE.
 * 4. Tests what `npm pack` produces under Node, in a temporary directory: type-checks
 *    npm/types_check.ts against the declarations, runs npm/smoke.mjs (every entry point, a
 *    codegen round trip checked against generated/) and the README's example, whose output must
 *    be the one the README shows.
 *
 * Usage: deno task build:npm [--npm-install]
 *   --npm-install  install the package's dependencies from the npm registry for step 4; by
 *                  default the workspace's node_modules/<dependency> are linked (no network).
 */
import { type Diagnostic, Project, ts } from "ts-morph";
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, posix, relative } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { VERSION } from "../src/version.ts";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const SRC = join(ROOT, "src");
const OUT = join(ROOT, "dist", "npm");
/** Where the sources sit in the in-memory TypeScript project; nothing is written there. */
const STAGE = join(ROOT, "dist", ".npm-stage");
const NAME = "double-sparsity";
const DESCRIPTION = "Double Sparsity decode attention: a TypeScript DSL for attention variants, " +
  "CUDA kernel code generation and a CPU reference implementation.";
/** The parts of src/ that use no Deno API (nor FFI), and so can go into the package. */
const PURE_DIRS = ["dsl", "codegen", "reference", "interop", "util"];
const PURE_FILES = ["mod.ts", "version.ts"];
/**
 * Bare imports allowed besides `node:` built-ins; versions come from the root package.json.
 * (ts-morph is only needed to build the package, not to run it: the launchers are plain text.)
 */
const DEPENDENCIES = ["handlebars"];

/** Files of the package beside esm/ and templates/: its README (from npm/) and the license. */
const PACKAGE_DOCS = ["README.md", "LICENSE"];
const DOC_SOURCES: Record<string, string> = {
  "README.md": join(ROOT, "npm", "README.md"),
  LICENSE: join(ROOT, "LICENSE"),
};

class BuildError extends Error {}

const isModule = (name: string) =>
  name.endsWith(".ts") && !name.endsWith(".d.ts") && !name.endsWith("_test.ts");

/**
 * Package subpath -> module of src/: the package's public API (the same modules `deno task
 * doc:html` documents and tests/api_docs_test.ts checks).
 */
export const ENTRY_POINTS: Readonly<Record<string, string>> = {
  ".": "mod.ts",
  "./dsl": "dsl/mod.ts",
  "./codegen": "codegen/mod.ts",
  "./reference": "reference/mod.ts",
  "./interop": "interop/mod.ts",
};

const isPure = (path: string) =>
  PURE_FILES.includes(path) || PURE_DIRS.includes(path.split("/")[0]) && path.includes("/");

/** The string literal naming a module, for imports, re-exports, `import()` and import types. */
function moduleSpecifier(node: ts.Node): ts.Expression | undefined {
  if (ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) return node.moduleSpecifier;
  if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword) {
    return node.arguments[0];
  }
  if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument)) {
    return node.argument.literal;
  }
  return undefined;
}

/** A reference to the `Deno` global: `Deno.x` or `globalThis.Deno`, not a property `x.Deno`. */
function usesDeno(node: ts.Node): boolean {
  if (!ts.isIdentifier(node) || node.text !== "Deno") return false;
  const parent = node.parent;
  if (ts.isPropertyAccessExpression(parent) && parent.name === node) {
    return parent.expression.getText() === "globalThis";
  }
  if (ts.isQualifiedName(parent) && parent.right === node) return false;
  const named = ts.isPropertyAssignment(parent) || ts.isPropertyDeclaration(parent) ||
    ts.isPropertySignature(parent) || ts.isMethodDeclaration(parent);
  return !(named && parent.name === node);
}

/**
 * The modules reachable from the entry points (path relative to src/ -> text with relative
 * `.ts` imports rewritten to `.js`, which keeps every position, so diagnostics match src/).
 * Throws listing every import or use of `Deno` that cannot go into the package.
 */
function collect(entries: string[]): Map<string, string> {
  const modules = new Map<string, string>();
  const problems: string[] = [];
  const queue = entries.map((path) => ({ path, chain: [path] }));
  const seen = new Set(entries);
  while (queue.length > 0) {
    const { path, chain } = queue.shift()!;
    let text = readFileSync(join(SRC, path), "utf8");
    const sf = ts.createSourceFile(path, text, ts.ScriptTarget.Latest, true);
    const problem = (node: ts.Node, what: string) => {
      const line = sf.getLineAndCharacterOfPosition(node.getStart()).line + 1;
      const via = chain.length > 1 ? ` (reached through ${chain.join(" -> ")})` : "";
      problems.push(`src/${path}:${line} ${what}${via}`);
    };
    const visit = (node: ts.Node): void => {
      const literal = moduleSpecifier(node);
      if (literal && !ts.isStringLiteral(literal)) {
        problem(node, "imports a computed module name, which cannot be checked");
      } else if (literal) {
        const spec = literal.text;
        if (spec.startsWith("./") || spec.startsWith("../")) {
          const target = posix.normalize(posix.join(posix.dirname(path), spec));
          if (!isPure(target)) {
            problem(
              node,
              `imports ${spec}: src/${target} is not in the npm package (it has only ` +
                `src/{${PURE_DIRS.join(",")}}/ and src/{${PURE_FILES.join(",")}})`,
            );
          } else if (
            !isModule(target) || !existsSync(join(SRC, target))
          ) {
            problem(node, `imports ${spec}, which is not a .ts module of src/`);
          } else {
            // `.ts` -> `.js` just before the closing quote: same length, positions unchanged.
            const at = literal.getEnd() - 4;
            text = text.slice(0, at) + ".js" + text.slice(at + 3);
            if (!seen.has(target)) {
              seen.add(target);
              queue.push({ path: target, chain: [...chain, target] });
            }
          }
        } else if (!spec.startsWith("node:") && !DEPENDENCIES.includes(spec.split("/")[0])) {
          problem(
            node,
            `imports "${spec}", which is neither a node: built-in nor a dependency ` +
              `of the npm package (${DEPENDENCIES.join(", ")})`,
          );
        }
      }
      if (usesDeno(node)) problem(node, "uses the Deno global, which Node does not have");
      ts.forEachChild(node, visit);
    };
    visit(sf);
    modules.set(path, text);
  }
  if (problems.length > 0) {
    throw new BuildError(
      `modules that cannot go into the npm package:\n  ${problems.join("\n  ")}`,
    );
  }
  return modules;
}

/** Diagnostics with paths relative to the root, in color with context on a terminal. */
function format(project: Project, diagnostics: Diagnostic[]): string {
  if (Deno.stderr.isTerminal()) {
    return project.formatDiagnosticsWithColorAndContext(diagnostics, { newLineChar: "\n" });
  }
  return ts.formatDiagnostics(diagnostics.map((d) => d.compilerObject), {
    getCurrentDirectory: () => ROOT,
    getCanonicalFileName: (f) => f,
    getNewLine: () => "\n",
  });
}

/** Type-checks and emits the modules: path relative to dist/npm/ -> text. */
function compile(modules: Map<string, string>): Map<string, string> {
  const project = new Project({
    skipAddingFilesFromTsConfig: true,
    compilerOptions: {
      module: ts.ModuleKind.ES2022,
      target: ts.ScriptTarget.ES2022,
      moduleResolution: ts.ModuleResolutionKind.Bundler,
      // Node 20 (engines) implements ES2023; `process` and `node:` modules come from @types/node.
      lib: ["lib.es2023.d.ts"],
      types: ["node"],
      strict: true,
      declaration: true,
      skipLibCheck: true,
      rootDir: STAGE,
      outDir: join(OUT, "esm"),
    },
  });
  for (const [path, text] of modules) project.createSourceFile(join(STAGE, path), text);
  const diagnostics = project.getPreEmitDiagnostics();
  if (diagnostics.length > 0) {
    // Staged paths mirror src/.
    const report = format(project, diagnostics).replaceAll(`${relative(ROOT, STAGE)}/`, "src/");
    throw new BuildError(
      `the package's modules do not type-check (lib ES2023 and @types/node: what Node 20, the ` +
        `oldest engine, provides; a name not found may be an API Node 20 lacks):\n${report}`,
    );
  }
  const result = project.emitToMemory();
  if (result.getEmitSkipped()) throw new BuildError("TypeScript skipped the emit");
  const files = new Map<string, string>();
  for (const file of result.getFiles()) {
    const path = relative(OUT, file.filePath);
    // Declarations keep their import paths as written; the rewrite above made them `.js`.
    // (Statements start a line; a `.ts` path inside a string, as in generated launcher text, is
    // not an import.)
    if (
      /^(?:import|export)\b[^\n]*\bfrom\s+["']\.\.?\/[^"']*\.ts["']|\bimport\(["']\.\.?\/[^"']*\.ts["']\)/m
        .test(file.text)
    ) {
      throw new BuildError(`${path} still imports a .ts path`);
    }
    files.set(path, file.text);
  }
  return files;
}

function rootPackage(): { dependencies?: Record<string, string> } {
  return JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8"));
}

function packageJson(entries: Readonly<Record<string, string>>): object {
  const modules = Object.fromEntries(
    Object.entries(entries).map(([subpath, path]) => {
      const js = `./esm/${path.replace(/\.ts$/, ".js")}`;
      return [subpath, { types: js.replace(/\.js$/, ".d.ts"), import: js }];
    }),
  );
  // ESM only: no "require" condition, so require() fails at once with ERR_PACKAGE_PATH_NOT_EXPORTED
  // (CommonJS callers use `await import()`, as the README says).
  const exports = { ...modules, "./package.json": "./package.json" };
  const versions = rootPackage().dependencies ?? {};
  const dependencies = Object.fromEntries(DEPENDENCIES.map((name) => {
    if (!versions[name]) throw new BuildError(`the root package.json does not depend on ${name}`);
    return [name, versions[name]];
  }));
  return {
    name: NAME,
    version: VERSION,
    description: DESCRIPTION,
    license: "MIT",
    type: "module",
    main: modules["."].import,
    types: modules["."].types,
    exports,
    files: ["esm/", "templates/", ...PACKAGE_DOCS],
    sideEffects: false,
    engines: { node: ">=20" },
    dependencies,
  };
}

/** Runs a command and returns its stdout; throws with its output when it fails. */
function run(cmd: string, args: string[], cwd: string, env?: Record<string, string>): string {
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);
  let out: Deno.CommandOutput;
  try {
    out = new Deno.Command(cmd, {
      args,
      cwd,
      env,
      clearEnv: env !== undefined,
      stdout: "piped",
      stderr: "piped",
    }).outputSync();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new BuildError(`${cmd} is not on PATH`);
    throw e;
  }
  if (!out.success) {
    throw new BuildError(
      `\`${cmd} ${args.join(" ")}\` failed (exit ${out.code}) in ${cwd}:\n` +
        decode(out.stderr) + decode(out.stdout),
    );
  }
  return decode(out.stdout);
}

interface Packed {
  filename: string;
  size: number;
  unpackedSize: number;
  entryCount: number;
}

/** Type-checks npm/types_check.ts as a Node project would, against the installed package. */
function checkTypes(dir: string): void {
  const project = new Project({
    skipAddingFilesFromTsConfig: true,
    compilerOptions: {
      module: ts.ModuleKind.NodeNext,
      moduleResolution: ts.ModuleResolutionKind.NodeNext,
      target: ts.ScriptTarget.ES2022,
      lib: ["lib.es2023.d.ts"],
      // No @types/node: the package's declarations must not need it.
      types: [],
      strict: true,
      noEmit: true,
    },
  });
  const file = join(dir, "types_check.ts");
  project.createSourceFile(file, readFileSync(join(ROOT, "npm", "types_check.ts"), "utf8"));
  const diagnostics = project.getPreEmitDiagnostics();
  if (diagnostics.length > 0) {
    throw new BuildError(
      `npm/types_check.ts does not type-check against the package's declarations:\n` +
        format(project, diagnostics),
    );
  }
}

/** Export names of each entry point as `deno doc --json` documents them (the API reference). */
function documentedExports(entries: Readonly<Record<string, string>>): Map<string, Set<string>> {
  const names = new Map<string, Set<string>>();
  for (const [subpath, path] of Object.entries(entries)) {
    const file = join(SRC, path);
    const json = JSON.parse(run(Deno.execPath(), ["doc", "--json", file], ROOT));
    const node = json.nodes?.[pathToFileURL(file).href];
    if (!node) throw new BuildError(`deno doc --json ${path}: no node for the module`);
    names.set(subpath, new Set(node.symbols.map((s: { name: string }) => s.name)));
  }
  return names;
}

/**
 * Checks that each entry point's emitted .d.ts exports exactly the names the API reference
 * documents; returns the number of exports checked.
 */
function checkDeclarationsMatchDocs(entries: Readonly<Record<string, string>>): number {
  const documented = documentedExports(entries);
  const project = new Project({
    skipAddingFilesFromTsConfig: true,
    compilerOptions: { module: ts.ModuleKind.ES2022, skipLibCheck: true, noEmit: true },
  });
  const problems: string[] = [];
  let count = 0;
  for (const [subpath, path] of Object.entries(entries)) {
    const dts = join(OUT, "esm", path.replace(/\.ts$/, ".d.ts"));
    const declared = new Set(project.addSourceFileAtPath(dts).getExportedDeclarations().keys());
    const docs = documented.get(subpath)!;
    const only = (a: Set<string>, b: Set<string>) => [...a].filter((n) => !b.has(n)).sort();
    if (only(declared, docs).length > 0) {
      problems.push(`${subpath}: declared but not documented: ${only(declared, docs).join(", ")}`);
    }
    if (only(docs, declared).length > 0) {
      problems.push(`${subpath}: documented but not declared: ${only(docs, declared).join(", ")}`);
    }
    count += declared.size;
  }
  if (problems.length > 0) {
    throw new BuildError(
      `the package's .d.ts exports and deno doc disagree:\n  ${problems.join("\n  ")}`,
    );
  }
  return count;
}

/**
 * The README's example: the first ```js block followed, with only prose between, by a ```text
 * block (what the example prints).
 */
export function readmeExample(readme: string): { code: string; output: string } {
  const block = "((?:(?!```)[\\s\\S])*)```";
  const match = new RegExp("```js\\n" + block + "[^`]*```text\\n" + block).exec(readme);
  if (!match) {
    throw new BuildError(
      "npm/README.md: no example (a ```js block followed by a ```text block of its output)",
    );
  }
  return { code: match[1], output: match[2] };
}

/**
 * Installs the packed package into a temporary directory, as a user would, type-checks a
 * consumer, runs the Node smoke test and the README's example. Returns the tarball's details
 * and the smoke test's output.
 */
function testUnderNode(npmInstall: boolean): { packed: Packed; smoke: string } {
  const dir = mkdtempSync(join(tmpdir(), "ds-npm-"));
  try {
    const [packed]: Packed[] = JSON.parse(
      run("npm", ["pack", "--json", "--ignore-scripts", "--pack-destination", dir], OUT),
    );
    const tarball = join(dir, packed.filename);
    writeFileSync(join(dir, "package.json"), `{ "private": true, "type": "module" }\n`);
    if (npmInstall) {
      run("npm", ["install", "--omit=dev", "--no-audit", "--no-fund", tarball], dir);
    } else {
      const modules = join(dir, "node_modules");
      mkdirSync(modules);
      run("tar", ["-xzf", tarball, "-C", modules], dir);
      renameSync(join(modules, "package"), join(modules, NAME));
      for (const dep of DEPENDENCIES) {
        const installed = join(ROOT, "node_modules", dep);
        if (!existsSync(installed)) {
          throw new BuildError(`${installed} is missing: run ./ds once, or pass --npm-install`);
        }
        symlinkSync(installed, join(modules, dep), "dir");
      }
    }
    checkTypes(dir);
    cpSync(join(ROOT, "npm", "smoke.mjs"), join(dir, "smoke.mjs"));
    // The package must find its own templates, whatever the workspace's environment says.
    const env = Deno.env.toObject();
    delete env.DS_TEMPLATES_DIR;
    // The smoke test compares its codegen round trip with the repository's generated/.
    env.DS_GENERATED_DIR = join(ROOT, "generated");
    const smoke = run("node", ["smoke.mjs"], dir, env).trim();

    const example = readmeExample(readFileSync(join(OUT, "README.md"), "utf8"));
    const exampleDir = join(dir, "readme-example");
    mkdirSync(exampleDir);
    writeFileSync(join(exampleDir, "package.json"), `{ "private": true, "type": "module" }\n`);
    writeFileSync(join(exampleDir, "example.mjs"), example.code);
    // Resolves double-sparsity from ../node_modules, as from any nested folder of a project.
    const printed = run("node", ["example.mjs"], exampleDir, env);
    if (printed !== example.output) {
      throw new BuildError(
        `npm/README.md: the example printed\n${printed}\ninstead of what the README shows:\n` +
          example.output,
      );
    }
    return { packed, smoke };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const kB = (bytes: number) => `${(bytes / 1024).toFixed(1)} kB`;

function sizeOf(files: Iterable<string>, suffix: string): string {
  const sizes = [...files].filter((f) => f.endsWith(suffix)).map((f) => statSync(f).size);
  return `${sizes.length} ${suffix} (${kB(sizes.reduce((a, b) => a + b, 0))})`;
}

function build(args: string[]): void {
  const unknown = args.filter((a) => a !== "--npm-install");
  if (unknown.length > 0) {
    throw new BuildError(
      `unknown arguments ${unknown.join(" ")}; usage: build_npm.ts [--npm-install]`,
    );
  }
  // A failed build leaves no package behind.
  rmSync(OUT, { recursive: true, force: true });
  const entries = ENTRY_POINTS;
  const modules = collect(Object.values(entries));
  const emitted = compile(modules);

  for (const [path, text] of emitted) {
    mkdirSync(dirname(join(OUT, path)), { recursive: true });
    writeFileSync(join(OUT, path), text);
  }
  cpSync(join(ROOT, "templates"), join(OUT, "templates"), { recursive: true });
  for (const doc of PACKAGE_DOCS) {
    const from = DOC_SOURCES[doc];
    if (!existsSync(from)) throw new BuildError(`${relative(ROOT, from)} is missing`);
    cpSync(from, join(OUT, doc));
  }
  writeFileSync(join(OUT, "package.json"), JSON.stringify(packageJson(entries), null, 2) + "\n");

  const apiExports = checkDeclarationsMatchDocs(entries);
  const { packed, smoke } = testUnderNode(args.includes("--npm-install"));

  const written = [...emitted.keys()].map((p) => join(OUT, p));
  const templates = readdirSync(join(OUT, "templates")).map((f) => join(OUT, "templates", f));
  console.log(`build:npm: ${NAME}@${VERSION} in ${relative(ROOT, OUT)}/`);
  for (const [subpath, path] of Object.entries(entries)) {
    console.log(`  ${subpath.padEnd(12)} src/${path}`);
  }
  console.log(
    `  esm/: ${modules.size} modules: ${sizeOf(written, ".js")}, ${sizeOf(written, ".d.ts")}; ` +
      `templates/: ${sizeOf(templates, ".hbs")}; ${PACKAGE_DOCS.join(", ")}`,
  );
  console.log(
    `  ${packed.filename}: ${kB(packed.size)} packed, ${kB(packed.unpackedSize)} unpacked, ` +
      `${packed.entryCount} files`,
  );
  console.log(`  types: npm/types_check.ts type-checks against the declarations (NodeNext)`);
  console.log(
    `  api: the .d.ts of ${Object.keys(entries).length} entry points export the ${apiExports} ` +
      `names deno doc documents`,
  );
  console.log(`  node: ${smoke}`);
  console.log(`  readme: npm/README.md's example printed what the README shows`);
}

if (import.meta.main) {
  try {
    build(Deno.args);
  } catch (e) {
    if (!(e instanceof BuildError)) throw e;
    console.error(`build:npm: ${e.message}`);
    Deno.exit(1);
  }
}
