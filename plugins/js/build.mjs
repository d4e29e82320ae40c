// Builds one JavaScript plugin: bundles `app.js` (with comb's SDK and
// @opentelemetry/api) into one ES module with esbuild, then makes it a
// component of comb's `plugin` world with componentize-js.
//
//   node build.mjs APP_JS WIT_DIR OUT_WASM SDK_DIR
//
// The app imports the SDK as `comb` (SDK_DIR/index.js).
//
// Run by `cargo xtask plugins` from target/tools/js, where the pinned
// packages of plugins/js/package.json are installed.

import { writeFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { build } from 'esbuild';
import { componentize } from '@bytecodealliance/componentize-js';

const [app, wit, out, sdk] = process.argv.slice(2).map((path) => resolve(path));
const scratch = await mkdtemp(join(tmpdir(), 'comb-js-'));
try {
  const bundle = join(scratch, 'plugin.js');
  await build({
    entryPoints: [app],
    outfile: bundle,
    bundle: true,
    format: 'esm',
    platform: 'neutral',
    // comb's interfaces are the component's imports, not modules.
    external: ['comb:plugin/*'],
    alias: { comb: join(sdk, 'index.js') },
    // The packages live beside this script, not beside the app.
    nodePaths: [join(import.meta.dirname, 'node_modules')],
    logLevel: 'warning',
  });
  const { component } = await componentize({
    sourcePath: bundle,
    witPath: wit,
    worldName: 'plugin',
    // No fetch(): a plugin's outgoing HTTP is not part of this world.
    disableFeatures: ['http', 'fetch-event'],
  });
  await writeFile(out, component);
} finally {
  await rm(scratch, { recursive: true, force: true });
}
