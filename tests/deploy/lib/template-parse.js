// The parser of lib/gotemplate.js: Go text/template source into a tree of text, actions and
// if/with/range blocks, with `define`s collected by name. Trim markers ({{- -}}) and comments
// are handled here; anything outside the supported subset is a TemplateError naming the
// file and line.
"use strict";

class TemplateError extends Error {}

// ---------------------------------------------------------------------------------------
// Lexing: text and {{ actions }}, with trim markers and comments.

function splitActions(src, file) {
  const parts = [];
  let pos = 0;
  let trimNext = false;
  while (pos < src.length) {
    const open = src.indexOf("{{", pos);
    let text = open < 0 ? src.slice(pos) : src.slice(pos, open);
    if (trimNext) text = text.replace(/^\s+/, "");
    trimNext = false;
    if (open < 0) {
      if (text) parts.push({ kind: "text", text });
      break;
    }
    let start = open + 2;
    if (/^-[ \t\r\n]/.test(src.slice(start, start + 2))) {
      text = text.replace(/\s+$/, "");
      start += 1;
    }
    if (text) parts.push({ kind: "text", text });
    const close = findClose(src, start, file);
    let end = close;
    if (/[ \t\r\n]-$/.test(src.slice(close - 2, close))) {
      trimNext = true;
      end = close - 1;
    }
    const body = src.slice(start, end).trim();
    const line = src.slice(0, open).split("\n").length;
    if (!(body.startsWith("/*") && body.endsWith("*/"))) {
      parts.push({ kind: "action", body, line });
    }
    pos = close + 2;
  }
  return parts;
}

function findClose(src, from, file) {
  let i = from;
  while (i < src.length) {
    const c = src[i];
    if (c === '"' || c === "`") {
      i = skipString(src, i, file);
      continue;
    }
    if (src.startsWith("/*", i)) {
      const e = src.indexOf("*/", i + 2);
      if (e < 0) break;
      i = e + 2;
      continue;
    }
    if (src.startsWith("}}", i)) return i;
    i++;
  }
  throw new TemplateError(`${file}: unclosed action`);
}

function skipString(src, i, file) {
  const q = src[i];
  let j = i + 1;
  while (j < src.length && src[j] !== q) {
    if (q === '"' && src[j] === "\\") j++;
    j++;
  }
  if (j >= src.length) throw new TemplateError(`${file}: unterminated string`);
  return j + 1;
}

