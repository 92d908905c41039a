// The client ships type declarations and a package.json (gateway/web): a TypeScript frontend
// installs it from the repository path (here: package.json's "file:../../gateway/web") and
// type-checks. tsc --strict must accept typescript/example.ts, reject each misuse in
// typescript/misuse.ts, and the declarations must name exactly what the module exports.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const tsc = path.join(here, 'node_modules', '.bin', 'tsc');

function typeCheck(project) {
  const result = spawnSync(tsc, ['-p', path.join(here, 'typescript', project)], {
    cwd: here,
    encoding: 'utf8',
  });
  return { code: result.status, output: `${result.stdout}${result.stderr}` };
}

test('a TypeScript frontend type-checks against the installed client', () => {
  const { code, output } = typeCheck('tsconfig.json');
  assert.equal(code, 0, output);
});

test('the declarations reject misuse (they are real types, not any)', () => {
  const { code, output } = typeCheck('tsconfig.misuse.json');
  assert.notEqual(code, 0, 'misuse.ts must not type-check');
  const lines = new Set([...output.matchAll(/misuse\.ts\((\d+),\d+\): error/g)].map((m) => Number(m[1])));
  assert.deepEqual([...lines].sort((a, b) => a - b), [4, 5, 6, 7, 8, 9, 10], output);
});

test('the declarations name exactly what the module exports', async () => {
  const installed = path.join(here, 'node_modules', 'agentwire-client');
  const manifest = JSON.parse(readFileSync(path.join(installed, 'package.json'), 'utf8'));
  assert.equal(manifest.types, './agentwire-client.d.ts');
  const module = await import('agentwire-client');
  const runtime = Object.keys(module).sort();
  const declarations = readFileSync(path.join(installed, manifest.types), 'utf8');
  const declared = [...declarations.matchAll(/^export declare (?:const|function|class) (\w+)/gm)].map((m) => m[1]);
  if (/^export default /m.test(declarations)) declared.push('default');
  assert.deepEqual(declared.sort(), runtime);
});
