// Rebuilds api/web/vendor/ from the pinned npm packages: one minified ES module per library,
// with its licence text beside it. Run `npm ci --ignore-scripts && npm run build` in web-src/.
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "api", "web", "vendor");
const lock = JSON.parse(readFileSync(join(here, "package-lock.json"), "utf8"));
const version = (name) => lock.packages[`node_modules/${name}`].version;

// qrcode-generator's npm package carries its licence only in a source comment ("Licensed
// under the MIT license", Copyright (c) 2009 Kazuhiko Arase): this is that licence's text.
const MIT_QRCODE = `The MIT License (MIT)

Copyright (c) 2009 Kazuhiko Arase

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
`;

const LIBS = [
  {
    file: "cbor.js",
    pkg: "cborg",
    licence: "Apache-2.0",
    notice: "Copyright 2020 Rod Vagg",
    licenceText: () => readFileSync(join(here, "node_modules/cborg/LICENSE"), "utf8"),
  },
  {
    file: "base45.js",
    pkg: "base45-js",
    licence: "Apache-2.0",
    notice: "Dirk-Willem van Gulik (European eHealth Network DCC development)",
    licenceText: () =>
      readFileSync(join(here, "node_modules/base45-js/LICENSE-ASF-2.0.txt"), "utf8"),
  },
  {
    file: "qrcode.js",
    pkg: "qrcode-generator",
    licence: "MIT",
    notice:
      "Copyright (c) 2009 Kazuhiko Arase. The word 'QR Code' is a registered trademark of DENSO WAVE INCORPORATED",
    licenceText: () => MIT_QRCODE,
  },
];

mkdirSync(out, { recursive: true });
for (const lib of LIBS) {
  const v = version(lib.pkg);
  await build({
    entryPoints: [join(here, "entries", lib.file)],
    outfile: join(out, lib.file),
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    minify: true,
    legalComments: "none",
    charset: "utf8",
    banner: {
      js: `/*! ${lib.pkg} ${v} (npm), ${lib.licence}: ${lib.notice}. See ${lib.pkg}.LICENSE.txt; built by web-src/build.mjs */`,
    },
  });
  writeFileSync(join(out, `${lib.pkg}.LICENSE.txt`), lib.licenceText());
  console.log(`${lib.file}: ${lib.pkg} ${v}`);
}
