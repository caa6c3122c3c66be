// Builds a kustomization the way `kubectl kustomize` does, for the features deploy/ uses:
// resources (files and folders), patches (strategic merge, by the patch's kind and name or
// an explicit target), images and namespace. Any other field is an error, so a feature this
// reader does not implement is never skipped silently.
"use strict";

const fs = require("fs");
const path = require("path");
const yaml = require("js-yaml");

const KNOWN_FIELDS = new Set(["apiVersion", "kind", "resources", "patches", "patchesStrategicMerge", "images", "namespace"]);

// Merge keys of the lists that strategic merge patches merge item by item (the rest are
// replaced whole), from the Kubernetes API's patchMergeKey tags.
const MERGE_KEYS = {
  containers: "name",
  initContainers: "name",
  ephemeralContainers: "name",
  volumes: "name",
  env: "name",
  volumeMounts: "mountPath",
  imagePullSecrets: "name",
  hostAliases: "ip",
  topologySpreadConstraints: "topologyKey",
};

function readYamlDocs(file) {
  return yaml.loadAll(fs.readFileSync(file, "utf8"), null, { filename: file }).filter((d) => d !== null && d !== undefined);
}

function isMap(v) { return v !== null && typeof v === "object" && !Array.isArray(v); }

function mergeKeyFor(field, items) {
  if (field === "ports") {
    const first = items.find(isMap) || {};
    return "containerPort" in first ? "containerPort" : "port";
  }
  return MERGE_KEYS[field];
}

function strategicMerge(base, patch, where) {
  if (!isMap(base) || !isMap(patch)) return patch;
  if ("$patch" in patch) throw new Error(`${where}: $patch directives are not supported here`);
  const out = { ...base };
  for (const [key, pv] of Object.entries(patch)) {
    const at = `${where}.${key}`;
    if (pv === null) {
      delete out[key];
    } else if (Array.isArray(pv) && Array.isArray(out[key]) && mergeKeyFor(key, pv.concat(out[key]))) {
      const mk = mergeKeyFor(key, pv.concat(out[key]));
      const merged = out[key].map((x) => x);
      for (const item of pv) {
        if (!isMap(item) || !(mk in item)) throw new Error(`${at}: patch item without merge key '${mk}'`);
        const i = merged.findIndex((x) => isMap(x) && x[mk] === item[mk]);
        if (i >= 0) merged[i] = strategicMerge(merged[i], item, `${at}[${mk}=${item[mk]}]`);
        else merged.push(item);
      }
      out[key] = merged;
    } else if (isMap(pv) && isMap(out[key])) {
      out[key] = strategicMerge(out[key], pv, at);
    } else {
      out[key] = pv;
    }
  }
  return out;
}

function podSpecs(obj) {
  const specs = [];
  if (obj.spec && obj.spec.template && obj.spec.template.spec) specs.push(obj.spec.template.spec);
  if (obj.spec && obj.spec.jobTemplate) specs.push(obj.spec.jobTemplate.spec.template.spec);
  if (obj.kind === "Pod" && obj.spec) specs.push(obj.spec);
  return specs;
}

function applyImages(objects, images) {
  for (const img of images) {
    for (const obj of objects) {
      for (const spec of podSpecs(obj)) {
        for (const c of [...(spec.containers || []), ...(spec.initContainers || [])]) {
          const name = c.image.replace(/@.*$/, "").replace(/:[^/:]*$/, "");
          if (name !== img.name) continue;
          let out = img.newName || name;
          if (img.digest) out += `@${img.digest}`;
          else if (img.newTag) out += `:${img.newTag}`;
          else if (c.image.length > name.length) out += c.image.slice(name.length);
          c.image = out;
        }
      }
    }
  }
}

function matches(obj, target) {
  return (!target.kind || obj.kind === target.kind) && (!target.name || obj.metadata.name === target.name);
}

// The objects of the kustomization in `dir` (a folder holding kustomization.yaml).
function build(dir) {
  const kfile = path.join(dir, "kustomization.yaml");
  if (!fs.existsSync(kfile)) throw new Error(`${dir}: no kustomization.yaml`);
  const k = yaml.load(fs.readFileSync(kfile, "utf8"));
  for (const key of Object.keys(k)) {
    if (!KNOWN_FIELDS.has(key)) throw new Error(`${kfile}: '${key}' is not supported by this reader`);
  }
  let objects = [];
  for (const r of k.resources || []) {
    const p = path.resolve(dir, r);
    if (!fs.existsSync(p)) throw new Error(`${kfile}: resource ${r} does not exist`);
    objects.push(...(fs.statSync(p).isDirectory() ? build(p) : readYamlDocs(p)));
  }
  objects = JSON.parse(JSON.stringify(objects));
  const patches = [...(k.patches || []), ...(k.patchesStrategicMerge || []).map((p) => ({ path: p }))];
  for (const p of patches) {
    if (!p.path) throw new Error(`${kfile}: only patches with a path are supported`);
    const pfile = path.resolve(dir, p.path);
    for (const patch of readYamlDocs(pfile)) {
      const target = p.target || { kind: patch.kind, name: patch.metadata && patch.metadata.name };
      const hits = objects.map((o, i) => [o, i]).filter(([o]) => matches(o, target));
      if (!hits.length) throw new Error(`${pfile}: the patch matches no object (${target.kind}/${target.name})`);
      for (const [o, i] of hits) {
        objects[i] = strategicMerge(o, { ...patch, metadata: { ...patch.metadata, name: o.metadata.name } }, `${p.path}:${o.kind}/${o.metadata.name}`);
      }
    }
  }
  applyImages(objects, k.images || []);
  if (k.namespace) for (const o of objects) o.metadata.namespace = k.namespace;
  return objects;
}

// A canonical form for comparing two renderings: objects by kind and name, keyed lists by key.
function canonical(objects) {
  const sortLists = (v, key) => {
    if (Array.isArray(v)) {
      const items = v.map((x) => sortLists(x));
      const mk = key && mergeKeyFor(key, items);
      if (mk && items.every((x) => isMap(x) && mk in x)) items.sort((a, b) => String(a[mk]).localeCompare(String(b[mk])));
      return items;
    }
    if (isMap(v)) {
      const o = {};
      for (const k2 of Object.keys(v).sort()) o[k2] = sortLists(v[k2], k2);
      return o;
    }
    return v;
  };
  return objects
    .map((o) => sortLists(o))
    .sort((a, b) => `${a.kind}/${a.metadata.name}`.localeCompare(`${b.kind}/${b.metadata.name}`));
}

module.exports = { build, canonical, strategicMerge, readYamlDocs };
