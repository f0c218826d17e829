// drizzle-kit configuration: `npm run db:generate` diffs src/db/schema.ts against the last snapshot
// in migrations/meta and writes the next SQL migration. Never hand-edit a generated migration.
import { defineConfig } from 'drizzle-kit';

export default defineConfig({
  dialect: 'sqlite',
  schema: './src/db/schema.ts',
  out: './migrations',
});
