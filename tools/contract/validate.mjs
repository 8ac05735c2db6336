#!/usr/bin/env node
// Validates Switchyard's API documents with the ecosystem's own validators:
//   docs/api/openapi.json   with @readme/openapi-parser (the OpenAPI 3.1 JSON Schema, plus its
//                           own checks: operationIds, path parameters, security schemes)
//   docs/api/asyncapi.json  with @asyncapi/parser (the AsyncAPI 3.0 JSON Schema, its bindings'
//                           schemas and its core rules: channel parameters, operation messages)
// Both resolve every $ref, including the JSON Schemas under schemas/, from the files: a
// reference that would need the network is an error, never a download.
//
// Prints what it checked and every diagnostic of error severity; exits 1 on any error.
//
//   node tools/contract/validate.mjs [--root DIR] [--openapi FILE] [--asyncapi FILE]
//
// --root is the repository root (default: two directories above this file); the documents
// default to ROOT/docs/api/openapi.json and ROOT/docs/api/asyncapi.json.

import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { validate as validateOpenApi } from '@readme/openapi-parser';
import asyncapiParser from '@asyncapi/parser';
import Ajv2020 from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';

const { Parser, DiagnosticSeverity } = asyncapiParser;

function parseArgs(argv) {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const options = { root: path.resolve(here, '..', '..') };
  for (let i = 0; i < argv.length; i += 1) {
    const flag = argv[i];
    const value = argv[i + 1];
    if (!['--root', '--openapi', '--asyncapi'].includes(flag) || value === undefined) {
      console.error(`usage: node validate.mjs [--root DIR] [--openapi FILE] [--asyncapi FILE] (at ${flag})`);
      process.exit(2);
    }
    options[flag.slice(2)] = path.resolve(value);
    i += 1;
  }
  options.openapi ??= path.join(options.root, 'docs', 'api', 'openapi.json');
  options.asyncapi ??= path.join(options.root, 'docs', 'api', 'asyncapi.json');
  return options;
}

const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];

// Every `$ref` in a JSON value, so the report can say which schema files were resolved.
function refs(value, found = new Set()) {
  if (Array.isArray(value)) {
    value.forEach((v) => refs(v, found));
  } else if (value && typeof value === 'object') {
    for (const [key, v] of Object.entries(value)) {
      if (key === '$ref' && typeof v === 'string') found.add(v);
      else refs(v, found);
    }
  }
  return found;
}

function externalFiles(document) {
  return [...refs(document)].filter((r) => !r.startsWith('#')).map((r) => r.split('#')[0]);
}

function relative(root, file) {
  return path.relative(root, file) || file;
}

async function readJson(file) {
  return JSON.parse(await readFile(file, 'utf8'));
}

// Refuses every network reference (recorded as an error), so validation stays offline.
function offline(refused) {
  return ['http', 'https'].map((schema) => ({
    schema,
    order: 1,
    canRead: true,
    read: (uri) => {
      refused.push(String(uri));
      return '{}';
    },
  }));
}

async function checkOpenApi(file, root) {
  const errors = [];
  let document;
  try {
    document = await readJson(file);
  } catch (e) {
    return { errors: [`cannot read ${relative(root, file)}: ${e.message}`], summary: null };
  }
  const refused = [];
  let result;
  try {
    result = await validateOpenApi(file, {
      resolve: {
        external: true,
        file: true,
        // The parser keeps its HTTP resolver whatever the options say; this replaces its reader.
        http: {
          read: ({ url }) => {
            refused.push(url);
            throw new Error(`a reference needs the network: ${url}`);
          },
        },
      },
      validate: { errors: { colorize: false } },
    });
  } catch (e) {
    const errors = refused.map((url) => `a reference needs the network: ${url}`);
    return { errors: [...errors, `${e.name ?? 'Error'}: ${e.message}`], summary: null };
  }
  for (const url of refused) errors.push(`a reference needs the network: ${url}`);
  if (!result.valid) {
    for (const e of result.errors) errors.push(e.message);
    if (result.additionalErrors > 0) errors.push(`... and ${result.additionalErrors} more`);
  }
  if (result.specification !== 'OpenAPI' || !String(document.openapi).startsWith('3.1')) {
    errors.push(`not an OpenAPI 3.1 document (openapi: ${JSON.stringify(document.openapi)})`);
  }
  const paths = Object.keys(document.paths ?? {});
  const operations = paths.flatMap((p) =>
    METHODS.filter((m) => document.paths[p][m]).map((m) => `${m.toUpperCase()} ${p}`),
  );
  const files = new Set(externalFiles(document));
  return {
    errors,
    warnings: result.warnings ?? [],
    summary:
      `OpenAPI ${document.openapi}: ${paths.length} paths, ${operations.length} operations ` +
      `(${operations.join(', ')}), ${Object.keys(document.components?.schemas ?? {}).length} ` +
      `component schemas from ${files.size} schema files`,
  };
}

