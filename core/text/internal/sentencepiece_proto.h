// The parts of a SentencePiece model file (`tokenizer.model`, a serialized ModelProto of
// sentencepiece_model.proto) that Hugging Face's converters read: the pieces with their scores
// and types, the model type and the special ids of the trainer spec, and the normalizer spec's
// compiled rules (the T5 and XLM-RoBERTa converters use them; the Llama converter ignores them).
// Read from the protocol buffer wire format directly.
//
//   ASSIGN_OR_RETURN(std::string bytes, ReadTokenizerFile(dir + "/tokenizer.model"));
//   ASSIGN_OR_RETURN(SentencePieceProto model, ParseSentencePieceModel(bytes, "tokenizer.model"));
//
// Errors: INVALID_ARGUMENT naming `what` for bytes that are not such a model (truncated,
// corrupt, no pieces, an unknown piece type, an empty or repeated piece).
// Thread-safety: a pure function.
#ifndef TWIN_CORE_TEXT_INTERNAL_SENTENCEPIECE_PROTO_H_
#define TWIN_CORE_TEXT_INTERNAL_SENTENCEPIECE_PROTO_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace twin {
namespace text_internal {

struct SentencePieceProto {
  // ModelProto.SentencePiece.Type's values.
  enum class PieceType { kNormal = 1, kUnknown, kControl, kUserDefined, kUnused, kByte };
  // TrainerSpec.ModelType's values.
  enum class ModelType { kUnigram = 1, kBpe, kWord, kChar };

  struct Piece {
    std::string piece;
    float score = 0;
    PieceType type = PieceType::kNormal;
  };
  std::vector<Piece> pieces;  // by id
  ModelType model_type = ModelType::kUnigram;
  bool byte_fallback = false;
  // The trainer spec's ids; -1: none.
  int unk_id = 0;
  int bos_id = 1;
  int eos_id = 2;
  // normalizer_spec.precompiled_charsmap: empty when the model has no compiled rules.
  std::string precompiled_charsmap;
};

absl::StatusOr<SentencePieceProto> ParseSentencePieceModel(absl::string_view bytes,
                                                           absl::string_view what);

}  // namespace text_internal
}  // namespace twin

#endif  // TWIN_CORE_TEXT_INTERNAL_SENTENCEPIECE_PROTO_H_
