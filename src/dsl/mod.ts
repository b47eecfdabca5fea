export * from "./spec.ts";
export * from "./layout.ts";
