// Facts read from the server's own sources, so the deployment files are checked against what
// the code accepts and exports rather than against a copy that can drift:
//   - metric names (string literals twin_* in server/metrics.{h,cc}; histograms marked);
//   - server.yaml keys (the CheckKeys lists in server/server_config.cc), merge.yaml keys
//     (those of merge_offline/merge_config.cc);
//   - twin-server's flags (ABSL_FLAG in server/main.cc);
//   - the gRPC service name reported by grpc.health.v1 (server/twin_server.cc).
// Each reader fails loudly when the pattern it relies on is gone.
"use strict";

const fs = require("fs");
const path = require("path");

const ROOT = path.resolve(__dirname, "..", "..", "..");

function read(rel) {
  const file = path.join(ROOT, rel);
  if (!fs.existsSync(file)) throw new Error(`${rel} does not exist`);
  return fs.readFileSync(file, "utf8");
}

function metricNames() {
  const names = new Set();
  const histograms = new Set();
  for (const rel of ["server/metrics.h", "server/metrics.cc"]) {
    const src = read(rel);
    for (const m of src.matchAll(/"(twin_[a-z0-9_]+)"/g)) names.add(m[1]);
    for (const m of src.matchAll(/BuildHistogram\(\)\s*\.Name\(\s*"(twin_[a-z0-9_]+)"/g)) histograms.add(m[1]);
  }
  if (!names.size) throw new Error("no twin_* metric names found in server/metrics.{h,cc}");
  return { names, histograms };
}

// Whether `series` (a name as written in PromQL) is exported: histograms add _bucket, _sum
// and _count series.
function isExported(series, metrics) {
  if (metrics.names.has(series)) return true;
  const m = /^(.*)_(bucket|sum|count)$/.exec(series);
  return Boolean(m && metrics.histograms.has(m[1]));
}

// Metric names a PromQL expression reads: twin_* identifiers that are not part of a
// recording rule's name (level:metric:operation), a label name or a quoted value.
function metricsInExpr(expr) {
  const stripped = expr.replace(/"(?:[^"\\]|\\.)*"/g, '""').replace(/\{[^}]*\}/g, "{}");
  const out = new Set();
  for (const m of stripped.matchAll(/(?<![\w:])(twin_[a-z0-9_]+)(?![\w:])/g)) out.add(m[1]);
  return [...out];
}

// { "": [top-level keys], batching: [...], ... }
function serverConfigKeys() {
  const src = read("server/server_config.cc");
  const keys = {};
  for (const m of src.matchAll(/CheckKeys\(\s*\w+\s*,\s*"([^"]*)"\s*,\s*\{([^}]*)\}/g)) {
    keys[m[1]] = [...m[2].matchAll(/"([^"]+)"/g)].map((x) => x[1]);
  }
  if (!keys[""]) throw new Error("cannot find the CheckKeys lists in server/server_config.cc");
  return keys;
}

// Unknown keys of a parsed server.yaml, each as "path: unknown key".
function serverYamlProblems(config, keys) {
  const problems = [];
  if (config === null || typeof config !== "object" || Array.isArray(config)) return ["server.yaml is not a mapping"];
  for (const [k, v] of Object.entries(config)) {
    if (!keys[""].includes(k)) {
      problems.push(`${k}: unknown key (server_config.cc allows: ${keys[""].join(", ")})`);
    } else if (keys[k]) {
      if (v === null || typeof v !== "object" || Array.isArray(v)) {
        problems.push(`${k}: expected a mapping`);
        continue;
      }
      for (const sub of Object.keys(v)) {
        if (!keys[k].includes(sub)) problems.push(`${k}.${sub}: unknown key (allowed: ${keys[k].join(", ")})`);
      }
    }
  }
  return problems;
}

// merge.yaml keys from merge_offline/merge_config.cc: { "": top level, parameters, twin,
// router, tokenizer, "models[]": one expert entry }.
function mergeConfigKeys() {
  const text = read("merge_offline/merge_config.cc");
  const keys = {};
  for (const m of text.matchAll(/CheckKeys\(\s*\w+\s*,\s*("([^"]*)"|\w+)\s*,\s*\{([^}]*)\}/g)) {
    const list = [...m[3].matchAll(/"([^"]+)"/g)].map((x) => x[1]);
    if (m[2] !== undefined) keys[m[2]] = list;
    else if (list.includes("model") && list.includes("router_data")) keys["models[]"] = list;
  }
  if (!keys[""] || !keys["models[]"]) throw new Error("cannot find the CheckKeys lists in merge_offline/merge_config.cc");
  return keys;
}

// Unknown keys of a parsed merge.yaml.
function mergeYamlProblems(config, keys) {
  const p = [];
  const section = (obj, allowed, where) => {
    if (obj === null || typeof obj !== "object" || Array.isArray(obj)) return;
    for (const k of Object.keys(obj)) if (!allowed.includes(k)) p.push(`${where}${k}: unknown key (allowed: ${allowed.join(", ")})`);
  };
  section(config, keys[""], "");
  for (const [k, v] of Object.entries(config || {})) if (keys[k]) section(v, keys[k], `${k}.`);
  (config.models || []).forEach((m, i) => section(m, keys["models[]"], `models[${i}].`));
  return p;
}

function serverFlags() {
  const src = read("server/main.cc");
  const flags = [...src.matchAll(/ABSL_FLAG\(\s*[\w:]+\s*,\s*(\w+)\s*,/g)].map((m) => m[1]);
  if (!flags.length) throw new Error("no ABSL_FLAG definitions found in server/main.cc");
  return flags;
}

function healthServiceName() {
  const m = /kServiceName\[\]\s*=\s*"([^"]+)"/.exec(read("server/twin_server.cc"));
  if (!m) throw new Error("cannot find kServiceName in server/twin_server.cc");
  return m[1];
}

// The HTTP paths the metrics port answers (server/metrics_http.cc), for the probes that use it.
function metricsHttpPaths() {
  const paths = [...read("server/metrics_http.cc").matchAll(/path == "(\/[a-z]*)"/g)].map((m) => m[1]);
  if (!paths.length) throw new Error("no request paths found in server/metrics_http.cc");
  return paths;
}

module.exports = {
  ROOT, metricNames, isExported, metricsInExpr, serverConfigKeys, serverYamlProblems, serverFlags,
  healthServiceName, metricsHttpPaths, mergeConfigKeys, mergeYamlProblems,
};
