#!/usr/bin/env node
// A `solc` command line over the npm `solc` package (the official compiler built to
// WebAssembly), for machines where no native solc of the pinned version can be had.
//
// py-solc-x (and through it ape-solidity and tools/build_artifacts.py) only needs two
// things from a solc executable: `--version` and `--standard-json` read from stdin, with
// `--base-path`, `--include-path` and `--allow-paths` to resolve imports. That is all this
// bridge implements; any other use fails with a message that says so, rather than
// pretending to be a full compiler.
//
// tools/compiler.py writes the launcher `solc-v<version>` that runs this file with
// SOLC_BRIDGE_MODULE (the npm package folder) and SOLC_BRIDGE_VERSION (the pinned
// version) set; the bridge refuses to run if the package holds another version.
"use strict";

const fs = require("node:fs");
const path = require("node:path");

const USAGE =
  "supported: --version | --standard-json [--base-path P] [--include-path P] [--allow-paths P[,P...]] (JSON on stdin)";

function fail(message) {
  process.stderr.write(`solc bridge (npm solc): ${message}\n`);
  process.exit(2);
}

function loadCompiler() {
  const modulePath = process.env.SOLC_BRIDGE_MODULE;
  const expected = process.env.SOLC_BRIDGE_VERSION;
  if (!modulePath || !expected) {
    fail("SOLC_BRIDGE_MODULE and SOLC_BRIDGE_VERSION must be set; run `make solc` to regenerate the launcher");
  }
  let solc;
  try {
    solc = require(modulePath);
  } catch (err) {
    fail(`cannot load the npm solc package from ${modulePath} (${err.message}); run \`npm ci\``);
  }
  const version = solc.version();
  if (!version.startsWith(`${expected}+`)) {
    fail(`npm solc is ${version} but ${expected} is pinned; run \`npm ci\``);
  }
  return solc;
}

function parseArgs(argv) {
  const options = { version: false, standardJson: false, roots: [] };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const takeValue = () => {
      if (i + 1 >= argv.length) fail(`${arg} needs a value; ${USAGE}`);
      return argv[++i];
    };
    if (arg === "--version") options.version = true;
    else if (arg === "--standard-json") options.standardJson = true;
    else if (arg === "--base-path" || arg === "--include-path") options.roots.push(takeValue());
    else if (arg === "--allow-paths") options.roots.push(...takeValue().split(",").filter(Boolean));
    else fail(`option ${JSON.stringify(arg)} is not supported by the bridge; ${USAGE}. Install a native solc for anything else.`);
  }
  if (options.version === options.standardJson) fail(`give exactly one of --version or --standard-json; ${USAGE}`);
  return options;
}

// Imports the compiler asks for are read only from inside the folders solc itself would
// allow (base path, include paths, allowed paths), never from anywhere else on disk.
function importReader(roots) {
  const resolvedRoots = roots.map((root) => path.resolve(root));
  return (importPath) => {
    for (const root of resolvedRoots) {
      const candidate = path.resolve(root, importPath);
      if (candidate !== root && !candidate.startsWith(root + path.sep)) continue;
      if (fs.existsSync(candidate) && fs.statSync(candidate).isFile()) {
        return { contents: fs.readFileSync(candidate, "utf8") };
      }
    }
    return { error: `File not found inside the allowed folders: ${importPath}` };
  };
}

function main() {
  const options = parseArgs(process.argv.slice(2));
  const solc = loadCompiler();
  if (options.version) {
    // py-solc-x reads `Version: X.Y.Z+commit.HASH` from this line.
    process.stdout.write(`solc, the solidity compiler commandline interface\nVersion: ${solc.version()}\n`);
    return;
  }
  const input = fs.readFileSync(0, "utf8");
  if (!input.trim()) fail("--standard-json expects the compiler input JSON on stdin, and stdin was empty");
  process.stdout.write(solc.compile(input, { import: importReader(options.roots) }));
}

main();
