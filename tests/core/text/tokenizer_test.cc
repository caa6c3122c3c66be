#include "core/text/tokenizer.h"

#include <cstdint>
#include <limits>

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace twin {
namespace {

using ::testing::HasSubstr;

TEST(TokenizerTest, BytesWithBosPaddingAndTruncation) {
  TokenizerSpec spec;
  spec.max_length = 4;
  auto tok = Tokenizer::Create(spec);
  ASSERT_TRUE(tok.ok());
  auto batch = (*tok)->Encode({"ab", "\xff" "bcdef"});
  ASSERT_TRUE(batch.ok()) << batch.status();
  at::Tensor expected_ids = at::tensor({1, 'a' + 4, 'b' + 4, 0,  //
                                        1, 255 + 4, 'b' + 4, 'c' + 4},
                                       at::kLong)
                                .view({2, 4});
  at::Tensor expected_mask = at::tensor({1, 1, 1, 0, 1, 1, 1, 1}, at::kLong).view({2, 4});
  EXPECT_TRUE(at::equal(batch->input_ids, expected_ids));
  EXPECT_TRUE(at::equal(batch->attention_mask, expected_mask));
}

TEST(TokenizerTest, PadsToLongestRowOnly) {
  auto tok = Tokenizer::Create(TokenizerSpec{});
  ASSERT_TRUE(tok.ok());
  auto batch = (*tok)->Encode({"x", ""});
  ASSERT_TRUE(batch.ok());
  EXPECT_EQ(batch->input_ids.sizes(), (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(batch->attention_mask.sum().item<int64_t>(), 3);
}

TEST(TokenizerTest, RejectsBadSpecsAndEmptyBatches) {
  TokenizerSpec unknown;
  unknown.type = "wordpiece";
  EXPECT_EQ(Tokenizer::Create(unknown).status().code(), absl::StatusCode::kInvalidArgument);
  TokenizerSpec short_spec;
  short_spec.max_length = 1;
  EXPECT_FALSE(Tokenizer::Create(short_spec).ok());
  TokenizerSpec collide;
  collide.pad_id = 10;
  EXPECT_FALSE(Tokenizer::Create(collide).ok());
  auto tok = Tokenizer::Create(TokenizerSpec{});
  EXPECT_EQ((*tok)->Encode({}).status().code(), absl::StatusCode::kInvalidArgument);
}

// offset + 256 once overflowed int64 in the pad-id check; ids beyond the bounds are refused.
TEST(TokenizerTest, RejectsIdsThatOverflowOrExceedTheBounds) {
  TokenizerSpec huge_offset;
  huge_offset.offset = std::numeric_limits<int64_t>::max() - 10;
  auto status = Tokenizer::Create(huge_offset).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("offset + 255"));
  TokenizerSpec huge_pad;
  huge_pad.pad_id = std::numeric_limits<int64_t>::max();
  EXPECT_EQ(Tokenizer::Create(huge_pad).status().code(), absl::StatusCode::kInvalidArgument);
  TokenizerSpec bad_bos;
  bad_bos.bos_id = -7;
  EXPECT_THAT(std::string(Tokenizer::Create(bad_bos).status().message()), HasSubstr("bos_id"));
  TokenizerSpec long_spec;
  long_spec.max_length = std::numeric_limits<int64_t>::max();
  EXPECT_THAT(std::string(Tokenizer::Create(long_spec).status().message()),
              HasSubstr("max_length"));
  EXPECT_EQ(LargestTokenId(TokenizerSpec{}), 4 + 255);
}

TEST(TokenizerTest, CheckTokenIdsNamesTheFirstIdOutsideTheVocabulary) {
  const at::Tensor ids = at::tensor({3, 5, 7, 1, 9, 2}, at::kLong).view({2, 3});
  EXPECT_TRUE(CheckTokenIds(ids, 10, "ids").ok());
  EXPECT_TRUE(CheckTokenIds(ids, 0, "ids").ok());  // vocabulary unknown
  const absl::Status big = CheckTokenIds(ids, 8, "router data x: input_ids");
  EXPECT_EQ(big.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(big.message()),
              HasSubstr("router data x: input_ids[1][1] is 9; the model's vocabulary has 8 ids"));
  const absl::Status negative = CheckTokenIds(at::tensor({0, -4}, at::kLong), 8, "ids");
  EXPECT_THAT(std::string(negative.message()), HasSubstr("ids[1] is -4"));
}

}  // namespace
}  // namespace twin
