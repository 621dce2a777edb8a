#!/usr/bin/env node
// Generates client/js/errors.js and client/js/errors.d.ts from the error
// catalogue, proto/errors.def (ids, exit statuses, typed detail keys, default
// messages and hints), so that the module's typed errors cannot drift from the
// daemon's.
//
//   node tools/gen-errors.js [--check] [ERRORS_DEF]
//
// --check writes nothing: it exits 1 and names the stale file when a generated
// file differs from what the catalogue gives (the unit test runs it so).
'use strict';

const fs = require('node:fs');
const path = require('node:path');

const HERE = path.resolve(__dirname, '..');

// errors.def is a list of X(SYMBOL, "id", exit, "details", "message", "hint")
// with C string literals (adjacent ones concatenated) and C comments.
function parseCatalogue(text) {
  const src = text.replace(/\/\*[\s\S]*?\*\//g, '');
  const entries = [];
  let i = 0;
  const skipSpace = () => {
    while (i < src.length && /\s/.test(src[i])) i++;
  };
  const readString = () => {
    let out = '';
    skipSpace();
    if (src[i] !== '"') throw new Error(`expected a string at offset ${i}`);
    while (src[i] === '"') {
      i++;
      while (src[i] !== '"') {
        if (src[i] === '\\') {
          const c = src[i + 1];
          out += c === 'n' ? '\n' : c === 't' ? '\t' : c;
          i += 2;
        } else {
          out += src[i++];
        }
      }
      i++;
      skipSpace();
    }
    return out;
  };
  const expect = (ch) => {
    skipSpace();
    if (src[i] !== ch) throw new Error(`expected '${ch}' at offset ${i}`);
    i++;
  };
  for (;;) {
    const at = src.indexOf('X(', i);
    if (at < 0) break;
    i = at + 2;
    const sym = /^\s*([A-Z0-9_]+)/.exec(src.slice(i));
    i += sym[0].length;
    expect(',');
    const id = readString();
    expect(',');
    skipSpace();
    const exit = /^\d+/.exec(src.slice(i));
    i += exit[0].length;
    expect(',');
    const details = readString();
    expect(',');
    const message = readString();
    expect(',');
    const hint = readString();
    expect(')');
    entries.push({
      symbol: sym[1],
      id,
      exit: Number(exit[0]),
      details: details
        ? details.split(',').map((kv) => {
            const [key, type] = kv.split(':');
            return { key, type };
          })
        : [],
      message,
      hint,
    });
  }
  return entries;
}

// Every error may carry these (errors.c: common_details).
const COMMON = [
  { key: 'file', type: 's' },
  { key: 'device', type: 's' },
  { key: 'job', type: 's' },
  { key: 'port', type: 's' },
  { key: 'platform', type: 's' },
];
const TS_TYPE = { s: 'string', i: 'number', b: 'boolean', a: 'unknown[]', o: 'Record<string, unknown>' };

function className(id) {
  return id.replace(/(^|-)([a-z0-9])/g, (_, __, c) => c.toUpperCase()) + 'Error';
}

function genJs(entries) {
  const lines = [
    '// Generated from proto/errors.def by tools/gen-errors.js: do not edit.',
    "'use strict';",
    '',
    '/** The error catalogue: id -> exit status (flashctl), detail keys and their types, default message and hint. */',
    'const CATALOGUE = Object.freeze({',
  ];
  for (const e of entries) {
    const details = Object.fromEntries(e.details.map((d) => [d.key, d.type]));
    lines.push(
      `  ${JSON.stringify(e.id)}: Object.freeze({ exit: ${e.exit}, className: ${JSON.stringify(className(e.id))}, ` +
        `details: Object.freeze(${JSON.stringify(details)}), message: ${JSON.stringify(e.message)}, ` +
        `hint: ${JSON.stringify(e.hint)} }),`,
    );
  }
  lines.push('});', '', 'module.exports = { CATALOGUE };', '');
  return lines.join('\n');
}

function genDts(entries) {
  const lines = [
    '// Generated from proto/errors.def by tools/gen-errors.js: do not edit.',
    '',
    '/** Every catalogue id (proto/errors.def), as the daemon and flashctl use it. */',
    'export type ErrorCode =',
    ...entries.map((e, k) => `  | ${JSON.stringify(e.id)}${k === entries.length - 1 ? ';' : ''}`),
    '',
    '/** Facts any error may carry. */',
    'export interface CommonDetail {',
    ...COMMON.map((d) => `  ${d.key}?: ${TS_TYPE[d.type]};`),
    '}',
    '',
    '/** The typed `detail` of each catalogue id (keys declared in proto/errors.def). */',
    'export interface ErrorDetails {',
  ];
  for (const e of entries) {
    const body = e.details.map((d) => `${d.key}?: ${TS_TYPE[d.type]}`).join('; ');
    lines.push(`  ${JSON.stringify(e.id)}: CommonDetail${body ? ` & { ${body} }` : ''};`);
  }
  lines.push('}', '', '/** Exit status per id, as flashctl exits. */');
  lines.push('export type ExitStatus = { [C in ErrorCode]: number };', '');
  return lines.join('\n');
}

function main(argv) {
  const check = argv.includes('--check');
  const def = argv.find((a) => !a.startsWith('--')) || path.join(HERE, '..', '..', 'proto', 'errors.def');
  const entries = parseCatalogue(fs.readFileSync(def, 'utf8'));
  if (entries.length === 0) throw new Error(`${def}: no entries`);
  const outputs = { 'errors.js': genJs(entries), 'errors.d.ts': genDts(entries) };
  let stale = 0;
  for (const [name, text] of Object.entries(outputs)) {
    const file = path.join(HERE, name);
    const now = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : null;
    if (now === text) continue;
    if (check) {
      console.error(`${file} is stale: run node client/js/tools/gen-errors.js`);
      stale++;
    } else {
      fs.writeFileSync(file, text);
      console.log(`wrote ${file}`);
    }
  }
  return stale ? 1 : 0;
}

module.exports = { parseCatalogue, className };

if (require.main === module) process.exit(main(process.argv.slice(2)));
