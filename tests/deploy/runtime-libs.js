// Checks the runtime stage of the Dockerfile against Debian's package index:
//   1. every package the runtime stages install exists (apt-cache policy);
//   2. with built binaries (argument: their folder), every shared library they link
//      (readelf NEEDED) belongs to a package the runtime-cpu image installs, directly or as a
//      dependency, so the image cannot miss a library a new dependency brought in.
// Skips (exit 0, saying so) where apt's package lists are not there.
//
//   node runtime-libs.js [BIN_DIR]
"use strict";

const fs = require("fs");
const path = require("path");
const { execFileSync, spawnSync } = require("child_process");
const { ROOT } = require("./lib/sources");

const BINARIES = ["twin-server", "twin-merge", "twin-client", "twin-inspect"];
const run = (cmd, args) => execFileSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });

// Packages installed by `apt-get install` in the runtime stages of the cpu variant.
function runtimePackages() {
  const text = fs.readFileSync(path.join(ROOT, "Dockerfile"), "utf8").replace(/\\\n/g, " ");
  const stages = text.split(/\nFROM /);
  const pkgs = [];
  for (const stage of stages) {
    const name = (/^\S+ AS (\S+)/.exec(stage) || [])[1];
    if (name !== "runtime-base" && name !== "runtime-cpu") continue;
    for (const m of stage.matchAll(/apt-get install ([^&\n]*)/g)) {
      pkgs.push(...m[1].split(/\s+/).filter((w) => w && !w.startsWith("-") && !w.startsWith("$")));
    }
  }
  return pkgs;
}

// Packages of `pkgs` that have an installation candidate, from one `apt-cache policy` call
// (each apt-cache call loads the whole cache: a second or more).
function withCandidate(pkgs) {
  const res = spawnSync("apt-cache", ["policy", ...pkgs], { encoding: "utf8" });
  const found = new Set();
  for (const m of (res.stdout || "").matchAll(/^(\S+):\n\s+Installed: .*\n\s+Candidate: (.*)$/gm)) {
    if (m[2].trim() !== "(none)") found.add(m[1].replace(/:\w+$/, ""));
  }
  return found;
}

function closure(pkgs) {
  const out = run("apt-cache", ["depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
    "--no-breaks", "--no-replaces", "--no-enhances", ...pkgs]);
  const names = new Set();
  for (const line of out.split("\n")) {
    const m = /^\s*\|?(?:Pre)?Depends: <?([^\s>]+)>?$/.exec(line) || /^([^\s<][^\s]*)$/.exec(line);
    if (m) names.add(m[1].replace(/:\w+$/, ""));
  }
  return names;
}

function neededLibraries(binDir) {
  const libs = new Set();
  for (const b of BINARIES) {
    const file = path.join(binDir, b);
    if (!fs.existsSync(file)) throw new Error(`${file} does not exist`);
    for (const m of run("readelf", ["-d", file]).matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)) libs.add(m[1]);
  }
  return [...libs];
}

// soname -> owning package ("" when none), from one `dpkg -S` over every path: each lookup
// scans dpkg's whole database, so they are batched. A library is looked up under its ld.so
// cache path and its resolved path (merged /usr: /lib vs /usr/lib).
function owners(sonames) {
  const ldcache = run("ldconfig", ["-p"]);
  const paths = new Map();
  for (const soname of sonames) {
    const m = new RegExp(`^\\s*${soname.replace(/[.+]/g, "\\$&")} \\(([^)]*)\\) => (\\S+)$`, "m").exec(ldcache);
    paths.set(soname, m ? [m[2], fs.realpathSync(m[2])] : []);
  }
  const all = [...new Set([...paths.values()].flat())];
  const res = spawnSync("dpkg", ["-S", ...all], { encoding: "utf8" });
  const byPath = new Map();
  for (const line of (res.stdout || "").split("\n")) {
    const m = /^([^:\s,]+)(?::[\w-]+)?: (\/\S+)$/.exec(line);
    if (m) byPath.set(m[2], m[1]);
  }
  const out = new Map();
  for (const [soname, ps] of paths) out.set(soname, ps.map((x) => byPath.get(x)).find(Boolean) || "");
  return out;
}

function main() {
  const problems = [];
  const pkgs = runtimePackages();
  const known = withCandidate(["libc6", ...pkgs]);
  if (!known.has("libc6")) {
    console.log("skipped - runtime packages: no apt package lists on this machine");
    return 0;
  }
  if (pkgs.length < 5) problems.push(`only ${pkgs.length} runtime packages found in the Dockerfile`);
  for (const p of pkgs) if (!known.has(p)) problems.push(`Dockerfile installs ${p}, which Debian's index does not have`);
  const binDir = process.argv[2];
  let checkedLibs = 0;
  if (binDir && !problems.length) {
    const have = closure(pkgs);
    for (const [soname, owner] of owners(neededLibraries(binDir))) {
      checkedLibs++;
      if (!owner) problems.push(`${soname}: no Debian package owns it on this machine`);
      else if (!have.has(owner)) problems.push(`${soname} (package ${owner}) is not installed by the runtime stage`);
    }
  }
  for (const p of problems) console.log(`       ${p}`);
  const what = binDir ? `, ${checkedLibs} linked libraries of ${BINARIES.join(", ")}` : " (no binaries given: linked libraries not checked)";
  console.log(`${problems.length ? "FAIL" : "ok  "} - runtime packages: ${pkgs.length} checked in the index${what}`);
  return problems.length ? 1 : 0;
}

process.exit(main());
