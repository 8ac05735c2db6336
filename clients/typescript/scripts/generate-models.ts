/**
 * Generates `src/models.ts` from the contract's JSON Schemas (`schemas/command.v1.json`,
 * `schemas/event.v1.json` at the repository root), so the client's types can never drift from
 * what the fleet publishes: `npm run generate` rewrites the file, and a test fails when the
 * committed file differs from what this produces.
 *
 * The schemas share `$defs` (`Name`, `Metadata`); each shared definition is declared once. A
 * definition whose name is shared but whose content differs stops the generation instead of
 * silently picking one.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isDeepStrictEqual } from 'node:util';

import { compile, type JSONSchema } from 'json-schema-to-typescript';

const here = dirname(fileURLToPath(import.meta.url));
/** The repository's `schemas/` directory. */
export const SCHEMAS_DIR = resolve(here, '../../../schemas');
/** Where the generated models are committed. */
export const MODELS_FILE = resolve(here, '../src/models.ts');

/** The schemas, in the order their types are written, and the root type each one becomes. */
const SOURCES = [
  { file: 'command.v1.json', name: 'Command' },
  { file: 'event.v1.json', name: 'LifecycleEvent' },
] as const;

const BANNER = `/* eslint-disable */
/**
 * The contract's command and event types, generated from schemas/command.v1.json and
 * schemas/event.v1.json by \`npm run generate\` (scripts/generate-models.ts). Do not edit by
 * hand: change the schemas (they are generated from the Rust types) and run it again.
 */`;

type Schema = { [key: string]: unknown };

function isSchema(value: unknown): value is Schema {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Keywords that say something about a value's type; a schema with none of them accepts any JSON. */
const TYPING_KEYWORDS = [
  'type', '$ref', 'anyOf', 'oneOf', 'allOf', 'not', 'const', 'enum', 'properties',
  'items', 'additionalProperties', 'patternProperties', 'tsType',
];

const LOCAL_REF = /^#\/\$defs\/([A-Za-z_][A-Za-z0-9_]*)$/;

/**
 * Rewrites a schema (a deep copy) so the generated types say what the schema means:
 * - an unconstrained schema (e.g. the event's `result`) is `unknown`, not an empty object;
 * - every `$defs` entry gets its key as `title`, so it becomes one named, exported type;
 * - a `$ref` to a `$defs` entry names that type. The generator would otherwise mint a new
 *   alias (`Name1`, `Name2`, ...) for every `$ref` that carries its own `description`.
 */
function normalise(node: unknown, isSubschema: boolean): unknown {
  if (Array.isArray(node)) return node.map((n) => normalise(n, true));
  if (!isSchema(node)) return node;
  const out: Schema = {};
  for (const [key, value] of Object.entries(node)) {
    if (key === '$ref') {
      const local = typeof value === 'string' ? LOCAL_REF.exec(value) : null;
      if (local === null) throw new Error(`unsupported $ref ${String(value)}: only #/$defs/<Name>`);
      out.tsType = local[1];
      continue;
    }
    if (key === 'properties' || key === '$defs' || key === 'definitions') {
      const map: Schema = {};
      for (const [name, sub] of Object.entries(isSchema(value) ? value : {})) {
        map[name] = normalise(sub, true);
        if (key !== 'properties' && isSchema(map[name]) && !('title' in (map[name] as Schema))) {
          (map[name] as Schema).title = name;
        }
      }
      out[key] = map;
    } else if (key === 'default' || key === 'const' || key === 'enum' || key === 'examples') {
      out[key] = value;
    } else {
      out[key] = normalise(value, true);
    }
  }
  if (isSubschema && !TYPING_KEYWORDS.some((k) => k in out)) out.tsType = 'unknown';
  return out;
}

/** The generated `src/models.ts`, as text, from the schemas in `schemasDir`. */
export async function generateModels(schemasDir: string = SCHEMAS_DIR): Promise<string> {
  const declared = new Map<string, unknown>();
  const parts: string[] = [];
  for (const { file, name } of SOURCES) {
    const raw: unknown = JSON.parse(await readFile(join(schemasDir, file), 'utf8'));
    const schema = normalise(raw, false) as Schema;
    schema.title = name;
    // json-schema-to-typescript names the root after its $id when there is one; the title
    // chosen above is the name the client's API uses.
    delete schema.$id;
    const defs = isSchema(schema.$defs) ? schema.$defs : {};
    for (const [def, body] of Object.entries(defs)) {
      if (!declared.has(def)) {
        declared.set(def, body);
        continue;
      }
      if (!isDeepStrictEqual(declared.get(def), body)) {
        throw new Error(`$defs/${def} differs between the schemas; give one of them another name`);
      }
      // Declared by an earlier schema, and every reference names it: declare it once.
      delete defs[def];
    }
    parts.push(
      await compile(schema as JSONSchema, name, {
        bannerComment: '',
        cwd: schemasDir,
        additionalProperties: true,
        strictIndexSignatures: false,
        unreachableDefinitions: true,
        format: true,
        style: { singleQuote: true, printWidth: 100 },
      }),
    );
  }
  return `${BANNER}\n\n${parts.map((p) => p.trim()).join('\n\n')}\n`;
}

async function main(): Promise<void> {
  await writeFile(MODELS_FILE, await generateModels());
  process.stdout.write(`wrote ${MODELS_FILE}\n`);
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  await main();
}
