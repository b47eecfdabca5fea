/**
 * The repository (or installed package) root, found from this module's own location, so paths
 * to templates/, examples/ and generated/ work from any working directory and in the npm package.
 */
import { fileURLToPath } from "node:url";

/** The root directory: two levels above src/util/. */
export const packageRoot = (): string => fileURLToPath(new URL("../../", import.meta.url));