async function checkAsyncApi(file, root) {
  const errors = [];
  const refused = [];
  let text;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    return { errors: [`cannot read ${relative(root, file)}: ${e.message}`], summary: null };
  }
  const parser = new Parser({ __unstable: { resolver: { resolvers: offline(refused) } } });
  const { document, diagnostics } = await parser.parse(text, { source: file });
  const warnings = [];
  for (const d of diagnostics) {
    const where = d.path && d.path.length ? ` at ${d.path.join('.')}` : '';
    const line = `${d.code}: ${d.message}${where}`;
    if (d.severity === DiagnosticSeverity.Error) errors.push(line);
    else if (d.severity === DiagnosticSeverity.Warning) warnings.push({ message: line });
  }
  for (const uri of refused) errors.push(`a reference needs the network: ${uri}`);
  if (!document) return { errors, warnings, summary: null };
  if (document.version() !== '3.0.0') errors.push(`not an AsyncAPI 3.0.0 document: ${document.version()}`);
  const channels = document.channels().all();
  const operations = document.operations().all();
  const messages = document.components().messages().all();
  const raw = JSON.parse(text);
  const files = new Set(externalFiles(raw));
  return {
    errors,
    warnings,
    summary:
      `AsyncAPI ${document.version()}: ${channels.length} channels ` +
      `(${channels.map((c) => `${c.id()} ${c.address()}`).join(', ')}), ${operations.length} operations ` +
      `(${operations.map((o) => `${o.action()} ${o.id()}`).join(', ')}), ${messages.length} ` +
      `messages, payloads from ${files.size} schema files`,
  };
}

// The formats schemars writes for Rust integers: informative, not validated.
const RUST_FORMATS = ['int8', 'int16', 'int32', 'int64', 'uint', 'uint8', 'uint16', 'uint32', 'uint64', 'double', 'float'];

async function schemaFiles(dir) {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  return entries
    .filter((e) => e.isFile() && e.name.endsWith('.json'))
    .map((e) => path.join(e.parentPath ?? e.path, e.name))
    .sort();
}

