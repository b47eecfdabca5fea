/** Package version, recorded in generated manifests and the npm package. */
export const VERSION = "0.1.0";
