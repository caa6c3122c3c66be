#include "core/text/internal/sentencepiece_proto.h"

#include <cstdint>
#include <cstring>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "core/status_macros.h"

namespace twin {
namespace text_internal {
namespace {

// Field numbers of sentencepiece_model.proto.
constexpr uint32_t kModelPieces = 1;
constexpr uint32_t kModelTrainerSpec = 2;
constexpr uint32_t kModelNormalizerSpec = 3;
constexpr uint32_t kNormalizerCharsmap = 2;
constexpr uint32_t kPieceText = 1;
constexpr uint32_t kPieceScore = 2;
constexpr uint32_t kPieceType = 3;
constexpr uint32_t kTrainerModelType = 3;
constexpr uint32_t kTrainerByteFallback = 35;
constexpr uint32_t kTrainerUnkId = 40;
constexpr uint32_t kTrainerBosId = 41;
constexpr uint32_t kTrainerEosId = 42;
// Wire types.
constexpr uint32_t kVarint = 0;
constexpr uint32_t kFixed64 = 1;
constexpr uint32_t kLengthDelimited = 2;
constexpr uint32_t kFixed32 = 5;
constexpr int kMaxVarintBytes = 10;

struct WireField {
  uint32_t number = 0;
  uint32_t wire_type = 0;
  uint64_t value = 0;      // kVarint, kFixed32, kFixed64
  absl::string_view bytes;  // kLengthDelimited
};

// The fields of one serialized message, in order.
class WireReader {
 public:
  WireReader(absl::string_view data, std::string what) : data_(data), what_(std::move(what)) {}

  // false at the end of the message; an error for bytes that are not a message.
  absl::StatusOr<bool> Next(WireField* field) {
    if (pos_ == data_.size()) return false;
    ASSIGN_OR_RETURN(uint64_t key, ReadVarint());
    field->number = static_cast<uint32_t>(key >> 3);
    field->wire_type = static_cast<uint32_t>(key & 7);
    if (key >> 3 == 0 || key >> 3 > UINT32_MAX) return Error("a field number out of range");
    switch (field->wire_type) {
      case kVarint: {
        ASSIGN_OR_RETURN(field->value, ReadVarint());
        return true;
      }
      case kFixed64:
      case kFixed32: {
        const size_t n = field->wire_type == kFixed64 ? 8 : 4;
        if (n > data_.size() - pos_) return Error("the data ends inside a field (truncated?)");
        field->value = 0;
        for (size_t i = 0; i < n; ++i) {
          field->value |= static_cast<uint64_t>(static_cast<uint8_t>(data_[pos_ + i])) << (8 * i);
        }
        pos_ += n;
        return true;
      }
      case kLengthDelimited: {
        ASSIGN_OR_RETURN(uint64_t length, ReadVarint());
        if (length > data_.size() - pos_) {
          return Error("a field longer than the data that is left (truncated?)");
        }
        field->bytes = data_.substr(pos_, length);
        pos_ += length;
        return true;
      }
      default:
        return Error(absl::StrCat("wire type ", field->wire_type, " of field ", field->number));
    }
  }

  absl::Status Error(absl::string_view message) const {
    return absl::InvalidArgumentError(
        absl::StrCat(what_, ": not a SentencePiece model: ", message, " at byte ", pos_));
  }

 private:
  absl::StatusOr<uint64_t> ReadVarint() {
    uint64_t value = 0;
    for (int i = 0; i < kMaxVarintBytes; ++i) {
      if (pos_ == data_.size()) return Error("the data ends inside a number (truncated?)");
      const auto byte = static_cast<uint8_t>(data_[pos_++]);
      value |= static_cast<uint64_t>(byte & 0x7f) << (7 * i);
      if ((byte & 0x80) == 0) return value;
    }
    return Error("a number longer than 10 bytes");
  }

