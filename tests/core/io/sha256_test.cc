#include "core/io/sha256.h"

#include <stdlib.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

namespace twin {
namespace {

constexpr char kEmptyDigest[] = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
constexpr char kAbcDigest[] = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
// FIPS 180-2 two-block message.
constexpr char kTwoBlockMessage[] = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
constexpr char kTwoBlockDigest[] =
    "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1";

// Deterministic bytes, long enough to span several internal SHA-256 blocks and, for files,
// more than one read chunk.
std::string PatternBytes(size_t size_bytes) {
  std::string bytes(size_bytes, '\0');
  uint32_t state = 12345;
  for (char& byte : bytes) {
    state = state * 1103515245u + 12345u;
    byte = static_cast<char>(state >> 24);
  }
  return bytes;
}

class Sha256FileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/sha256_test.XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string WriteFile(const std::string& name, const std::string& bytes) {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path, std::ios::binary) << bytes;
    return path;
  }

  std::string dir_;
};

TEST(Sha256Test, KnownVectors) {
  EXPECT_EQ(Sha256Hex(""), kEmptyDigest);
  EXPECT_EQ(Sha256Hex("abc"), kAbcDigest);
  EXPECT_EQ(Sha256Hex(kTwoBlockMessage), kTwoBlockDigest);
}

TEST(Sha256Test, HasherWithoutUpdatesDigestsEmptyInput) {
  Sha256Hasher hasher;
  EXPECT_EQ(hasher.HexDigest(), kEmptyDigest);
}

TEST(Sha256Test, StreamingInPiecesEqualsOneShot) {
  const std::string bytes = PatternBytes(100000);
  const std::string one_shot = Sha256Hex(bytes);
  // Irregular piece sizes, including empty pieces and pieces that straddle 64-byte blocks.
  Sha256Hasher hasher;
  size_t offset = 0;
  for (size_t piece = 0; offset < bytes.size(); piece = (piece * 7 + 13) % 997) {
    const size_t take = std::min(piece, bytes.size() - offset);
    hasher.Update(absl::string_view(bytes).substr(offset, take));
    offset += take;
  }
  EXPECT_EQ(hasher.HexDigest(), one_shot);

  Sha256Hasher abc;
  abc.Update("a");
  abc.Update("");
  abc.Update("bc");
  EXPECT_EQ(abc.HexDigest(), kAbcDigest);
}

TEST(Sha256Test, DifferentInputsGiveDifferentDigests) {
  EXPECT_NE(Sha256Hex("abc"), Sha256Hex("abd"));
  EXPECT_EQ(Sha256Hex("abc").size(), 64u);
}

TEST_F(Sha256FileTest, FileDigestEqualsStringDigestAndReportsSize) {
  // 2.5 MiB: several read chunks plus a partial one.
  const std::string bytes = PatternBytes((5u << 20) / 2);
  const std::string path = WriteFile("blob", bytes);
  uint64_t size_bytes = 0;
  auto digest = Sha256File(path, &size_bytes);
  ASSERT_TRUE(digest.ok()) << digest.status();
  EXPECT_EQ(*digest, Sha256Hex(bytes));
  EXPECT_EQ(size_bytes, bytes.size());
}

TEST_F(Sha256FileTest, SmallAndEmptyFiles) {
  uint64_t size_bytes = 99;
  auto empty = Sha256File(WriteFile("empty", ""), &size_bytes);
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_EQ(*empty, kEmptyDigest);
  EXPECT_EQ(size_bytes, 0u);

  auto abc = Sha256File(WriteFile("abc", "abc"));  // size pointer is optional
  ASSERT_TRUE(abc.ok()) << abc.status();
  EXPECT_EQ(*abc, kAbcDigest);
}

TEST_F(Sha256FileTest, MissingFileIsNotFoundNamingPath) {
  const std::string path = dir_ + "/no_such_blob";
  auto digest = Sha256File(path);
  ASSERT_FALSE(digest.ok());
  EXPECT_EQ(digest.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(digest.status().message().find(path), std::string::npos) << digest.status();
}

}  // namespace
}  // namespace twin
