#!/usr/bin/python3
"""SentencePiece fixtures of the tokenizer parity test (tests/text/run_parity.sh).

    /usr/bin/python3 tests/text/sentencepiece_fixtures.py OUT_DIR

Trains small SentencePiece models with Debian's python3-sentencepiece on
OUT_DIR/sentencepiece_corpus.txt (written by make_fixtures.mjs), deterministically (fixed seed,
one thread, the corpus read in order), and writes for each case:

    OUT_DIR/<name>/tokenizer.model + tokenizer_config.json   what the C++ test loads
    OUT_DIR/<name>-converted/tokenizer.json                   what Tokenizers.js encodes with
      + tokenizer_config.json                                 (the C++ test loads it too for
                                                              the Unigram case)

The tokenizer.json is the one Hugging Face's Llama converter makes from the model (this script
writes its own conversion from the model proto): BPE with the pieces as vocabulary, merges of two
pieces into a third ordered by the third's score, byte_fallback and fuse_unk; or Unigram with the
pieces' scores. Normalizer Prepend("▁") + Replace(" ", "▁") (legacy) or the Metaspace
pre-tokenizer with prepend_scheme "first" (legacy: false); control pieces special added tokens;
<s> (and </s> with add_eos_token) by TemplateProcessing; decoder Replace, ByteFallback, Fuse,
Strip. OUT_DIR/sentencepiece.json lists the cases for make_fixtures.mjs --sentencepiece.

The normalizer cases (NORMALIZER_CASES) are Unigram models trained with SentencePiece's own
normalization rules (nmt_nfkc, nmt_nfkc_cf) and converted as Hugging Face converts T5 / XLM-R
models: the Precompiled normalizer carrying the model's precompiled_charsmap, then either the
current converter's Strip + Replace(" {2,}") + Metaspace or the older files' WhitespaceSplit +
Metaspace. Tokenizers.js approximates Precompiled with NFKC, so their reference is SentencePiece
itself. The nmt_nfkc model is also written alone, as T5 (OUT_DIR/<name>-t5/spiece.model) and
XLM-RoBERTa (OUT_DIR/<name>-xlmr/sentencepiece.bpe.model) directories hold it without a
tokenizer.json. OUT_DIR/spm_reference.json holds {"texts": [...], "ids": {name: [[id, ...], ...]},
"plain": {...}}, the ids python3-sentencepiece gives for reference.json's texts and the extra
texts below (with and without </s>).
"""
import base64
import io
import json
import os
import sys

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as model_pb2

SPACE = "\u2581"
SEED = 20240611
VOCAB_SIZE = 1000

# Llama 2's trainer options, at a small vocabulary.
LLAMA_OPTIONS = dict(
    vocab_size=VOCAB_SIZE, character_coverage=0.995, split_digits=True, byte_fallback=True,
    allow_whitespace_only_pieces=True, remove_extra_whitespaces=False, add_dummy_prefix=True,
    normalization_rule_name="identity", split_by_unicode_script=True, split_by_number=True,
    max_sentencepiece_length=16)
COMMON_OPTIONS = dict(
    num_threads=1, shuffle_input_sentence=False, input_sentence_size=0, unk_id=0, bos_id=1,
    eos_id=2, pad_id=-1, minloglevel=2, hard_vocab_limit=False, self_test_sample_size=0)

# name: (model_type, trainer options, tokenizer_config.json)
CASES = {
    "spm_llama2_bpe": ("bpe", LLAMA_OPTIONS, {"add_bos_token": True, "add_eos_token": False}),
    "spm_mistral_bpe": ("bpe", LLAMA_OPTIONS, {"legacy": False}),
    "spm_unigram": ("unigram",
                    dict(vocab_size=VOCAB_SIZE, character_coverage=0.995, split_digits=True,
                         remove_extra_whitespaces=False, normalization_rule_name="identity"),
                    {"add_bos_token": True, "add_eos_token": True}),
}

