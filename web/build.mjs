// Builds dist/ (committed; mpcvit-client embeds it): app.js and worker.js
// bundled and minified by esbuild, index.html and style.css copied. The
// output depends only on the sources and the locked packages, so
// scripts/web.sh can check that a rebuild reproduces dist/ byte for byte.
import { build } from "esbuild";
import { copyFileSync, mkdirSync, readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";

const common = { bundle: true, minify: true, format: "iife", target: "es2022", legalComments: "none", logLevel: "warning" };
mkdirSync("dist", { recursive: true });
await build({ ...common, entryPoints: ["src/main.ts"], outfile: "dist/app.js" });
await build({ ...common, entryPoints: ["src/worker.ts"], outfile: "dist/worker.js" });
copyFileSync("src/index.html", "dist/index.html");
copyFileSync("src/style.css", "dist/style.css");

// The whole page, gzipped, must stay within 150 KB.
const LIMIT = 150 * 1024;
let total = 0;
for (const f of ["index.html", "app.js", "worker.js", "style.css"]) {
  const gz = gzipSync(readFileSync(`dist/${f}`), { level: 9 }).length;
  total += gz;
  console.log(`dist/${f}: ${gz} bytes gzipped`);
}
console.log(`dist/: ${total} bytes gzipped (limit ${LIMIT})`);
if (total > LIMIT) {
  console.error(`the page is ${total} bytes gzipped, over ${LIMIT}`);
  process.exit(1);
}
