// Builds the designer with esbuild:
//   web/dist/{index.html, designer.js, designer.css}   embedded into letterpress-api (api/build.rs)
//   figma/dist/{code.js, ui.html}                       the Figma plug-in (figma/manifest.json)
//   figma/dist/manifest.json                            only with LETTERPRESS_SERVER=URL: a manifest
//                                                       whose networkAccess allows that server
// With --tests it also bundles test/*.test.ts and e2e/*.test.ts into build/ for `node --test`.
import { build } from "esbuild";
import { copyFileSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const at = (...p) => join(here, ...p);
const browser = { bundle: true, format: "iife", target: ["chrome100", "firefox100", "safari15"], minify: true, legalComments: "none", logLevel: "warning" };

// --- web page -------------------------------------------------------------------------------
mkdirSync(at("web/dist"), { recursive: true });
await build({ ...browser, entryPoints: [at("web/src/main.ts")], outfile: at("web/dist/designer.js") });
await build({ ...browser, format: undefined, entryPoints: [at("web/src/designer.css")], outfile: at("web/dist/designer.css") });
copyFileSync(at("web/index.html"), at("web/dist/index.html"));

// --- Figma plug-in ----------------------------------------------------------------------------
mkdirSync(at("figma/dist"), { recursive: true });
// Figma's sandbox runs an older JavaScript engine: keep the syntax at ES2017.
await build({ ...browser, target: "es2017", entryPoints: [at("figma/code.ts")], outfile: at("figma/dist/code.js") });
const ui = await build({ ...browser, entryPoints: [at("figma/ui.ts")], write: false });
const uiJs = ui.outputFiles[0].text.replace(/<\/script/gi, "<\\/script");
const css = readFileSync(at("web/dist/designer.css"), "utf8");
// Figma loads ui.html as one string: script and style must be inline.
const html = readFileSync(at("figma/ui.html"), "utf8")
  .replace("/*DESIGNER_CSS*/", () => css)
  .replace("/*DESIGNER_UI_JS*/", () => uiJs);
writeFileSync(at("figma/dist/ui.html"), html);
const server = process.env.LETTERPRESS_SERVER;
if (server) {
  const origin = new URL(server).origin;
  const manifest = JSON.parse(readFileSync(at("figma/manifest.json"), "utf8"));
  manifest.main = "code.js";
  manifest.ui = "ui.html";
  manifest.networkAccess.allowedDomains = [origin];
  writeFileSync(at("figma/dist/manifest.json"), `${JSON.stringify(manifest, null, 2)}\n`);
  console.log(`figma/dist/manifest.json allows ${origin}`);
}

// --- tests ------------------------------------------------------------------------------------
if (process.argv.includes("--tests")) {
  for (const dir of ["test", "e2e"]) {
    rmSync(at("build", dir), { recursive: true, force: true });
    const entries = readdirSync(at(dir)).filter((f) => f.endsWith(".test.ts")).map((f) => at(dir, f));
    await build({
      entryPoints: entries,
      outdir: at("build", dir),
      outExtension: { ".js": ".mjs" },
      bundle: true,
      platform: "node",
      format: "esm",
      target: "node20",
      packages: "external",
      logLevel: "warning",
    });
  }
}
