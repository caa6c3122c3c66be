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
"""
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


if __name__ == "__main__":
    main()
