/**
 * Compiled-kernel cache: an in-process memo in front of an on-disk store.
 *
 * Key: SHA-256 of everything that changes the binary: the entry format, the NVRTC version, the
 * target architecture, the options and the source. Entries are written atomically (temp file +
 * rename); each carries the SHA-256 of its payload, so a truncated or corrupted entry is
 * detected on read, deleted and rebuilt.
 *
 * Location: $DS_CACHE_DIR, else $XDG_CACHE_HOME/double-sparsity, else ~/.cache/double-sparsity;
 * entries under kernels/<first two hex digits>/<key>.
 *
 * An entry that cannot be read for another reason than its absence (a directory in its place, no
 * permission) is "unusable": the compiler then compiles without the disk cache for that kernel
 * and says so once; it never deletes what is there. Two processes writing one entry at once both
 * succeed: each writes its own temporary file and renames it into place, so readers see one
 * whole entry or none.
 */
import { createHash } from "node:crypto";
import { join } from "node:path";
import { writeFileAtomic } from "../util/fs.ts";
import type { CompileOutput } from "./nvrtc.ts";

const FORMAT = "DSKERNEL1";

export function defaultCacheDir(): string {
  const explicit = Deno.env.get("DS_CACHE_DIR");
  if (explicit) return explicit;
  const xdg = Deno.env.get("XDG_CACHE_HOME");
  if (xdg) return join(xdg, "double-sparsity");
  const home = Deno.env.get("HOME") ?? Deno.cwd();
  return join(home, ".cache", "double-sparsity");
}

export interface CacheKeyParts {
  readonly nvrtcVersion: string;
  readonly arch: string;
  readonly options: readonly string[];
  readonly source: string;
}

export function cacheKey(p: CacheKeyParts): string {
  return createHash("sha256")
    .update(JSON.stringify([FORMAT, p.nvrtcVersion, p.arch, p.options, p.source]))
    .digest("hex");
}

export type CacheLookup =
  | { status: "hit"; output: CompileOutput }
  | { status: "miss" }
  | { status: "corrupt"; reason: string }
  | { status: "unusable"; reason: string };

const enc = new TextEncoder();
const dec = new TextDecoder();

interface EntryHeader {
  format: string;
  key: string;
  ptxBytes: number;
  cubinBytes: number;
  logBytes: number;
  payloadSha256: string;
}

export class DiskCache {
  constructor(readonly dir: string = defaultCacheDir()) {}

  pathOf(key: string): string {
    return join(this.dir, "kernels", key.slice(0, 2), key);
  }

  read(key: string): CacheLookup {
    let bytes: Uint8Array;
    try {
      bytes = Deno.readFileSync(this.pathOf(key));
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return { status: "miss" };
      const why = e instanceof Error ? e.message.split("\n")[0] : String(e);
      return { status: "unusable", reason: `${this.pathOf(key)}: ${why}` };
    }
    const newline = bytes.indexOf(10);
    if (newline < 0) return { status: "corrupt", reason: "no header line" };
    let header: EntryHeader;
    try {
      header = JSON.parse(dec.decode(bytes.subarray(0, newline)));
    } catch {
      return { status: "corrupt", reason: "unreadable header" };
    }
    if (header.format !== FORMAT || header.key !== key) {
      return { status: "corrupt", reason: `header names ${header.format}/${header.key}` };
    }
    const payload = bytes.subarray(newline + 1);
    const expected = header.ptxBytes + header.cubinBytes + header.logBytes;
    if (payload.length !== expected) {
      return {
        status: "corrupt",
        reason: `payload is ${payload.length} bytes, header says ${expected}`,
      };
    }
    const digest = createHash("sha256").update(payload).digest("hex");
    if (digest !== header.payloadSha256) {
      return { status: "corrupt", reason: "payload checksum mismatch" };
    }
    const ptx = dec.decode(payload.subarray(0, header.ptxBytes));
    const cubin = payload.slice(header.ptxBytes, header.ptxBytes + header.cubinBytes);
    const log = dec.decode(payload.subarray(header.ptxBytes + header.cubinBytes));
    return {
      status: "hit",
      output: { ptx, cubin: header.cubinBytes > 0 ? cubin : undefined, log },
    };
  }

  write(key: string, output: CompileOutput): void {
    const ptx = enc.encode(output.ptx);
    const cubin = output.cubin ?? new Uint8Array();
    const log = enc.encode(output.log);
    const payload = new Uint8Array(ptx.length + cubin.length + log.length);
    payload.set(ptx, 0);
    payload.set(cubin, ptx.length);
    payload.set(log, ptx.length + cubin.length);
    const header: EntryHeader = {
      format: FORMAT,
      key,
      ptxBytes: ptx.length,
      cubinBytes: cubin.length,
      logBytes: log.length,
      payloadSha256: createHash("sha256").update(payload).digest("hex"),
    };
    const head = enc.encode(JSON.stringify(header) + "\n");
    const entry = new Uint8Array(head.length + payload.length);
    entry.set(head, 0);
    entry.set(payload, head.length);
    writeFileAtomic(this.pathOf(key), entry);
  }

  remove(key: string): void {
    try {
      Deno.removeSync(this.pathOf(key));
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
  }
}
