#!/usr/bin/env node
/**
 * The `memlora` command. Subcommands live in a table: each is `{ name, describe, run(argv) }`
 * exported from the module that owns the work. To add one, import it below and list it in
 * `commands` — nothing else here changes.
 */
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { ConfigError, formatConfigError, loadConfig } from './config.js';
import { jsonLogger } from './http/logger.js';
import { ablateCommand } from './eval/ablation-command.js';
import { evalCommand } from './eval/command.js';
import { exportCommand } from './http/export-command.js';
import { injectCommand, searchCommand } from './inject/commands.js';
import { importCommand } from './model/import-command.js';
import { pretrainCommand } from './pretrain/command.js';
import { missingServeNodeFlags } from './serve/node-flags.js';
import { startServer } from './server.js';

export interface Command {
  name: string;
  /** One line for `memlora --help`. */
  describe: string;
  /** Arguments after the subcommand name. Returns the exit code (default 0); long-running commands may resolve once started. */
  run(argv: string[]): Promise<number | void> | number | void;
}

export const serveCommand: Command = {
  name: 'serve',
  describe: 'start the HTTP service (configured by MEMLORA_* environment variables, see README)',
  async run(argv) {
    if (argv.includes('--help') || argv.includes('-h')) {
      process.stdout.write('usage: memlora serve\n\nConfiguration comes from MEMLORA_* environment variables (README "Configuration").\n');
      return 0;
    }
    if (argv.length > 0) {
      process.stderr.write(`memlora serve: unexpected arguments: ${argv.join(' ')}\n`);
      return 2;
    }
    let config;
    try {
      config = loadConfig();
    } catch (err) {
      if (err instanceof ConfigError) {
        process.stderr.write(`${formatConfigError(err)}\n`);
        return 2;
      }
      throw err;
    }
    const missing = missingServeNodeFlags();
    if (missing.length > 0) {
      // `npm start` passes them; a bare `node dist/cli.js serve` runs, with more GC pauses under load.
      jsonLogger().warn('node started without the serving flags (src/serve/node-flags.ts)', { missing });
    }
    try {
      await startServer(config);
    } catch (err) {
      process.stderr.write(`memlora: cannot start: ${err instanceof Error ? err.message : String(err)}\n`);
      return 1;
    }
    // The listening server keeps the process alive; SIGTERM/SIGINT shut it down.
    return 0;
  },
};

/** Every subcommand. inject, search, eval, import and pretrain are added here by their modules' owners. */
export const commands: readonly Command[] = [serveCommand, importCommand, pretrainCommand, injectCommand, searchCommand, evalCommand, ablateCommand, exportCommand];

function usage(): string {
  const width = Math.max(...commands.map((c) => c.name.length));
  return [
    'usage: memlora <command> [options]',
    '',
    'commands:',
    ...commands.map((c) => `  ${c.name.padEnd(width)}  ${c.describe}`),
    '',
    'Run `memlora <command> --help` for a command\'s options.',
  ].join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    (name === undefined ? process.stderr : process.stdout).write(`${usage()}\n`);
    return name === undefined ? 2 : 0;
  }
  const cmd = commands.find((c) => c.name === name);
  if (!cmd) {
    process.stderr.write(`memlora: unknown command ${JSON.stringify(name)}\n\n${usage()}\n`);
    return 2;
  }
  try {
    return (await cmd.run(rest)) ?? 0;
  } catch (err) {
    // Commands report expected failures themselves; this is the last resort, still without a stack.
    process.stderr.write(`memlora ${name}: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
}

function isEntryPoint(): boolean {
  const arg = process.argv[1];
  if (!arg) return false;
  try {
    return realpathSync(arg) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isEntryPoint()) {
  main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