# name: (normalization_rule_name, tokenizer.json form). "current": what Hugging Face's
# SpmConverter writes today; "t5_hub": the form of T5's tokenizer.json on the Hub.
NORMALIZER_CASES = {
    "spm_unigram_nfkc": ("nmt_nfkc", "current"),
    "spm_unigram_nfkc_cf": ("nmt_nfkc_cf", "t5_hub"),
}
# T5's sentinel tokens, at the end of the vocabulary.
EXTRA_IDS = 2

# Texts that exercise the normalization rules, on top of reference.json's corpus:
# compatibility forms, compositions, whitespace and control characters, case.
EXTRA_TEXTS = [
    "\uff21\uff22\uff23 \uff44\uff45\uff46 \uff11\uff12\uff13",   # fullwidth
    "\ufb01nance \ufb02ow \ufb00 \ufb03",                     # ligatures
    "\u2460 \u2461 \u2473 \u00b2 \u00bd \u2122 \u2126 \u212b",      # circled, superscript, signs
    "cafe\u0301 A\u030a n\u0303 o\u0308",                    # combining marks compose
    "caf\u00e9 \u00c5 \u00f1 \u00f6",
    "line one\r\nline two\rthree\nfour\tfive",
    "no\u00a0break \u3000ideographic\u2002en\u2003em\u2009thin",
    "zero\u200bwidth\u200cnon\u200djoiner\ufeffbom",
    "  leading and trailing  ",
    "many     spaces \t\t tabs",
    "\uff76\uff9e\uff8a\uff9f \uff71\uff72\uff73",                  # halfwidth katakana
    "\u1100\u1161 \u3131\u314f \uac00",                        # Hangul jamo
    "\ufe8d\ufe8e \ufb50 \ufef5",                               # Arabic presentation forms
    "MiXeD CaSe \u0130stanbul \u03a3\u039f\u03a6\u0399\u0391 STRASSE Stra\u00dfe",
    "\ufb01\u0301 \uff21\u0301 \uff21\u0301\u0301",               # clusters Hugging Face cuts
    "\u2028sep\u2029par\u0085nel\u000bvt\u000cff",
    "\u33a1 \u3392 \u32ff \u1e9b\u0323",
    "",
    " ",
]

NORMAL, UNKNOWN, CONTROL, USER_DEFINED = 1, 2, 3, 4


def special(content, id_, special_token=True):
    return {"id": id_, "content": content, "single_word": False, "lstrip": False,
            "rstrip": False, "normalized": False, "special": special_token}


def bpe_merges(proto, vocab):
    """Every split of a normal piece into two pieces, by the piece's score, id, left, right."""
    candidates = []
    for id_, p in enumerate(proto.pieces):
        if p.type != NORMAL:
            continue
        for i in range(1, len(p.piece)):
            left, right = p.piece[:i], p.piece[i:]
            if left in vocab and right in vocab:
                candidates.append((-p.score, id_, vocab[left], vocab[right], left, right))
    candidates.sort()
    return [f"{c[4]} {c[5]}" for c in candidates]


