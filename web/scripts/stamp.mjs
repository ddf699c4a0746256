// Writes source-hash.txt into the build folder: sha256 over the front-end sources (see SOURCES), so a
// test (tests/web/test_wall_build.py) can tell a shipped build made from other sources. Keep the
// algorithm in step with that test: for each file, sorted by its path relative to web/, hash
// "<path>\0<bytes>\0".
import { createHash } from "node:crypto";
import { readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { join, relative, sep } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const SOURCES = ["src", "index.html", "package.json", "package-lock.json", "vite.config.ts", "tsconfig.json"];

function walk(path) {
  return statSync(path).isDirectory() ? readdirSync(path).flatMap((n) => walk(join(path, n))) : [path];
}

const files = SOURCES.flatMap((s) => walk(join(root, s)))
  .map((f) => relative(root, f).split(sep).join("/"))
  .sort();
const hash = createHash("sha256");
for (const f of files) {
  hash.update(f + "\0");
  hash.update(readFileSync(join(root, f)));
  hash.update("\0");
}
const out = join(root, "..", "pipeline", "web", "static", "app", "source-hash.txt");
writeFileSync(out, hash.digest("hex") + "\n");
console.log(`source-hash.txt: ${files.length} files`);
