#include "core/tokenizer.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

namespace twin {
namespace {

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

}  // namespace
}  // namespace twin
