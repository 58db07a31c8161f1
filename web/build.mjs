// Build script for the Courier web client (`npm run build`).
// 1. protoc + protoc-gen-es: ../proto/proto/client.proto -> src/gen/client_pb.ts
// 2. esbuild: src/main.ts -> dist/app.js (one minified IIFE; the CSP allows
//    only 'self' scripts, so a single classic <script src="/app.js"> is used)
// 3. copy src/index.html and src/style.css into dist/
import { execFileSync } from "node:child_process";
import { mkdirSync, rmSync, existsSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const protoDir = join(here, "..", "proto", "proto");
const genDir = join(here, "src", "gen");
const distDir = join(here, "dist");
const protoc = process.env.PROTOC || "protoc";
const plugin = join(here, "node_modules", ".bin", "protoc-gen-es");

if (!existsSync(plugin)) {
  console.error("node_modules/.bin/protoc-gen-es is missing: run `npm ci` (or `npm install`) first");
  process.exit(1);
}

rmSync(genDir, { recursive: true, force: true });
mkdirSync(genDir, { recursive: true });
try {
  execFileSync(protoc, [
    `--plugin=protoc-gen-es=${plugin}`,
    `--es_out=${genDir}`,
    "--es_opt=target=ts",
    `-I${protoDir}`,
    join(protoDir, "client.proto"),
  ], { stdio: "inherit", cwd: here });
} catch (e) {
  console.error(`protoc failed (${protoc}); set PROTOC to a protoc binary`);
  process.exit(1);
}

// dist/ is embedded by node/build.rs, which rebuilds the node when a file
// in it changes: a file is written only when its bytes changed.
mkdirSync(distDir, { recursive: true });
const bundle = await build({
  entryPoints: [join(here, "src", "main.ts")],
  bundle: true,
  format: "iife",
  target: "es2022",
  minify: true,
  sourcemap: false,
  write: false,
  outfile: join(distDir, "app.js"),
  logLevel: "warning",
});
const outputs = [[join(distDir, "app.js"), bundle.outputFiles[0].contents]];
for (const f of ["index.html", "style.css"]) {
  outputs.push([join(distDir, f), readFileSync(join(here, "src", f))]);
}
let changed = 0;
for (const [path, bytes] of outputs) {
  if (existsSync(path) && Buffer.compare(readFileSync(path), Buffer.from(bytes)) === 0) continue;
  writeFileSync(path, bytes);
  changed++;
}
console.log(`dist/: app.js index.html style.css (${changed} changed)`);
