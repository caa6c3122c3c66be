// Validates Kubernetes objects twice:
//  1. against the OpenAPI schemas compiled into the kubernetes-models packages (types,
//     formats, enums, required fields);
//  2. for unknown fields, which those schemas (like the API server, which only warns) let
//     through: the packages' TypeScript declarations list every field of every type, and a
//     field that is not there is reported with its path (a misspelt `readinessProbe` would
//     otherwise be dropped silently by the cluster).
"use strict";

const fs = require("fs");
const path = require("path");

const NODE_MODULES = path.join(__dirname, "..", "node_modules");

// apiVersion -> [package folder, folder inside it]
function modelFolder(apiVersion) {
  if (apiVersion.startsWith("monitoring.coreos.com/")) {
    return path.join(NODE_MODULES, "@kubernetes-models", "prometheus-operator", apiVersion);
  }
  return path.join(NODE_MODULES, "kubernetes-models", apiVersion);
}

function modelClass(apiVersion, kind) {
  const file = path.join(modelFolder(apiVersion), `${kind}.js`);
  if (!fs.existsSync(file)) return null;
  return require(file)[kind] || null;
}

// ---------------------------------------------------------------------------------------
// A reader of the subset of TypeScript declaration syntax the generated .d.ts files use.

function lexTs(src) {
  const toks = [];
  let i = 0;
  while (i < src.length) {
    const c = src[i];
    if (/\s/.test(c)) { i++; continue; }
    if (src.startsWith("/*", i)) { i = src.indexOf("*/", i + 2) + 2; continue; }
    if (src.startsWith("//", i)) { const e = src.indexOf("\n", i); i = e < 0 ? src.length : e; continue; }
    if (c === '"' || c === "'") {
      let j = i + 1;
      while (src[j] !== c) j += src[j] === "\\" ? 2 : 1;
      toks.push({ t: "str", v: src.slice(i + 1, j) });
      i = j + 1;
      continue;
    }
    const m = /^[A-Za-z_$][A-Za-z0-9_$]*/.exec(src.slice(i, i + 200));
    if (m) { toks.push({ t: "id", v: m[0] }); i += m[0].length; continue; }
    const n = /^-?[0-9.]+/.exec(src.slice(i, i + 50));
    if (n) { toks.push({ t: "num", v: n[0] }); i += n[0].length; continue; }
    toks.push({ t: c });
    i++;
  }
  return toks;
}

class TsReader {
  constructor(toks) { this.toks = toks; this.p = 0; }
  peek(o = 0) { return this.toks[this.p + o]; }
  next() { return this.toks[this.p++]; }
  expect(t) {
    const tok = this.next();
    if (!tok || tok.t !== t) throw new Error(`expected '${t}', got ${tok ? tok.t + (tok.v || "") : "end"}`);
    return tok;
  }

  // type := member ('|' member)*
  type() {
    const members = [this.member()];
    while (this.peek() && this.peek().t === "|") { this.next(); members.push(this.member()); }
    return members.length === 1 ? members[0] : { k: "union", of: members };
  }

  member() {
    const tok = this.next();
    let ty;
    if (tok.t === "{") {
      ty = this.objectBody();
    } else if (tok.t === "str" || tok.t === "num") {
      ty = { k: "prim" };
    } else if (tok.t === "(") {
      ty = this.type();
      this.expect(")");
    } else if (tok.t === "id") {
      if (tok.v === "Array" && this.peek() && this.peek().t === "<") {
        this.next();
        ty = { k: "array", of: this.type() };
        this.expect(">");
      } else if (["string", "number", "boolean", "any", "unknown", "null", "undefined", "object", "true", "false"].includes(tok.v)) {
        ty = { k: "prim" };
      } else {
        let name = tok.v;
        while (this.peek() && this.peek().t === ".") { this.next(); name += "." + this.next().v; }
        ty = { k: "ref", name };
        if (this.peek() && this.peek().t === "<") this.skipBalanced("<", ">");
        if (this.peek() && this.peek().t === "[" && this.peek(1) && this.peek(1).t === "str") {
          this.skipBalanced("[", "]");
          ty = { k: "prim" };
        }
      }
    } else {
      throw new Error(`unexpected '${tok.t}' in a type`);
    }
    while (this.peek() && this.peek().t === "[" && this.peek(1) && this.peek(1).t === "]") {
      this.next(); this.next();
      ty = { k: "array", of: ty };
    }
    return ty;
  }

  skipBalanced(open, close) {
    let depth = 0;
    do {
      const t = this.next().t;
      if (t === open) depth++;
      if (t === close) depth--;
    } while (depth > 0);
  }

  // After '{': properties `"name"?: type;` and index signatures `[key: string]: type;`.
  objectBody() {
    const obj = { k: "object", props: {}, index: null };
    while (this.peek().t !== "}") {
      const tok = this.next();
      if (tok.t === "[") {
        this.next(); this.expect(":"); this.next(); this.expect("]"); this.expect(":");
        obj.index = this.type();
      } else if (tok.t === "str" || tok.t === "id") {
        if (this.peek().t === "?") this.next();
        this.expect(":");
        obj.props[tok.v] = this.type();
      } else {
        throw new Error(`unexpected '${tok.t}' in an object type`);
      }
      if (this.peek().t === ";" || this.peek().t === ",") this.next();
    }
    this.expect("}");
    return obj;
  }
}

