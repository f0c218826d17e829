/**
 * Node (V8) flags the serving process is started with: `npm start` passes them, and the benches that
 * start the server in a child process (bench/swap.ts, bench/soak.ts) pass the same list.
 *
 * `--initial-old-space-size=128`: a floor of 128 MiB under V8's old-generation limit. V8 counts
 * external memory allocated since the last mark-compact (the array buffers of ONNX Runtime's outputs,
 * about 60 MB/s under load) against that limit, and sets the limit only a little above the live heap
 * (35-45 MiB here). A server whose adapter cache holds many array buffers (1.5 GiB in bench/swap.ts)
 * then ran a mark-compact every ~300 ms, 3-4% of its main thread (`--trace-gc`), where the same
 * server with adapters disabled frees the same buffers by scavenges (about 1%). With the flag it ran
 * 3 mark-compacts in 100 s of load after start-up and spent 0.8-1.2% in GC, as the vanilla server
 * does. The flag raises where the limit starts (not a cap: the heap still grows past it).
 */
export const SERVE_NODE_FLAGS: readonly string[] = ['--initial-old-space-size=128'];

/** The serving flags missing from a process's `execArgv` (compared by flag name, not value). */
export function missingServeNodeFlags(execArgv: readonly string[] = process.execArgv): string[] {
  const name = (f: string): string => f.split('=')[0];
  const given = new Set(execArgv.map(name));
  return SERVE_NODE_FLAGS.filter((f) => !given.has(name(f)));
}