// Every file under schemas/ against the JSON Schema 2020-12 meta-schema (Ajv), compiled; then
// every example of both documents whose schema is one of those files, against it.
async function checkSchemas(root, documents) {
  const errors = [];
  const dir = path.join(root, 'schemas');
  const ajv = new Ajv2020({ allErrors: true, strict: false });
  addFormats(ajv);
  for (const f of RUST_FORMATS) ajv.addFormat(f, true);
  const byFile = new Map();
  let files;
  try {
    files = await schemaFiles(dir);
  } catch (e) {
    return { errors: [`cannot list ${relative(root, dir)}: ${e.message}`], summary: null };
  }
  const ids = new Set();
  for (const file of files) {
    const name = relative(root, file);
    let schema;
    try {
      schema = await readJson(file);
    } catch (e) {
      errors.push(`${name}: not JSON: ${e.message}`);
      continue;
    }
    if (!ajv.validateSchema(schema)) {
      errors.push(`${name}: not a valid JSON Schema: ${ajv.errorsText(ajv.errors)}`);
      continue;
    }
    if (typeof schema.$id !== 'string' || !schema.$id.endsWith(`/${path.relative(dir, file).split(path.sep).join('/')}`)) {
      errors.push(`${name}: its $id (${JSON.stringify(schema.$id)}) does not end with its path under schemas/`);
    } else if (ids.has(schema.$id)) {
      errors.push(`${name}: its $id ${schema.$id} is taken by another file`);
    }
    ids.add(schema.$id);
    try {
      byFile.set(path.resolve(file), ajv.compile(schema));
    } catch (e) {
      errors.push(`${name}: does not compile: ${e.message}`);
    }
  }
  // Examples: follow a schema's internal $refs to a file under schemas/, then validate.
  let examples = 0;
  for (const { file: docFile, document } of documents) {
    if (!document) continue;
    const base = path.dirname(docFile);
    const target = (schema, seen = 0) => {
      const ref = schema?.$ref;
      if (typeof ref !== 'string' || seen > 8) return null;
      if (ref.startsWith('#/')) {
        const node = ref.slice(2).split('/').reduce((n, k) => n?.[k.replace(/~1/g, '/').replace(/~0/g, '~')], document);
        return target(node, seen + 1);
      }
      return path.resolve(base, ref.split('#')[0]);
    };
    const check = (where, schema, value) => {
      const file = target(schema);
      const validateExample = file && byFile.get(file);
      if (!validateExample) return;
      examples += 1;
      if (!validateExample(value)) {
        errors.push(`${relative(root, docFile)}: the example at ${where} does not match ${relative(root, file)}: ${ajv.errorsText(validateExample.errors)}`);
      }
    };
    const walk = (node, where) => {
      if (Array.isArray(node)) {
        node.forEach((v, i) => walk(v, `${where}/${i}`));
        return;
      }
      if (!node || typeof node !== 'object') return;
      // An OpenAPI media type (schema + examples), or an AsyncAPI message (payload + examples).
      if (node.schema && node.examples && !Array.isArray(node.examples)) {
        for (const [k, ex] of Object.entries(node.examples)) check(`${where}/examples/${k}`, node.schema, ex.value);
      }
      if (node.payload && Array.isArray(node.examples)) {
        node.examples.forEach((ex, i) => check(`${where}/examples/${i}`, node.payload, ex.payload));
      }
      for (const [k, v] of Object.entries(node)) walk(v, `${where}/${k}`);
    };
    walk(document, '#');
  }
  return {
    errors,
    summary: `${files.length} JSON Schemas (2020-12 meta-schema, unique $ids, compiled), ${examples} document examples validated against them`,
  };
}

async function main() {
  const options = parseArgs(process.argv.slice(2));
  let failed = false;
  const documents = [];
  for (const file of [options.openapi, options.asyncapi]) {
    documents.push({ file, document: await readJson(file).catch(() => null) });
  }
  for (const [name, file, check] of [
    ['openapi', options.openapi, checkOpenApi],
    ['asyncapi', options.asyncapi, checkAsyncApi],
    ['json-schema', path.join(options.root, 'schemas'), (_, root) => checkSchemas(root, documents)],
  ]) {
    const { errors, warnings = [], summary } = await check(file, options.root);
    const label = relative(options.root, file);
    if (summary) console.log(`${name}: ${label}: ${summary}`);
    for (const w of warnings) console.log(`${name}: warning: ${w.message}`);
    for (const e of errors) console.error(`${name}: error: ${e}`);
    if (errors.length > 0) {
      failed = true;
      console.error(`${name}: ${label}: INVALID (${errors.length} error(s))`);
    } else {
      console.log(`${name}: ${label}: valid (0 errors, ${warnings.length} warnings)`);
    }
  }
  process.exit(failed ? 1 : 0);
}

main().catch((e) => {
  console.error(`error: ${e.stack ?? e}`);
  process.exit(1);
});
