// A small interpreter of Go's text/template with the Sprig/Helm functions the chart in
// helm/twin-merging uses, so the chart can be rendered and validated where no helm binary
// exists. Anything outside that subset is an error naming the construct, never a guess.
//
// Numbers follow Helm's types: values read from YAML are float64 (JS number), integer
// literals in templates and the results of int/add/sub/mul/div/len are int64 (JS BigInt).
// Printing a float64 uses Go's %v (1e+06 for a million), and comparing a float64 with an
// int is an error, as in Go: both are real chart bugs this catches.
"use strict";

const crypto = require("crypto");
const yaml = require("js-yaml");
const { parse, TemplateError } = require("./template-parse");

// ---------------------------------------------------------------------------------------
// Values and Go formatting.

const isMap = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

function truthy(v) {
  if (v === null || v === undefined || v === false) return false;
  if (typeof v === "number") return v !== 0;
  if (typeof v === "bigint") return v !== 0n;
  if (typeof v === "string" || Array.isArray(v)) return v.length > 0;
  if (isMap(v)) return Object.keys(v).length > 0;
  return true;
}

// Go's %v of a float64 (strconv 'g', shortest digits): exponent form when the decimal
// exponent is below -4 or at least 6, so a million prints as 1e+06.
function formatFloat(x) {
  if (!Number.isFinite(x)) return x > 0 ? "+Inf" : x < 0 ? "-Inf" : "NaN";
  if (x === 0) return "0";
  const [mant, expStr] = x.toExponential().split("e");
  const exp = Number(expStr);
  if (exp < -4 || exp >= 6) {
    const sign = exp < 0 ? "-" : "+";
    return `${mant}e${sign}${String(Math.abs(exp)).padStart(2, "0")}`;
  }
  return String(x);
}

function goString(v) {
  if (v === null || v === undefined) return "";
  if (typeof v === "string") return v;
  if (typeof v === "bigint") return v.toString();
  if (typeof v === "number") return formatFloat(v);
  if (typeof v === "boolean") return String(v);
  if (Array.isArray(v)) return `[${v.map(goString).join(" ")}]`;
  return `map[${Object.keys(v).sort().map((k) => `${k}:${goString(v[k])}`).join(" ")}]`;
}

function toJsPlain(v) {
  if (typeof v === "bigint") return Number(v);
  if (Array.isArray(v)) return v.map(toJsPlain);
  if (isMap(v)) {
    const o = {};
    for (const k of Object.keys(v)) o[k] = toJsPlain(v[k]);
    return o;
  }
  return v;
}

// Helm's toYaml: sorted keys, sequences not indented under their key, no trailing newline.
function toYaml(v) {
  if (v === null || v === undefined) return "null";
  return yaml.dump(toJsPlain(v), { sortKeys: true, noArrayIndent: true, lineWidth: -1 }).replace(/\n$/, "");
}

function toInt(v, fn) {
  if (typeof v === "bigint") return v;
  if (typeof v === "number") return BigInt(Math.trunc(v));
  if (typeof v === "string" && /^-?[0-9]+$/.test(v.trim())) return BigInt(v.trim());
  if (v === null || v === undefined || v === "") return 0n;
  if (typeof v === "boolean") return v ? 1n : 0n;
  throw new TemplateError(`${fn}: cannot convert ${goString(v)} to int`);
}

function kindOf(v) {
  if (typeof v === "bigint") return "int";
  if (typeof v === "number") return "float";
  if (typeof v === "string") return "string";
  if (typeof v === "boolean") return "bool";
  if (v === null || v === undefined) return "nil";
  return "complex";
}

