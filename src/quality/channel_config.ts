// Reading and writing channel-config files (the authors' and SGLang's format); parsing,
// validation and serialization live in src/interop/channel_config.ts, which has no file system
// dependency and ships in the npm package.

import * as path from "node:path";
import {
  type ChannelConfig,
  type ChannelShape,
  formatChannelConfig,
  parseChannelConfig,
} from "../interop/channel_config.ts";

export * from "../interop/channel_config.ts";
import { InputError } from "../util/errors.ts";

/** Reads and validates a channel-config file. */
export async function readChannelConfig(
  filePath: string,
  expect: ChannelShape,
): Promise<ChannelConfig> {
  let text: string;
  try {
    text = await Deno.readTextFile(filePath);
  } catch (e) {
    throw new InputError(filePath, `cannot read channel config: ${(e as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new InputError(filePath, `invalid JSON: ${(e as Error).message}`);
  }
  return parseChannelConfig(json, expect, filePath);
}

/**
 * Writes a channel config atomically: a temporary file in the same directory, renamed
 * over the target, so readers never see a half-written file.
 */
export async function writeChannelConfig(filePath: string, config: ChannelConfig): Promise<void> {
  const text = formatChannelConfig(config);
  const dir = path.dirname(filePath);
  const unique = `${Deno.pid}-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`;
  const tempPath = path.join(dir, `.${path.basename(filePath)}.${unique}.tmp`);
  try {
    await Deno.writeTextFile(tempPath, text);
    await Deno.rename(tempPath, filePath);
  } catch (e) {
    await Deno.remove(tempPath).catch(() => {});
    throw new InputError(filePath, `cannot write channel config: ${(e as Error).message}`);
  }
}
