/**
 * One read of a runtime switch from the environment: the value, or undefined when the variable is
 * unset, empty, or cannot be read (no --allow-env: nothing was asked for). Callers validate.
 */
export function envSetting(name: string): string | undefined {
  let value: string | undefined;
  try {
    value = Deno.env.get(name);
  } catch {
    return undefined;
  }
  return value === "" ? undefined : value;
}