def convert(proto, config):
    """The tokenizer.json of `proto` with tokenizer_config.json `config`."""
    trainer = proto.trainer_spec
    pieces = list(proto.pieces)
    vocab = {p.piece: i for i, p in enumerate(pieces)}
    unk = pieces[trainer.unk_id].piece
    if trainer.model_type == model_pb2.TrainerSpec.BPE:
        model = {"type": "BPE", "dropout": None, "unk_token": unk,
                 "continuing_subword_prefix": None, "end_of_word_suffix": None, "fuse_unk": True,
                 "byte_fallback": True, "ignore_merges": False, "vocab": vocab,
                 "merges": bpe_merges(proto, vocab)}
    elif trainer.model_type == model_pb2.TrainerSpec.UNIGRAM:
        model = {"type": "Unigram", "unk_id": trainer.unk_id, "byte_fallback": True,
                 "vocab": [[p.piece, p.score] for p in pieces]}
    else:
        raise SystemExit(f"model type {trainer.model_type} is not converted")
    added = [special(p.piece, i, p.type == CONTROL) for i, p in enumerate(pieces)
             if p.type in (CONTROL, USER_DEFINED)]
    added.append(special(unk, trainer.unk_id))
    added.sort(key=lambda t: t["id"])
    legacy = config.get("legacy", True)
    bos, eos = pieces[trainer.bos_id].piece, pieces[trainer.eos_id].piece
    single = []
    if config.get("add_bos_token", True):
        single.append({"SpecialToken": {"id": bos, "type_id": 0}})
    single.append({"Sequence": {"id": "A", "type_id": 0}})
    if config.get("add_eos_token", False):
        single.append({"SpecialToken": {"id": eos, "type_id": 0}})
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": SPACE},
            {"type": "Replace", "pattern": {"String": " "}, "content": SPACE}]} if legacy else None,
        "pre_tokenizer": None if legacy else {
            "type": "Metaspace", "replacement": SPACE, "prepend_scheme": "first", "split": False},
        "post_processor": {
            "type": "TemplateProcessing", "single": single, "pair": single,
            "special_tokens": {t: {"id": t, "ids": [vocab[t]], "tokens": [t]} for t in (bos, eos)}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": SPACE}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": model,
    }