  absl::string_view data_;
  std::string what_;
  size_t pos_ = 0;
};

absl::Status ExpectWireType(const WireField& f, uint32_t wire_type, const WireReader& reader) {
  if (f.wire_type == wire_type) return absl::OkStatus();
  return reader.Error(absl::StrCat("field ", f.number, " has wire type ", f.wire_type));
}

absl::StatusOr<SentencePieceProto::Piece> ParsePiece(absl::string_view bytes,
                                                     const std::string& what) {
  SentencePieceProto::Piece piece;
  WireReader reader(bytes, what);
  WireField f;
  while (true) {
    ASSIGN_OR_RETURN(bool more, reader.Next(&f));
    if (!more) break;
    if (f.number == kPieceText) {
      RETURN_IF_ERROR(ExpectWireType(f, kLengthDelimited, reader));
      piece.piece = std::string(f.bytes);
    } else if (f.number == kPieceScore) {
      RETURN_IF_ERROR(ExpectWireType(f, kFixed32, reader));
      const auto bits = static_cast<uint32_t>(f.value);
      std::memcpy(&piece.score, &bits, sizeof(bits));
    } else if (f.number == kPieceType) {
      RETURN_IF_ERROR(ExpectWireType(f, kVarint, reader));
      if (f.value < static_cast<uint64_t>(SentencePieceProto::PieceType::kNormal) ||
          f.value > static_cast<uint64_t>(SentencePieceProto::PieceType::kByte)) {
        return absl::InvalidArgumentError(absl::StrCat(what, ": unknown piece type ", f.value));
      }
      piece.type = static_cast<SentencePieceProto::PieceType>(f.value);
    }
  }
  if (piece.piece.empty()) return absl::InvalidArgumentError(absl::StrCat(what, ": empty piece"));
  return piece;
}

absl::Status ParseTrainerSpec(absl::string_view bytes, const std::string& what,
                              SentencePieceProto* model) {
  WireReader reader(bytes, what);
  WireField f;
  while (true) {
    ASSIGN_OR_RETURN(bool more, reader.Next(&f));
    if (!more) return absl::OkStatus();
    if (f.number != kTrainerModelType && f.number != kTrainerByteFallback &&
        f.number != kTrainerUnkId && f.number != kTrainerBosId && f.number != kTrainerEosId) {
      continue;
    }
    RETURN_IF_ERROR(ExpectWireType(f, kVarint, reader));
    // int32 fields: a negative value is sign-extended to 64 bits on the wire.
    const auto id = static_cast<int32_t>(static_cast<uint32_t>(f.value));
    switch (f.number) {
      case kTrainerModelType:
        if (f.value < static_cast<uint64_t>(SentencePieceProto::ModelType::kUnigram) ||
            f.value > static_cast<uint64_t>(SentencePieceProto::ModelType::kChar)) {
          return absl::InvalidArgumentError(absl::StrCat(what, ": unknown model_type ", f.value));
        }
        model->model_type = static_cast<SentencePieceProto::ModelType>(f.value);
        break;
      case kTrainerByteFallback: model->byte_fallback = f.value != 0; break;
      case kTrainerUnkId: model->unk_id = id; break;
      case kTrainerBosId: model->bos_id = id; break;
      case kTrainerEosId: model->eos_id = id; break;
    }
  }
}

}  // namespace

absl::StatusOr<SentencePieceProto> ParseSentencePieceModel(absl::string_view bytes,
                                                           absl::string_view what) {
  SentencePieceProto model;
  WireReader reader(bytes, std::string(what));
  WireField f;
  while (true) {
    ASSIGN_OR_RETURN(bool more, reader.Next(&f));
    if (!more) break;
    if (f.number == kModelPieces) {
      RETURN_IF_ERROR(ExpectWireType(f, kLengthDelimited, reader));
      ASSIGN_OR_RETURN(SentencePieceProto::Piece piece,
                       ParsePiece(f.bytes, absl::StrCat(what, ": piece ", model.pieces.size())));
      model.pieces.push_back(std::move(piece));
    } else if (f.number == kModelTrainerSpec) {
      RETURN_IF_ERROR(ExpectWireType(f, kLengthDelimited, reader));
      RETURN_IF_ERROR(ParseTrainerSpec(f.bytes, absl::StrCat(what, ": trainer_spec"), &model));
    } else if (f.number == kModelNormalizerSpec) {
      RETURN_IF_ERROR(ExpectWireType(f, kLengthDelimited, reader));
      WireReader spec(f.bytes, absl::StrCat(what, ": normalizer_spec"));
      WireField g;
      while (true) {
        ASSIGN_OR_RETURN(bool more_spec, spec.Next(&g));
        if (!more_spec) break;
        if (g.number != kNormalizerCharsmap) continue;
        RETURN_IF_ERROR(ExpectWireType(g, kLengthDelimited, spec));
        model.precompiled_charsmap = std::string(g.bytes);
      }
    }
  }
  if (model.pieces.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": not a SentencePiece model: no pieces"));
  }
  absl::flat_hash_set<absl::string_view> seen;
  for (size_t id = 0; id < model.pieces.size(); ++id) {
    if (!seen.insert(model.pieces[id].piece).second) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": piece ", id, " \"",
                                                     model.pieces[id].piece, "\" occurs twice"));
    }
  }
  const int size = static_cast<int>(model.pieces.size());
  for (auto [name, id] : {std::pair<const char*, int>{"unk_id", model.unk_id},
                          {"bos_id", model.bos_id}, {"eos_id", model.eos_id}}) {
    if (id < -1 || id >= size) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": trainer_spec ", name, " ", id,
                                                     " is not a piece (the model has ", size, ")"));
    }
  }
  if (model.unk_id < 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": the model has no unknown piece"));
  }
  return model;
}

}  // namespace text_internal
}  // namespace twin
