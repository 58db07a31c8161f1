// Bundles the node-run tests (tests/unit.ts, login.ts, failover.ts) with esbuild
// and runs them (run `npm run build` first: they need src/gen).
import { build } from "esbuild";
import { execFileSync } from "node:child_process";
for (const name of ["unit", "login", "failover", "media"]) {
  await build({ entryPoints: [`tests/${name}.ts`], bundle: true, platform: "node", format: "esm", outfile: `.test-out/${name}.test.mjs`, logLevel: "warning" });
  execFileSync(process.execPath, [`.test-out/${name}.test.mjs`], { stdio: "inherit" });
}