function tokenize(body, where) {
  const toks = [];
  let i = 0;
  while (i < body.length) {
    const c = body[i];
    if (/\s/.test(c)) { i++; continue; }
    if (c === '"' || c === "`") {
      const j = skipString(body, i, where);
      const raw = body.slice(i, j);
      toks.push({ t: "str", v: c === "`" ? raw.slice(1, -1) : JSON.parse(raw) });
      i = j;
      continue;
    }
    if (body.startsWith(":=", i)) { toks.push({ t: ":=" }); i += 2; continue; }
    if ("|(),=".includes(c)) { toks.push({ t: c }); i++; continue; }
    const m = /^(-?[0-9][0-9.eE+_x]*|\$[A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*|\.?[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*|\.)/.exec(body.slice(i));
    if (!m) throw new TemplateError(`${where}: cannot read '${body.slice(i, i + 20)}'`);
    const w = m[0];
    if (/^-?[0-9]/.test(w)) {
      toks.push(/^-?[0-9]+$/.test(w) ? { t: "num", v: BigInt(w) } : { t: "num", v: Number(w) });
    } else if (w === "true" || w === "false") {
      toks.push({ t: "bool", v: w === "true" });
    } else if (w === "nil") {
      toks.push({ t: "nil" });
    } else if (w[0] === "$") {
      const [name, ...fields] = w.split(".");
      toks.push({ t: "var", name, fields });
    } else if (w[0] === ".") {
      toks.push({ t: "field", fields: w === "." ? [] : w.slice(1).split(".") });
    } else {
      toks.push({ t: "ident", v: w });
    }
    // A field chain glued to a closing parenthesis: (expr).Field
    if (w[0] === "." && i > 0 && body[i - 1] === ")") toks[toks.length - 1].glued = true;
    i += w.length;
  }
  return toks;
}

// ---------------------------------------------------------------------------------------
// Parsing into a tree.

const KEYWORDS = new Set(["if", "else", "end", "range", "with", "define", "template", "block"]);

// pipeline := [$a[, $b] (:=|=)] command ('|' command)*
// command  := operand operand*      operand := literal | .Field | $var.Field | ident | '(' pipeline ')'
function parsePipeline(toks, where) {
  let p = 0;
  const decl = [];
  let assign = false;
  const vars = [];
  let look = 0;
  while (look < toks.length && toks[look].t === "var" && toks[look].fields.length === 0) {
    vars.push(toks[look].name);
    look++;
    if (toks[look] && toks[look].t === ",") { look++; continue; }
    break;
  }
  if (vars.length && toks[look] && (toks[look].t === ":=" || toks[look].t === "=")) {
    decl.push(...vars);
    assign = toks[look].t === "=";
    p = look + 1;
  }
  const [cmds, end] = parseCommands(toks, p, where);
  if (end !== toks.length) throw new TemplateError(`${where}: unexpected ')'`);
  return { decl, assign, cmds };
}

function parseCommands(toks, p, where) {
  const cmds = [];
  let cur = [];
  while (p < toks.length && toks[p].t !== ")") {
    const t = toks[p];
    if (t.t === "|") {
      if (!cur.length) throw new TemplateError(`${where}: missing command before '|'`);
      cmds.push(cur);
      cur = [];
      p++;
    } else if (t.t === "(") {
      const [inner, close] = parseCommands(toks, p + 1, where);
      if (close >= toks.length) throw new TemplateError(`${where}: unclosed '('`);
      const sub = { t: "pipe", cmds: inner };
      p = close + 1;
      if (toks[p] && toks[p].t === "field" && toks[p].glued) {
        sub.fields = toks[p].fields;
        p++;
      }
      cur.push(sub);
    } else if (t.t === "," || t.t === ":=" || t.t === "=") {
      throw new TemplateError(`${where}: unexpected '${t.t}'`);
    } else {
      cur.push(t);
      p++;
    }
  }
  if (cur.length) cmds.push(cur);
  if (!cmds.length) throw new TemplateError(`${where}: empty pipeline`);
  return [cmds, p];
}

function parse(src, file) {
  const parts = splitActions(src, file);
  const defines = {};
  const root = { list: [] };
  const stack = [{ node: root, target: root.list }];
  for (const part of parts) {
    const top = stack[stack.length - 1];
    if (part.kind === "text") {
      top.target.push({ k: "text", text: part.text });
      continue;
    }
    const where = `${file}:${part.line}`;
    const toks = tokenize(part.body, where);
    const head = toks[0] && toks[0].t === "ident" && KEYWORDS.has(toks[0].v) ? toks[0].v : null;
    if (head === "if" || head === "with" || head === "range") {
      const node = { k: head, pipe: parsePipeline(toks.slice(1), where), list: [], elseList: null, where };
      top.target.push(node);
      stack.push({ node, target: node.list });
    } else if (head === "define") {
      if (!toks[1] || toks[1].t !== "str") throw new TemplateError(`${where}: define needs a name`);
      const node = { k: "define", name: toks[1].v, list: [] };
      defines[node.name] = node;
      stack.push({ node, target: node.list });
    } else if (head === "else") {
      const node = top.node;
      if (!["if", "with", "range"].includes(node.k)) throw new TemplateError(`${where}: else outside if/with/range`);
      if (toks[1] && toks[1].t === "ident" && toks[1].v === "if") {
        // else if X: a nested if in the else branch that the same `end` closes.
        const inner = { k: "if", pipe: parsePipeline(toks.slice(2), where), list: [], elseList: null, where, chained: true };
        node.elseList = [inner];
        stack.push({ node: inner, target: inner.list });
      } else {
        node.elseList = [];
        top.target = node.elseList;
      }
    } else if (head === "end") {
      let frame = stack.pop();
      while (frame.node.chained) frame = stack.pop();
      if (frame.node === root) throw new TemplateError(`${where}: unexpected end`);
    } else if (head) {
      throw new TemplateError(`${where}: '${head}' is not supported by this renderer`);
    } else {
      top.target.push({ k: "action", pipe: parsePipeline(toks, where), where });
    }
  }
  if (stack.length !== 1) throw new TemplateError(`${file}: missing end`);
  return { list: root.list, defines };
}

module.exports = { parse, TemplateError };