function compare(op, a, b) {
  const ka = kindOf(a);
  const kb = kindOf(b);
  if (op === "eq" || op === "ne") {
    if (ka === "nil" || kb === "nil") return op === "eq" ? ka === kb : ka !== kb;
    if (ka !== kb) throw new TemplateError(`${op}: incompatible types for comparison (${ka} and ${kb})`);
    if (ka === "complex") throw new TemplateError(`${op}: cannot compare maps or lists`);
    return op === "eq" ? a === b : a !== b;
  }
  if (ka !== kb || !["int", "float", "string"].includes(ka)) {
    throw new TemplateError(`${op}: incompatible types for comparison (${ka} and ${kb})`);
  }
  switch (op) {
    case "lt": return a < b;
    case "le": return a <= b;
    case "gt": return a > b;
    default: return a >= b;
  }
}

function goPrintf(fmt, args) {
  let n = 0;
  return fmt.replace(/%([sdvq%])/g, (m, verb) => {
    if (verb === "%") return "%";
    const a = args[n++];
    if (verb === "d") {
      if (typeof a === "bigint") return a.toString();
      return `%!d(${kindOf(a) === "float" ? "float64" : kindOf(a)}=${goString(a)})`;
    }
    if (verb === "q") return JSON.stringify(goString(a));
    return goString(a);
  });
}

function deepCopy(v) {
  if (Array.isArray(v)) return v.map(deepCopy);
  if (isMap(v)) {
    const o = {};
    for (const k of Object.keys(v)) o[k] = deepCopy(v[k]);
    return o;
  }
  return v;
}

function isEmpty(v) { return !truthy(v); }

// ---------------------------------------------------------------------------------------
// Execution.

class Renderer {
  constructor() {
    this.defines = {};
    this.funcs = this.makeFuncs();
  }

  addTemplate(src, file) {
    const tree = parse(src, file);
    Object.assign(this.defines, tree.defines);
    return tree;
  }

  render(tree, data) {
    const out = [];
    this.execList(tree.list, data, [{ name: "$", value: data }], out);
    return out.join("");
  }

  include(name, data) {
    const def = this.defines[name];
    if (!def) throw new TemplateError(`include: no template named "${name}"`);
    const out = [];
    this.execList(def.list, data, [{ name: "$", value: data }], out);
    return out.join("");
  }

  execList(list, dot, vars, out) {
    for (const node of list) this.exec(node, dot, vars, out);
  }

  exec(node, dot, vars, out) {
    try {
      if (node.k === "text") {
        out.push(node.text);
      } else if (node.k === "action") {
        const v = this.evalPipe(node.pipe, dot, vars);
        if (!node.pipe.decl.length) out.push(goString(v));
      } else if (node.k === "if") {
        const mark = vars.length;
        const v = this.evalPipe(node.pipe, dot, vars);
        if (truthy(v)) this.execList(node.list, dot, vars, out);
        else if (node.elseList) this.execList(node.elseList, dot, vars, out);
        vars.length = mark;
      } else if (node.k === "with") {
        const mark = vars.length;
        const v = this.evalPipe(node.pipe, dot, vars);
        if (truthy(v)) this.execList(node.list, v, vars, out);
        else if (node.elseList) this.execList(node.elseList, dot, vars, out);
        vars.length = mark;
      } else if (node.k === "range") {
        this.execRange(node, dot, vars, out);
      }
    } catch (e) {
      if (e instanceof TemplateError && node.where && !e.located) {
        e.message = `${node.where}: ${e.message}`;
        e.located = true;
      }
      throw e;
    }
  }

  execRange(node, dot, vars, out) {
    const mark = vars.length;
    const names = node.pipe.decl;
    const v = this.evalPipe({ ...node.pipe, decl: [] }, dot, vars);
    let entries = [];
    if (Array.isArray(v)) entries = v.map((x, i) => [BigInt(i), x]);
    else if (isMap(v)) entries = Object.keys(v).sort().map((k) => [k, v[k]]);
    else if (typeof v === "bigint") entries = Array.from({ length: Number(v) }, (_, i) => [BigInt(i), BigInt(i)]);
    else if (v !== null && v !== undefined) throw new TemplateError(`range can't iterate over ${goString(v)}`);
    if (!entries.length) {
      if (node.elseList) this.execList(node.elseList, dot, vars, out);
      return;
    }
    for (const [k, x] of entries) {
      vars.length = mark;
      if (names.length === 1) vars.push({ name: names[0], value: x });
      if (names.length === 2) vars.push({ name: names[0], value: k }, { name: names[1], value: x });
      this.execList(node.list, x, vars, out);
    }
    vars.length = mark;
  }

