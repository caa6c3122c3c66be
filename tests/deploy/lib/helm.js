// Renders helm/twin-merging as `helm template` would, with lib/gotemplate.js: values.yaml
// merged with override files (maps merge, other values replace, null deletes), the built-in
// objects the chart reads (.Values, .Release, .Chart, .Capabilities, .Template), every
// template parsed first so `define`s from any file are visible to `include`.
"use strict";

const fs = require("fs");
const path = require("path");
const yaml = require("js-yaml");
const { Renderer } = require("./gotemplate");

const isMap = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

function mergeValues(base, over) {
  const out = { ...base };
  for (const [k, v] of Object.entries(over || {})) {
    if (v === null) delete out[k];
    else if (isMap(v) && isMap(out[k])) out[k] = mergeValues(out[k], v);
    else out[k] = v;
  }
  return out;
}

// Chart.yaml fields as Helm exposes them (.Chart.Name, .Chart.AppVersion, ...).
function chartObject(meta) {
  const o = {};
  for (const [k, v] of Object.entries(meta)) o[k[0].toUpperCase() + k.slice(1)] = v;
  return o;
}

function loadValues(chartDir, overrideFiles) {
  let values = yaml.load(fs.readFileSync(path.join(chartDir, "values.yaml"), "utf8")) || {};
  for (const f of overrideFiles) {
    const over = typeof f === "string" ? yaml.load(fs.readFileSync(f, "utf8")) : f;
    values = mergeValues(values, over || {});
  }
  return values;
}

// overrideFiles: paths of values files or value objects, applied in order.
// Returns { values, manifests: [{template, text}], notes }; throws on a template error.
function render(chartDir, overrideFiles, release = {}) {
  const meta = yaml.load(fs.readFileSync(path.join(chartDir, "Chart.yaml"), "utf8"));
  const values = loadValues(chartDir, overrideFiles);
  const tdir = path.join(chartDir, "templates");
  const r = new Renderer();
  const trees = {};
  for (const name of fs.readdirSync(tdir).sort()) {
    trees[name] = r.addTemplate(fs.readFileSync(path.join(tdir, name), "utf8"), `templates/${name}`);
  }
  const top = {
    Values: values,
    Release: {
      Name: release.name || "twin",
      Namespace: release.namespace || "ml",
      Service: "Helm",
      Revision: BigInt(release.revision || 1),
      IsInstall: true,
      IsUpgrade: false,
    },
    Chart: chartObject(meta),
    Capabilities: { KubeVersion: { Version: "v1.29.0", Major: "1", Minor: "29" } },
  };
  const manifests = [];
  let notes = "";
  for (const [name, tree] of Object.entries(trees)) {
    if (name.startsWith("_")) continue;
    const text = r.render(tree, { ...top, Template: { Name: `${meta.name}/templates/${name}`, BasePath: `${meta.name}/templates` } });
    if (name === "NOTES.txt") notes = text;
    else manifests.push({ template: name, text });
  }
  return { values, manifests, notes };
}

module.exports = { render, loadValues, mergeValues };
