/**
 * `memlora export --user <id> [--out <file>]`: what GET /v1/admin/users/{userId}/export streams,
 * read from the database file (the server may be running: SQLite's WAL lets this process read beside
 * it), written to stdout or to a file that appears whole (written beside it, then renamed) or not at all.
 */
import { createWriteStream, existsSync, renameSync, rmSync } from 'node:fs';
import { once } from 'node:events';
import { parseArgs } from 'node:util';
import type { Writable } from 'node:stream';
import type { Command } from '../cli.js';
import { loadConfig } from '../config.js';
import { openDb } from '../db/client.js';
import { userExport } from './user-export.js';

const USAGE = `usage: memlora export --user <id> [--out <file>]

Everything memlora holds of the user, as NDJSON (one JSON object a line: the user, history, history
deletions, injection jobs and trials, adapter versions, usage by day, stored responses, conversations
and their items, then an "end" line with the counts), read from MEMLORA_DATA_DIR's database, to stdout
or to --out (written whole or not at all). Exit 1 if there is no such user.
`;

async function write(out: Writable, chunk: string): Promise<void> {
  if (!out.write(chunk)) await once(out, 'drain');
}

export const exportCommand: Command = {
  name: 'export',
  describe: "export everything held of a user as NDJSON (an access or portability request)",
  async run(argv) {
    let values;
    try {
      ({ values } = parseArgs({ args: argv, options: { user: { type: 'string' }, out: { type: 'string' }, help: { type: 'boolean', short: 'h' } }, strict: true }));
    } catch (e) {
      process.stderr.write(`memlora export: ${(e as Error).message}\n\n${USAGE}`);
      return 2;
    }
    if (values.help) return void process.stdout.write(USAGE);
    if (!values.user) {
      process.stderr.write(`memlora export: --user is required\n\n${USAGE}`);
      return 2;
    }
    const config = loadConfig();
    if (!existsSync(config.dbFile)) {
      process.stderr.write(`memlora export: no database at ${config.dbFile}\n`);
      return 1;
    }
    const db = openDb(config.dbFile);
    try {
      const lines = userExport(db, values.user);
      if (!lines) {
        process.stderr.write(`memlora export: no user ${JSON.stringify(values.user)} in ${config.dbFile}\n`);
        return 1;
      }
      if (values.out === undefined) {
        for await (const chunk of lines) await write(process.stdout, chunk);
        return 0;
      }
      const partial = `${values.out}.partial`;
      const file = createWriteStream(partial);
      try {
        for await (const chunk of lines) await write(file, chunk);
        file.end();
        await once(file, 'close');
        renameSync(partial, values.out);
      } catch (e) {
        file.destroy();
        rmSync(partial, { force: true });
        throw e;
      }
      process.stderr.write(`memlora export: ${values.user} written to ${values.out}\n`);
      return 0;
    } finally {
      db.close();
    }
  },
};