def convert_normalized(proto, form):
    """The tokenizer.json Hugging Face's T5 converter makes of a Unigram `proto`."""
    trainer = proto.trainer_spec
    pieces = list(proto.pieces)
    vocab = [[p.piece, p.score] for p in pieces]
    extra = [f"<extra_id_{i}>" for i in range(EXTRA_IDS - 1, -1, -1)]
    vocab += [[t, 0.0] for t in extra]
    added = [special(p.piece, i, p.type == CONTROL) for i, p in enumerate(pieces)
             if p.type in (CONTROL, USER_DEFINED)]
    added.append(special(pieces[trainer.unk_id].piece, trainer.unk_id))
    added += [special(t, len(pieces) + i) for i, t in enumerate(extra)]
    added.sort(key=lambda t: t["id"])
    eos = pieces[trainer.eos_id].piece
    charsmap = {"type": "Precompiled", "precompiled_charsmap":
                base64.b64encode(proto.normalizer_spec.precompiled_charsmap).decode("ascii")}
    if form == "current":
        normalizer = {"type": "Sequence", "normalizers": [
            charsmap, {"type": "Strip", "strip_left": False, "strip_right": True},
            {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": SPACE}]}
        metaspace = {"type": "Metaspace", "replacement": SPACE, "prepend_scheme": "always",
                     "split": True}
        pre_tokenizer = metaspace
    else:
        normalizer = charsmap
        metaspace = {"type": "Metaspace", "replacement": SPACE, "add_prefix_space": True}
        pre_tokenizer = {"type": "Sequence",
                         "pretokenizers": [{"type": "WhitespaceSplit"}, metaspace]}
    single = [{"Sequence": {"id": "A", "type_id": 0}},
              {"SpecialToken": {"id": eos, "type_id": 0}}]
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": normalizer, "pre_tokenizer": pre_tokenizer,
        "post_processor": {
            "type": "TemplateProcessing", "single": single, "pair": single,
            "special_tokens": {eos: {"id": eos, "ids": [trainer.eos_id], "tokens": [eos]}}},
        "decoder": metaspace,
        "model": {"type": "Unigram", "unk_id": trainer.unk_id, "byte_fallback": False,
                  "vocab": vocab},
    }


def write_normalizer_cases(out, corpus):
    with open(os.path.join(out, "reference.json"), encoding="utf-8") as f:
        texts = json.load(f)["texts"] + EXTRA_TEXTS
    reference = {"texts": texts, "ids": {}, "plain": {}}
    for name, (rule, form) in NORMALIZER_CASES.items():
        writer = io.BytesIO()
        spm.SentencePieceTrainer.train(
            input=corpus, model_writer=writer, model_type="unigram", vocab_size=VOCAB_SIZE,
            character_coverage=0.995, normalization_rule_name=rule, **COMMON_OPTIONS)
        serialized = writer.getvalue()
        proto = model_pb2.ModelProto()
        proto.ParseFromString(serialized)
        if not proto.normalizer_spec.precompiled_charsmap:
            raise SystemExit(f"{name}: the trained model has no precompiled_charsmap")
        directory = os.path.join(out, name + "-converted")
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
            json.dump({"tokenizer_class": "T5Tokenizer", "extra_ids": EXTRA_IDS}, f)
        with open(os.path.join(out, name + "-converted", "tokenizer.json"), "w") as f:
            json.dump(convert_normalized(proto, form), f, ensure_ascii=False)
        if form == "current":
            # The model alone, as T5 and XLM-RoBERTa directories without a tokenizer.json ship
            # it: HfTokenizer converts it itself.
            for suffix, file, config in (
                    ("-t5", "spiece.model", {"tokenizer_class": "T5Tokenizer",
                                             "extra_ids": EXTRA_IDS}),
                    ("-xlmr", "sentencepiece.bpe.model",
                     {"tokenizer_class": "XLMRobertaTokenizer"})):
                model_dir = os.path.join(out, name + suffix)
                os.makedirs(model_dir, exist_ok=True)
                with open(os.path.join(model_dir, file), "wb") as f:
                    f.write(serialized)
                with open(os.path.join(model_dir, "tokenizer_config.json"), "w") as f:
                    json.dump(config, f)
        processor = spm.SentencePieceProcessor(model_proto=serialized)
        plain = [processor.encode(t) for t in texts]
        reference["plain"][name] = plain
        reference["ids"][name] = [ids + [proto.trainer_spec.eos_id] for ids in plain]
        print(f"sentencepiece_fixtures: {name}: unigram, {rule}, {form} tokenizer.json, "
              f"{len(proto.normalizer_spec.precompiled_charsmap)}-byte charsmap")
    with open(os.path.join(out, "spm_reference.json"), "w", encoding="utf-8") as f:
        json.dump(reference, f, ensure_ascii=False)


def main():
    if len(sys.argv) != 2:
        raise SystemExit("usage: sentencepiece_fixtures.py OUT_DIR")
    out = sys.argv[1]
    corpus = os.path.join(out, "sentencepiece_corpus.txt")
    spm.set_random_generator_seed(SEED)
    models = {}
    for name, (model_type, options, config) in CASES.items():
        key = (model_type, json.dumps(options, sort_keys=True))
        if key not in models:
            writer = io.BytesIO()
            spm.SentencePieceTrainer.train(input=corpus, model_writer=writer, model_type=model_type,
                                           **options, **COMMON_OPTIONS)
            models[key] = writer.getvalue()
        serialized = models[key]
        proto = model_pb2.ModelProto()
        proto.ParseFromString(serialized)
        os.makedirs(os.path.join(out, name), exist_ok=True)
        os.makedirs(os.path.join(out, name + "-converted"), exist_ok=True)
        with open(os.path.join(out, name, "tokenizer.model"), "wb") as f:
            f.write(serialized)
        for directory in (name, name + "-converted"):
            with open(os.path.join(out, directory, "tokenizer_config.json"), "w") as f:
                json.dump({"tokenizer_class": "LlamaTokenizer", **config}, f)
        with open(os.path.join(out, name + "-converted", "tokenizer.json"), "w") as f:
            json.dump(convert(proto, config), f, ensure_ascii=False)
        print(f"sentencepiece_fixtures: {name}: {model_type}, {len(proto.pieces)} pieces")
    with open(os.path.join(out, "sentencepiece.json"), "w") as f:
        json.dump(list(CASES), f)
    write_normalizer_cases(out, corpus)


if __name__ == "__main__":
    main()