  evalPipe(pipe, dot, vars) {
    let v;
    let first = true;
    for (const cmd of pipe.cmds) {
      v = this.evalCmd(cmd, dot, vars, first ? undefined : { value: v });
      first = false;
    }
    if (pipe.decl.length) {
      if (pipe.assign) {
        const slot = [...vars].reverse().find((x) => x.name === pipe.decl[0]);
        if (!slot) throw new TemplateError(`undefined variable ${pipe.decl[0]}`);
        slot.value = v;
      } else {
        vars.push({ name: pipe.decl[pipe.decl.length - 1], value: v });
      }
    }
    return v;
  }

  evalCmd(cmd, dot, vars, piped) {
    const [head, ...rest] = cmd;
    if (head.t === "ident") {
      const fn = this.funcs[head.v];
      if (!fn) throw new TemplateError(`function "${head.v}" not defined (or not supported by this renderer)`);
      if (head.v === "and" || head.v === "or") return this.evalLogic(head.v, rest, dot, vars, piped);
      const args = rest.map((a) => this.evalArg(a, dot, vars));
      if (piped) args.push(piped.value);
      return fn(...args);
    }
    if (rest.length || piped) throw new TemplateError(`can't give arguments to a non-function`);
    return this.evalArg(head, dot, vars);
  }

  evalLogic(op, rest, dot, vars, piped) {
    const thunks = rest.map((a) => () => this.evalArg(a, dot, vars));
    if (piped) thunks.push(() => piped.value);
    let v;
    for (const t of thunks) {
      v = t();
      if (op === "and" && !truthy(v)) return v;
      if (op === "or" && truthy(v)) return v;
    }
    return v;
  }

  evalArg(a, dot, vars) {
    switch (a.t) {
      case "str": case "num": case "bool": return a.v;
      case "nil": return null;
      case "field": return this.walk(dot, a.fields, ".");
      case "var": {
        const slot = [...vars].reverse().find((x) => x.name === a.name);
        if (!slot) throw new TemplateError(`undefined variable ${a.name}`);
        return this.walk(slot.value, a.fields, a.name);
      }
      case "pipe": {
        const v = this.evalPipe({ decl: [], cmds: a.cmds }, dot, vars);
        return a.fields ? this.walk(v, a.fields, "(...)") : v;
      }
      case "ident": {
        const fn = this.funcs[a.v];
        if (!fn) throw new TemplateError(`function "${a.v}" not defined`);
        return fn();
      }
      default:
        throw new TemplateError(`unexpected '${a.t}'`);
    }
  }

  walk(v, fields, from) {
    let cur = v;
    let path = from;
    for (const f of fields) {
      if (cur === null || cur === undefined) {
        throw new TemplateError(`nil pointer evaluating ${path}.${f}`);
      }
      if (!isMap(cur)) throw new TemplateError(`can't evaluate field ${f} in ${path} (${kindOf(cur)})`);
      cur = Object.prototype.hasOwnProperty.call(cur, f) ? cur[f] : null;
      path = `${path === "." ? "" : path}.${f}`;
    }
    return cur;
  }

