/** The README's task table lists every `deno task` of deno.json, once, and nothing else. */
import assert from "node:assert/strict";
import { repoPath } from "./helpers.ts";

Deno.test("README: the task table names exactly the tasks of deno.json", () => {
  const tasks = Object.keys(JSON.parse(Deno.readTextFileSync(repoPath("deno.json"))).tasks);
  const readme = Deno.readTextFileSync(repoPath("README.md"));
  const lines = readme.split("\n");
  const header = lines.findIndex((l) => /^\| task\s+\| what it does/.test(l));
  assert.ok(header >= 0, "README.md has no '| task | what it does |' table");
  const end = lines.findIndex((l, i) => i > header && !l.startsWith("|"));
  const table = lines.slice(header + 2, end);
  const listed = table.map((l) => l.match(/^\| `([^`]+)`/)?.[1] ?? `(no task name) ${l}`);
  assert.equal(new Set(listed).size, listed.length, `a task listed twice: ${listed}`);
  assert.deepEqual([...listed].sort(), [...tasks].sort());
});
