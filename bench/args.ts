/** Command-line options of the benches: `--name value` and bare `--name` flags. */

/** The value after `--name`, or `fallback` when the option (or its value) is absent. */
export function stringArg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

/** The number after `--name`, or `fallback` when the option is absent; a value that is not a number throws. */
export function numberArg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return fallback;
  const v = Number(process.argv[i + 1]);
  if (!Number.isFinite(v)) throw new Error(`--${name} needs a number, got ${JSON.stringify(process.argv[i + 1])}`);
  return v;
}

/** Whether the bare flag `--name` is given. */
export const flag = (name: string): boolean => process.argv.includes(`--${name}`);
