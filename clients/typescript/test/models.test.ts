/**
 * The committed src/models.ts is what the schemas generate today: when the schemas change
 * (they are generated from the Rust types), this fails until `npm run generate` is run.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { test } from 'node:test';

import { generateModels, MODELS_FILE } from '../scripts/generate-models.js';

test('src/models.ts is what schemas/command.v1.json and event.v1.json generate', async () => {
  const committed = await readFile(MODELS_FILE, 'utf8');
  const generated = await generateModels();
  assert.ok(
    committed === generated,
    'src/models.ts differs from what the schemas generate: run `npm run generate` in clients/typescript and commit the result',
  );
});