  makeFuncs() {
    const self = this;
    const intArgs = (name, args) => args.map((a) => toInt(a, name));
    return {
      include: (name, data) => self.include(name, data),
      toYaml,
      toJson: (v) => JSON.stringify(toJsPlain(v)),
      quote: (...args) => args.filter((a) => a !== null && a !== undefined).map((a) => JSON.stringify(goString(a))).join(" "),
      squote: (...args) => args.filter((a) => a !== null && a !== undefined).map((a) => `'${goString(a)}'`).join(" "),
      default: (d, ...given) => (given.length && !isEmpty(given[0]) ? given[0] : d),
      empty: isEmpty,
      required: (msg, v) => {
        if (v === null || v === undefined || v === "") throw new TemplateError(`required: ${msg}`);
        return v;
      },
      fail: (msg) => { throw new TemplateError(`fail: ${msg}`); },
      indent: (n, s) => goString(s).split("\n").map((l) => " ".repeat(Number(toInt(n, "indent"))) + l).join("\n"),
      nindent: (n, s) => "\n" + goString(s).split("\n").map((l) => " ".repeat(Number(toInt(n, "nindent"))) + l).join("\n"),
      printf: (fmt, ...args) => goPrintf(fmt, args),
      print: (...args) => args.map(goString).join(""),
      trunc: (n, s) => goString(s).slice(0, Number(toInt(n, "trunc"))),
      trimSuffix: (suf, s) => (goString(s).endsWith(suf) ? goString(s).slice(0, -suf.length || undefined) : goString(s)),
      trimPrefix: (pre, s) => (goString(s).startsWith(pre) ? goString(s).slice(pre.length) : goString(s)),
      trim: (s) => goString(s).trim(),
      replace: (o, n, s) => goString(s).split(o).join(n),
      lower: (s) => goString(s).toLowerCase(),
      upper: (s) => goString(s).toUpperCase(),
      contains: (sub, s) => goString(s).includes(goString(sub)),
      hasPrefix: (pre, s) => goString(s).startsWith(goString(pre)),
      hasSuffix: (suf, s) => goString(s).endsWith(goString(suf)),
      toString: (v) => goString(v),
      int: (v) => toInt(v, "int"),
      int64: (v) => toInt(v, "int64"),
      add: (...a) => intArgs("add", a).reduce((x, y) => x + y, 0n),
      sub: (a, b) => toInt(a, "sub") - toInt(b, "sub"),
      mul: (...a) => intArgs("mul", a).reduce((x, y) => x * y, 1n),
      div: (a, b) => {
        const d = toInt(b, "div");
        if (d === 0n) throw new TemplateError("div: division by zero");
        return toInt(a, "div") / d;
      },
      max: (...a) => intArgs("max", a).reduce((x, y) => (y > x ? y : x)),
      min: (...a) => intArgs("min", a).reduce((x, y) => (y < x ? y : x)),
      len: (v) => BigInt(v === null || v === undefined ? 0 : isMap(v) ? Object.keys(v).length : v.length),
      not: (v) => !truthy(v),
      and: () => null,
      or: () => null,
      eq: (a, ...bs) => bs.some((b) => compare("eq", a, b)),
      ne: (a, b) => compare("ne", a, b),
      lt: (a, b) => compare("lt", a, b),
      le: (a, b) => compare("le", a, b),
      gt: (a, b) => compare("gt", a, b),
      ge: (a, b) => compare("ge", a, b),
      sha256sum: (s) => crypto.createHash("sha256").update(goString(s)).digest("hex"),
      b64enc: (s) => Buffer.from(goString(s)).toString("base64"),
      dict: (...kv) => {
        const o = {};
        for (let i = 0; i + 1 < kv.length; i += 2) o[goString(kv[i])] = kv[i + 1];
        return o;
      },
      list: (...a) => a,
      set: (m, k, v) => { m[k] = v; return m; },
      hasKey: (m, k) => isMap(m) && Object.prototype.hasOwnProperty.call(m, k),
      deepCopy: (v) => deepCopy(v),
      ternary: (a, b, c) => (truthy(c) ? a : b),
    };
  }
}

module.exports = { Renderer, TemplateError, formatFloat, toYaml, goString };
