// Bundles Pipedrive's app-extensions SDK into ../static/ui/sdk.js (committed, so building the
// service needs no npm). `--check` rebuilds in memory and fails if the committed file differs,
// which proves the bundle is reproducible from package-lock.json.
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const here = dirname(fileURLToPath(import.meta.url));
const target = join(here, '..', 'static', 'ui', 'sdk.js');
const sdk = JSON.parse(
  readFileSync(join(here, 'node_modules', '@pipedrive', 'app-extensions-sdk', 'package.json'), 'utf8'),
);

const result = await esbuild.build({
  entryPoints: [join(here, 'sdk-entry.js')],
  bundle: true,
  minify: true,
  format: 'iife',
  target: 'es2019',
  legalComments: 'none',
  banner: { js: `/* @pipedrive/app-extensions-sdk ${sdk.version} (MIT License, Copyright Pipedrive, Inc.); built by ui/build.mjs */` },
  write: false,
  logLevel: 'warning',
});
const bundle = result.outputFiles[0].text;

if (process.argv.includes('--check')) {
  const committed = readFileSync(target, 'utf8');
  if (committed !== bundle) {
    console.error('static/ui/sdk.js differs from a fresh build: run `npm ci && npm run build` in ui/ and commit it');
    process.exit(1);
  }
  console.log('static/ui/sdk.js matches a fresh build');
} else {
  writeFileSync(target, bundle);
  console.log(`wrote static/ui/sdk.js (${bundle.length} bytes)`);
}