// One .d.ts file: its interfaces and type aliases (local names), imports and exports.
function readDts(file) {
  const toks = lexTs(fs.readFileSync(file, "utf8"));
  const r = new TsReader(toks);
  const decls = {};
  const imports = {};
  const exportsAs = {};
  while (r.peek()) {
    const tok = r.next();
    if (tok.t !== "id") continue;
    if (tok.v === "import" && r.peek().t === "{") {
      r.next();
      const names = [];
      while (r.peek().t !== "}") {
        const n = r.next();
        if (n.t !== "id") continue;
        if (r.peek() && r.peek().t === "id" && r.peek().v === "as") { r.next(); names.push([n.v, r.next().v]); } else names.push([n.v, n.v]);
      }
      r.next();
      if (r.peek() && r.peek().v === "from") {
        r.next();
        const from = r.next().v;
        for (const [orig, local] of names) imports[local] = { from, name: orig };
      }
    } else if (tok.v === "interface") {
      const name = r.next().v;
      const bases = [];
      if (r.peek().t === "id" && r.peek().v === "extends") {
        r.next();
        while (r.peek().t !== "{") { const b = r.next(); if (b.t === "id") bases.push(b.v); }
      }
      r.expect("{");
      decls[name] = r.objectBody();
      decls[name].bases = bases;
    } else if (tok.v === "type" && r.peek() && r.peek().t === "id" && r.peek(1) && r.peek(1).t === "=") {
      const name = r.next().v;
      r.next();
      try { decls[name] = r.type(); } catch (e) { decls[name] = { k: "prim" }; }
    } else if (tok.v === "class") {
      // Classes repeat the interface; skip their bodies.
      while (r.peek() && r.peek().t !== "{") r.next();
      r.skipBalanced("{", "}");
    } else if (tok.v === "export" && r.peek() && r.peek().t === "{") {
      r.next();
      while (r.peek().t !== "}") {
        const n = r.next();
        if (n.t !== "id") continue;
        if (r.peek().t === "id" && r.peek().v === "as") { r.next(); exportsAs[r.next().v] = n.v; } else exportsAs[n.v] = n.v;
      }
      r.next();
    }
  }
  return { file, decls, imports, exportsAs };
}

class TypeIndex {
  constructor() { this.files = new Map(); }

  load(file) {
    if (!this.files.has(file)) this.files.set(file, readDts(file));
    return this.files.get(file);
  }

  resolveModule(fromFile, spec) {
    const base = spec.startsWith(".") ? path.resolve(path.dirname(fromFile), spec) : path.join(NODE_MODULES, spec);
    for (const f of [`${base}.d.ts`, path.join(base, "index.d.ts")]) if (fs.existsSync(f)) return f;
    return null;
  }

  // The declaration a name refers to in a file: [declaration, file] or null.
  resolve(file, name, depth = 0) {
    if (depth > 8) return null;
    const d = this.load(file);
    const local = d.exportsAs[name] || name;
    if (d.decls[local]) return [d.decls[local], file];
    const imp = d.imports[local];
    if (!imp) return null;
    const target = this.resolveModule(file, imp.from);
    return target ? this.resolve(target, imp.name, depth + 1) : null;
  }
}

const index = new TypeIndex();

// Lists "path: unknown field" for every field the declarations do not have.
function unknownFields(obj) {
  const file = path.join(modelFolder(obj.apiVersion), `${obj.kind}.d.ts`);
  if (!fs.existsSync(file)) return [];
  const root = index.resolve(file, `I${obj.kind}`);
  if (!root) return [];
  const problems = [];
  walk(obj, root[0], root[1], "", problems);
  return problems;
}

function walk(value, type, file, where, problems) {
  if (value === null || value === undefined) return;
  if (type.k === "ref") {
    const r = index.resolve(file, type.name);
    if (r) walk(value, r[0], r[1], where, problems);
    return;
  }
  if (type.k === "array") {
    if (Array.isArray(value)) value.forEach((v, i) => walk(v, type.of, file, `${where}[${i}]`, problems));
    return;
  }
  if (type.k === "union") {
    const objects = type.of.filter((t) => t.k !== "prim");
    if (objects.length === 1) walk(value, objects[0], file, where, problems);
    return;
  }
  if (type.k !== "object" || typeof value !== "object" || Array.isArray(value)) return;
  const props = { ...type.props };
  for (const b of type.bases || []) if (b === "TypeMeta") Object.assign(props, { apiVersion: { k: "prim" }, kind: { k: "prim" } });
  for (const key of Object.keys(value)) {
    const at = where ? `${where}.${key}` : key;
    if (Object.prototype.hasOwnProperty.call(props, key)) {
      walk(value[key], props[key], file, at, problems);
    } else if (type.index) {
      walk(value[key], type.index, file, at, problems);
    } else {
      problems.push(`${at}: unknown field`);
    }
  }
}

// All problems of one object, each a line naming the field; [] when it is valid.
function validateObject(obj) {
  if (!obj || typeof obj !== "object") return ["not a mapping"];
  if (!obj.apiVersion || !obj.kind) return ["apiVersion and kind are required"];
  const Model = modelClass(obj.apiVersion, obj.kind);
  if (!Model) return [`no schema for ${obj.apiVersion} ${obj.kind}`];
  const problems = [];
  if (!obj.metadata || !obj.metadata.name) problems.push("metadata.name: required");
  try {
    new Model(obj).validate();
  } catch (e) {
    const errs = e.errors || [{ instancePath: "", message: e.message }];
    for (const err of errs) {
      const extra = err.params && err.params.allowedValues ? ` (${err.params.allowedValues.join(", ")})` : "";
      problems.push(`${err.instancePath.replace(/^\//, "").replace(/\//g, ".") || "(object)"}: ${err.message}${extra}`);
    }
  }
  problems.push(...unknownFields(obj));
  return problems;
}

module.exports = { validateObject, unknownFields };
