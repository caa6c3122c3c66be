// The decoders of a tokenizer.json (token strings back to text), as a chain of steps that can
// run over all tokens at once (Decode) or a token at a time (a stream), with the same result:
// each step keeps what it cannot finish yet (an open run of <0xNN> byte tokens, the bytes of a
// character cut between tokens) in its state until more tokens come or the input ends.
//
// Steps follow the Rust `tokenizers` decoders: ByteLevel (bytes_to_unicode reversed, then lossy
// UTF-8), WordPiece (prefix, cleanup), Replace (string pattern), ByteFallback (a run that is not
// UTF-8 becomes one U+FFFD per byte), Fuse, Strip, Metaspace; no decoder joins with ' '.
// After a step that fuses tokens into one text (Fuse, ByteLevel) the text arrives in pieces, so
// only steps that work on it piece by piece may follow (Strip with stop 0, a one-character
// Replace, Metaspace, ByteLevel, Fuse); others are refused with UNIMPLEMENTED.
//
//   ASSIGN_OR_RETURN(DecoderChain chain, ParseDecoder(json["decoder"], "tokenizer.json: decoder"));
//   DecoderState state = chain.NewState();
//   std::string text = chain.Run({"Hello", "Ġworld"}, /*at_end=*/true, &state);
//
// Thread-safety: a DecoderChain is immutable; a DecoderState belongs to one caller.
#ifndef TWIN_CORE_TEXT_INTERNAL_DECODER_H_
#define TWIN_CORE_TEXT_INTERNAL_DECODER_H_

#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace twin {
namespace text_internal {

struct DecoderStep {
  enum class Kind {
    kJoinWithSpace,  // no decoder: tokens joined by ' '
    kByteLevel,
    kWordPiece,
    kReplace,
    kByteFallback,
    kFuse,
    kStrip,
    kMetaspace,
  };
  Kind kind = Kind::kFuse;
  std::string pattern;      // kReplace: the string replaced; kWordPiece: the prefix
  std::string content;      // kReplace: its replacement
  bool cleanup = true;      // kWordPiece
  char32_t strip_char = ' ';  // kStrip: the character stripped
  size_t strip_start = 0;     // kStrip: at most this many at the start...
  size_t strip_stop = 0;      // ...and at the end
  std::string replacement = "\xE2\x96\x81";  // kMetaspace: U+2581
  bool metaspace_prepend = true;  // kMetaspace: prepend_scheme is not "never"
  bool fused = false;  // a Fuse or ByteLevel step comes before this one

  static DecoderStep Of(Kind kind) {
    DecoderStep step;
    step.kind = kind;
    return step;
  }
};

// What the steps keep between calls of Run, one entry per step.
struct DecoderState {
  struct Step {
    bool seen_token = false;  // a token has gone through (WordPiece, Metaspace: "the first")
    std::string bytes;        // ByteLevel: an incomplete character; ByteFallback: the open run
    size_t strip_left = 0;    // fused Strip: how many leading characters it may still strip
  };
  std::vector<Step> steps;
};

class DecoderChain {
 public:
  DecoderChain();  // no decoder
  explicit DecoderChain(std::vector<DecoderStep> steps) : steps_(std::move(steps)) {}

  DecoderState NewState() const;
  // The text of `tokens` following what `state` has seen; with at_end, also what the steps
  // held back (the last call for a sequence).
  std::string Run(std::vector<std::string> tokens, bool at_end, DecoderState* state) const;

 private:
  std::vector<DecoderStep> steps_;
};

// A tokenizer.json "decoder" (null: none). INVALID_ARGUMENT / UNIMPLEMENTED name `what` and
// the key.
absl::StatusOr<DecoderChain> ParseDecoder(const nlohmann::json& config, const std::string& what);

}  // namespace text_internal
}  // namespace twin

#endif  // TWIN_CORE_TEXT_INTERNAL_DECODER_H_
