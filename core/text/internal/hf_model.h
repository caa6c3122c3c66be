// The "model" object of a tokenizer.json, read into a TokenizerPipeline: WordPiece
// (unk_token, continuing_subword_prefix, max_input_chars_per_word), BPE (merges as "left right"
// or [left, right]; unk_token, ignore_merges, byte_fallback, fuse_unk) or Unigram (vocab as
// [[piece, score], ...] by id, unk_id, byte_fallback). A model without "type" is taken as the
// one its fields spell (merges: BPE; max_input_chars_per_word: WordPiece; an array vocab:
// Unigram), as files written before models were tagged need.
//
//   RETURN_IF_ERROR(ParseModel(root["model"], "tokenizer.json: model", pipeline));
//
// Errors: INVALID_ARGUMENT naming `what` and the key for a bad field; UNIMPLEMENTED for other
// model types and for options this does not implement (BPE dropout or subword affixes, a
// Unigram without unk_id).
// Thread-safety: a pure function.
#ifndef TWIN_CORE_TEXT_INTERNAL_HF_MODEL_H_
#define TWIN_CORE_TEXT_INTERNAL_HF_MODEL_H_

#include <string>

#include <nlohmann/json_fwd.hpp>

#include "absl/status/status.h"
#include "core/text/internal/hf_config.h"

namespace twin {
namespace text_internal {

// Sets the one model of `p` (p->wordpiece, p->bpe or p->unigram).
absl::Status ParseModel(const nlohmann::json& config, const std::string& what,
                        TokenizerPipeline* p);

}  // namespace text_internal
}  // namespace twin

#endif  // TWIN_CORE_TEXT_INTERNAL_HF_MODEL_H_
