#include "core/io/safetensors.h"

#include <stdlib.h>
#include <sys/resource.h>

#include <algorithm>
#include <csignal>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <ostream>
#include <string>
#include <tuple>
#include <vector>

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"

namespace twin {
namespace {

using ::testing::HasSubstr;

// Little-endian encodings written out by hand, so the files built below follow the format
// byte for byte independently of the code under test.
std::string Le(uint64_t value, int num_bytes) {
  std::string bytes;
  for (int i = 0; i < num_bytes; ++i) bytes.push_back(static_cast<char>(value >> (8 * i)));
  return bytes;
}

// A safetensors file: u64 header length, header, data section.
std::string SpecFile(const std::string& header, const std::string& data) {
  return Le(header.size(), 8) + header + data;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/safetensors_test.XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string Path(const std::string& name) const { return dir_ + "/" + name; }

  std::string WriteBytes(const std::string& name, const std::string& bytes) const {
    const std::string path = Path(name);
    std::ofstream(path, std::ios::binary) << bytes;
    return path;
  }

  std::vector<std::string> DirEntries() const {
    std::vector<std::string> names;
    for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
      names.push_back(entry.path().filename().string());
    }
    std::sort(names.begin(), names.end());
    return names;
  }

  std::string dir_;
};

void ExpectError(const absl::Status& status, absl::StatusCode code,
                 const std::vector<std::string>& fragments) {
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.code(), code) << status;
  for (const std::string& fragment : fragments) {
    EXPECT_THAT(std::string(status.message()), HasSubstr(fragment));
  }
}

TEST(DTypeTest, NamesSizesAndScalarTypes) {
  const std::vector<std::tuple<DType, std::string, size_t, c10::ScalarType>> expected = {
      {DType::kF32, "F32", 4, at::kFloat},      {DType::kF16, "F16", 2, at::kHalf},
      {DType::kBF16, "BF16", 2, at::kBFloat16}, {DType::kF64, "F64", 8, at::kDouble},
      {DType::kI64, "I64", 8, at::kLong},       {DType::kI32, "I32", 4, at::kInt},
      {DType::kI16, "I16", 2, at::kShort},      {DType::kI8, "I8", 1, at::kChar},
      {DType::kU8, "U8", 1, at::kByte},         {DType::kBool, "BOOL", 1, at::kBool}};
  for (const auto& [dtype, name, size, scalar_type] : expected) {
    EXPECT_EQ(DTypeName(dtype), name);
    EXPECT_EQ(DTypeSize(dtype), size) << name;
    EXPECT_EQ(ToScalarType(dtype), scalar_type) << name;
    auto parsed = ParseDType(name);
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, dtype);
    auto from = FromScalarType(scalar_type);
    ASSERT_TRUE(from.ok()) << from.status();
    EXPECT_EQ(*from, dtype);
  }
  ExpectError(ParseDType("F8_E4M3").status(), absl::StatusCode::kInvalidArgument, {"F8_E4M3"});
  ExpectError(ParseDType("f32").status(), absl::StatusCode::kInvalidArgument, {"f32"});
  ExpectError(FromScalarType(at::kComplexFloat).status(), absl::StatusCode::kInvalidArgument,
              {"ComplexFloat"});
}

TEST_F(SafetensorsTest, RoundTripEveryDTypeWithExactValuesAndMetadata) {
  const std::vector<std::pair<std::string, at::Tensor>> tensors = {
      {"f32", at::tensor({1.5f, -2.25f, 3.0e38f, 1.0e-40f, 0.0f, -7.0f}).reshape({2, 3})},
      // Values exactly representable in the 16-bit formats: the round trip must be bit exact.
      {"f16", at::tensor({0.5, -1.0, 65504.0, 5.960464477539063e-08}).to(at::kHalf)},
      {"bf16", at::tensor({1.0, -3.0, 0.15625, 3.3895313892515355e+38}).to(at::kBFloat16)},
      {"f64", at::tensor({3.141592653589793, -1e-300, 1e300})},
      {"i64", at::tensor(std::vector<int64_t>{std::numeric_limits<int64_t>::min(), -1,
                                              std::numeric_limits<int64_t>::max()})},
      {"i32", at::tensor({-2147483647 - 1, 0, 2147483647}, at::kInt).reshape({3, 1})},
      {"i16", at::tensor({-32768, 1, 32767}, at::kShort)},
      {"i8", at::tensor({-128, 0, 127}, at::kChar)},
      {"u8", at::tensor({0, 128, 255}, at::kByte)},
      {"bool", at::tensor({1, 0, 1, 1}, at::kByte).to(at::kBool)}};
  const std::string path = Path("all.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, tensors, {{"format", "pt"}, {"step", "42"}}).ok());

  auto reader = SafetensorsReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  std::vector<std::string> expected_names;
  for (const auto& [name, tensor] : tensors) expected_names.push_back(name);
  EXPECT_EQ((*reader)->names(), expected_names);
  EXPECT_EQ((*reader)->metadata(),
            (std::map<std::string, std::string>{{"format", "pt"}, {"step", "42"}}));
  for (const auto& [name, tensor] : tensors) {
    SCOPED_TRACE(name);
    ASSERT_TRUE((*reader)->Contains(name));
    auto info = (*reader)->Info(name);
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_EQ(ToScalarType(info->dtype), tensor.scalar_type());
    EXPECT_EQ(info->shape, tensor.sizes().vec());
    EXPECT_EQ(info->num_bytes(), static_cast<uint64_t>(tensor.nbytes()));
    auto loaded = (*reader)->Get(name);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_EQ(loaded->scalar_type(), tensor.scalar_type());
    EXPECT_TRUE(at::equal(*loaded, tensor));
  }
}

TEST_F(SafetensorsTest, ZeroElementAndScalarTensors) {
  const std::vector<std::pair<std::string, at::Tensor>> tensors = {
      {"empty_rows", at::zeros({0, 4})},
      {"scalar", at::scalar_tensor(2.5, at::kDouble)},
      {"empty_cols", at::zeros({3, 0}, at::kLong)},
      {"empty_again", at::zeros({0}, at::kHalf)},
      {"after", at::tensor({7, 8}, at::kInt)}};
  const std::string path = Path("edge.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, tensors).ok());
  auto reader = SafetensorsReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->names(), (std::vector<std::string>{"empty_rows", "scalar", "empty_cols",
                                                          "empty_again", "after"}));
  for (const auto& [name, tensor] : tensors) {
    SCOPED_TRACE(name);
    auto loaded = (*reader)->Get(name);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_EQ(loaded->sizes(), tensor.sizes());
    EXPECT_TRUE(at::equal(*loaded, tensor));
  }
  auto scalar = (*reader)->Info("scalar");
  ASSERT_TRUE(scalar.ok());
  EXPECT_TRUE(scalar->shape.empty());
  EXPECT_EQ(scalar->num_bytes(), 8u);
  EXPECT_EQ((*reader)->Info("empty_cols")->num_bytes(), 0u);
}

// The data section: a = F32 [2,2] {1, -2, 0.5, 3}; b = BF16 [2] {1, -2}; h = F16 [1] {1};
// i = I64 scalar -5 at an unaligned offset; flag = BOOL [2] {1, 0}.
std::string HandBuiltData() {
  return Le(0x3F800000, 4) + Le(0xC0000000, 4) + Le(0x3F000000, 4) + Le(0x40400000, 4) +
         Le(0x3F80, 2) + Le(0xC000, 2) + Le(0x3C00, 2) + Le(static_cast<uint64_t>(-5), 8) +
         Le(1, 1) + Le(0, 1);
}

// Keys deliberately not in offset order; names() must follow the offsets.
constexpr char kHandBuiltHeader[] = R"({"__metadata__":{"format":"pt"},)"
                                    R"("b":{"dtype":"BF16","shape":[2],"data_offsets":[16,20]},)"
                                    R"("flag":{"shape":[2],"dtype":"BOOL","data_offsets":[30,32]},)"
                                    R"("a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},)"
                                    R"("i":{"dtype":"I64","shape":[],"data_offsets":[22,30]},)"
                                    R"("h":{"dtype":"F16","shape":[1],"data_offsets":[20,22]}})";

void ExpectHandBuiltContents(const SafetensorsReader& reader) {
  EXPECT_EQ(reader.names(), (std::vector<std::string>{"a", "b", "h", "i", "flag"}));
  EXPECT_EQ(reader.metadata().at("format"), "pt");
  auto a = reader.Get("a");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_TRUE(at::equal(*a, at::tensor({1.0f, -2.0f, 0.5f, 3.0f}).reshape({2, 2})));
  auto b = reader.Get("b");
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_TRUE(at::equal(*b, at::tensor({1.0f, -2.0f}).to(at::kBFloat16)));
  auto h = reader.Get("h");
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_TRUE(at::equal(*h, at::tensor({1.0f}).to(at::kHalf)));
  auto i = reader.Get("i");
  ASSERT_TRUE(i.ok()) << i.status();
  EXPECT_EQ(i->dim(), 0);
  EXPECT_EQ(i->item<int64_t>(), -5);
  auto flag = reader.Get("flag");
  ASSERT_TRUE(flag.ok()) << flag.status();
  EXPECT_TRUE(at::equal(*flag, at::tensor({1, 0}, at::kByte).to(at::kBool)));
}

TEST_F(SafetensorsTest, ReadsHandBuiltFile) {
  const std::string path =
      WriteBytes("hand.safetensors", SpecFile(kHandBuiltHeader, HandBuiltData()));
  auto reader = SafetensorsReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  ExpectHandBuiltContents(**reader);
  EXPECT_EQ((*reader)->path(), path);
}

TEST_F(SafetensorsTest, AcceptsHeaderPaddedWithSpaces) {
  const std::string header = std::string(kHandBuiltHeader) + std::string(77, ' ');
  auto reader =
      SafetensorsReader::Open(WriteBytes("padded.safetensors", SpecFile(header, HandBuiltData())));
  ASSERT_TRUE(reader.ok()) << reader.status();
  ExpectHandBuiltContents(**reader);
}

TEST_F(SafetensorsTest, GetConvertsToRequestedType) {
  auto reader = SafetensorsReader::Open(
      WriteBytes("hand.safetensors", SpecFile(kHandBuiltHeader, HandBuiltData())));
  ASSERT_TRUE(reader.ok()) << reader.status();
  auto b = (*reader)->Get("b", at::kFloat);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->scalar_type(), at::kFloat);
  EXPECT_TRUE(at::equal(*b, at::tensor({1.0f, -2.0f})));
  auto i = (*reader)->Get("i", at::kDouble);
  ASSERT_TRUE(i.ok()) << i.status();
  EXPECT_EQ(i->item<double>(), -5.0);
}

TEST_F(SafetensorsTest, WriterOutputFollowsFormat) {
  const at::Tensor w = at::tensor({1.0f, -2.0f, 0.5f});
  const at::Tensor n = at::tensor({-5}, at::kLong);
  const std::string path = Path("out.safetensors");
  auto writer = SafetensorsWriter::Create(path);
  ASSERT_TRUE(writer.ok()) << writer.status();
  ASSERT_TRUE((*writer)->Add("z_first", w).ok());
  ASSERT_TRUE((*writer)->Add("a_second", n).ok());
  ASSERT_TRUE((*writer)->Add("half", at::tensor({1.0f, -2.0f}).to(at::kHalf)).ok());
  ASSERT_TRUE((*writer)->Add("brain", at::tensor({1.0f}).to(at::kBFloat16)).ok());
  (*writer)->SetMetadata("format", "pt");
  ASSERT_TRUE((*writer)->Finish().ok());

  const std::string bytes = ReadAll(path);
  ASSERT_GE(bytes.size(), 8u);
  uint64_t header_bytes = 0;
  for (int i = 0; i < 8; ++i) header_bytes |= uint64_t{static_cast<uint8_t>(bytes[i])} << (8 * i);
  ASSERT_LE(8 + header_bytes, bytes.size());
  EXPECT_EQ((8 + header_bytes) % 8, 0u) << "data section must start 8-byte aligned";
  const std::string header = bytes.substr(8, header_bytes);
  using Json = nlohmann::ordered_json;
  const Json json = Json::parse(header);
  EXPECT_EQ(json.at("__metadata__").at("format"), "pt");
  EXPECT_EQ(json.at("z_first").at("dtype"), "F32");
  EXPECT_EQ(json.at("z_first").at("shape"), Json::array({3}));
  EXPECT_EQ(json.at("z_first").at("data_offsets"), Json::array({0, 12}));
  EXPECT_EQ(json.at("a_second").at("dtype"), "I64");
  EXPECT_EQ(json.at("a_second").at("data_offsets"), Json::array({12, 20}));
  EXPECT_EQ(json.at("half").at("dtype"), "F16");
  EXPECT_EQ(json.at("half").at("data_offsets"), Json::array({20, 24}));
  EXPECT_EQ(json.at("brain").at("dtype"), "BF16");
  EXPECT_EQ(json.at("brain").at("data_offsets"), Json::array({24, 26}));
  EXPECT_LT(header.find("z_first"), header.find("a_second")) << "header keeps Add order";
  EXPECT_EQ(bytes.substr(8 + header_bytes),
            Le(0x3F800000, 4) + Le(0xC0000000, 4) + Le(0x3F000000, 4) +
                Le(static_cast<uint64_t>(-5), 8) + Le(0x3C00, 2) + Le(0xC000, 2) + Le(0x3F80, 2));
  EXPECT_EQ(DirEntries(), std::vector<std::string>{"out.safetensors"});
}

TEST_F(SafetensorsTest, NonContiguousInputIsWrittenInLogicalOrder) {
  const at::Tensor base = at::arange(12, at::kFloat).reshape({3, 4});
  const at::Tensor transposed = base.t();
  ASSERT_FALSE(transposed.is_contiguous());
  const std::string path = Path("t.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {{"t", transposed}, {"col", base.select(1, 2)}}).ok());
  auto reader = SafetensorsReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_TRUE(at::equal((*reader)->Get("t").value(), transposed));
  EXPECT_TRUE(at::equal((*reader)->Get("col").value(), at::tensor({2.0f, 6.0f, 10.0f})));
}

TEST_F(SafetensorsTest, LargeTensorRoundTripAndRepeatedGet) {
  // 8 MiB of float32 plus a small tensor after it, so the large one spans many whole pages
  // whose mapping Get() releases.
  const at::Tensor large = at::arange(2 << 20, at::kFloat).mul_(0.25);
  const at::Tensor tail = at::tensor({9.0, 10.0}, at::kDouble);
  const std::string path = Path("large.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {{"large", large}, {"tail", tail}}).ok());
  auto reader = SafetensorsReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  for (int round = 0; round < 2; ++round) {  // the second read sees re-faulted pages
    SCOPED_TRACE(round);
    auto loaded = (*reader)->Get("large");
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_TRUE(at::equal(*loaded, large));
    EXPECT_TRUE(at::equal((*reader)->Get("tail").value(), tail));
  }
}

// Resident size of this process's mapping of `path`, from /proc/self/smaps; -1 if unmapped.
int64_t MappedResidentKb(const std::string& path) {
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool in_mapping = false;
  while (std::getline(smaps, line)) {
    const bool is_header = line.find(':') > line.find(' ');  // "addr perms ... path"
    if (is_header) {
      in_mapping = line.size() >= path.size() &&
                   line.compare(line.size() - path.size(), path.size(), path) == 0;
    } else if (in_mapping && line.rfind("Rss:", 0) == 0) {
      return std::stoll(line.substr(4));
    }
  }
  return -1;
}

TEST_F(SafetensorsTest, StreamingTensorByTensorReleasesMappedPages) {
  constexpr int kNumTensors = 4;
  constexpr int64_t kElements = 1 << 20;  // 4 MiB of float32 each
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (int i = 0; i < kNumTensors; ++i) {
    tensors.push_back({"t" + std::to_string(i), at::full({kElements}, static_cast<float>(i))});
  }
  const std::string path = Path("stream.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, tensors).ok());
  auto reader = SafetensorsReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  ASSERT_GE(MappedResidentKb(path), 0) << "file is not mapped";
  for (int i = 0; i < kNumTensors; ++i) {
    auto loaded = (*reader)->Get("t" + std::to_string(i));
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_TRUE(at::equal(*loaded, tensors[i].second));
    // Only the header page and the partial pages at tensor edges may stay resident; keeping
    // the copied pages would leave (i + 1) * 4 MiB mapped.
    EXPECT_LT(MappedResidentKb(path), 256) << "after tensor " << i;
  }
}

// ------------------------------------------------------------------------------------------
// Reader errors on malformed files.

struct BadFileCase {
  std::string label;
  std::string header;
  std::string data;
  absl::StatusCode code;
  std::vector<std::string> fragments;  // besides the file path
};

void PrintTo(const BadFileCase& c, std::ostream* os) { *os << c.label; }

class BadFileTest : public SafetensorsTest, public ::testing::WithParamInterface<BadFileCase> {};

TEST_P(BadFileTest, RejectedWithCodeNamingFileAndTensor) {
  const BadFileCase& c = GetParam();
  const std::string path = WriteBytes("bad.safetensors", SpecFile(c.header, c.data));
  auto reader = SafetensorsReader::Open(path);
  std::vector<std::string> fragments = c.fragments;
  fragments.push_back(path);
  ExpectError(reader.status(), c.code, fragments);
}

const std::string kEight(8, '\0');
constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;

INSTANTIATE_TEST_SUITE_P(
    Malformed, BadFileTest,
    ::testing::Values(
        BadFileCase{"BadJson", R"({"w": {"dtype": "F32",)", "", kInvalid, {"JSON"}},
        BadFileCase{"HeaderNotObject", "[1, 2]", "", kInvalid, {"object"}},
        BadFileCase{"InvalidUtf8", "{\"w\xff\": 1}", "", kInvalid, {}},
        BadFileCase{"UnknownDType",
                    R"({"w":{"dtype":"F8_E5M2","shape":[8],"data_offsets":[0,8]}})",
                    kEight,
                    kInvalid,
                    {"'w'", "F8_E5M2"}},
        BadFileCase{"DTypeNotString",
                    R"({"w":{"dtype":4,"shape":[2],"data_offsets":[0,8]}})",
                    kEight,
                    kInvalid,
                    {"'w'", "dtype"}},
        BadFileCase{"ShapeSizeMismatch",
                    R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})",
                    kEight,
                    kInvalid,
                    {"'w'", "[3]"}},
        BadFileCase{"NegativeDim",
                    R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})",
                    kEight,
                    kInvalid,
                    {"'w'", "shape"}},
        BadFileCase{"FractionalDim",
                    R"({"w":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})",
                    kEight,
                    kInvalid,
                    {"'w'", "shape"}},
        BadFileCase{"ShapeOverflow",
                    R"({"w":{"dtype":"F32","shape":[4611686018427387904,4611686018427387904],)"
                    R"("data_offsets":[0,8]}})",
                    kEight,
                    kInvalid,
                    {"'w'", "2^64"}},
        BadFileCase{"MissingField",
                    R"({"w":{"dtype":"F32","shape":[2]}})",
                    kEight,
                    kInvalid,
                    {"'w'", "data_offsets"}},
        BadFileCase{"ExtraField",
                    R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}})",
                    kEight,
                    kInvalid,
                    {"'w'"}},
        BadFileCase{"EntryNotObject", R"({"w":[1,2]})", "", kInvalid, {"'w'"}},
        BadFileCase{"OffsetsNotPair",
                    R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0]}})",
                    kEight,
                    kInvalid,
                    {"'w'", "data_offsets"}},
        BadFileCase{"BeginAfterEnd",
                    R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})",
                    kEight,
                    kInvalid,
                    {"'w'", "begin > end"}},
        BadFileCase{"OffsetsPastData",
                    R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})",
                    kEight,
                    absl::StatusCode::kDataLoss,
                    {"'w'", "past the end"}},
        BadFileCase{"Overlap",
                    R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                    R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                    std::string(12, '\0'),
                    kInvalid,
                    {"'a'", "'b'", "overlap"}},
        BadFileCase{"Gap",
                    R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                    R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
                    std::string(12, '\0'),
                    kInvalid,
                    {"'b'", "gap"}},
        BadFileCase{"TrailingBytes",
                    R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
                    kEight,
                    kInvalid,
                    {"trailing"}},
        BadFileCase{"DataWithoutTensors", "{}", kEight, kInvalid, {"trailing"}},
        BadFileCase{"DuplicateName",
                    R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                    R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                    kEight,
                    kInvalid,
                    {"'a'", "more than once"}},
        BadFileCase{"MetadataNotStrings",
                    R"({"__metadata__":{"step":3},"a":{"dtype":"I8","shape":[1],)"
                    R"("data_offsets":[0,1]}})",
                    std::string(1, '\0'),
                    kInvalid,
                    {"__metadata__", "step"}}),
    [](const ::testing::TestParamInfo<BadFileCase>& info) { return info.param.label; });

// A shape nested 200,000 levels deep once overflowed the stack (the error message printed
// it recursively); the reader now refuses anything deeper than a valid header as it parses.
TEST_F(SafetensorsTest, DeeplyNestedHeaderIsRefusedWithoutRecursion) {
  constexpr int kLevels = 200000;
  const std::string header = R"({"x":{"dtype":"F32","shape":)" + std::string(kLevels, '[') +
                             std::string(kLevels, ']') + R"(,"data_offsets":[0,0]}})";
  const std::string path = WriteBytes("deep.safetensors", SpecFile(header, ""));
  ExpectError(SafetensorsReader::Open(path).status(), kInvalid,
              {path, "header", "nests deeper than 3 levels"});
}

// An array of two million empty objects: linear to parse (nlohmann's callback parser rescanned
// the array at every closed object: past the test timeout at this size), then refused.
TEST_F(SafetensorsTest, HeaderWithTwoMillionArrayElementsIsRefusedInLinearTime) {
  std::string header = R"({"x":[)";
  for (int i = 0; i < 2000000; ++i) header += i ? ",{}" : "{}";
  header += "]}";
  const std::string path = WriteBytes("wide.safetensors", SpecFile(header, ""));
  ExpectError(SafetensorsReader::Open(path).status(), kInvalid, {path, "'x'", "exactly dtype"});
}

// 500,000 tensors (zero-sized, so they all start at offset 0): the reader keeps header order,
// which breaks ties between equal offsets, without ordered_json's linear key search (which
// takes longer than the test timeout at this size).
TEST_F(SafetensorsTest, HeaderWithManyTensorsKeepsHeaderOrder) {
  constexpr int kTensors = 500000;
  std::string header = "{";
  for (int i = 0; i < kTensors; ++i) {
    // Names in descending order, so that header order differs from sorted order.
    header += absl::StrCat(i ? "," : "", "\"t", kTensors - i,
                           R"(":{"dtype":"F32","shape":[0],"data_offsets":[0,0]})");
  }
  header += "}";
  const std::string path = WriteBytes("many.safetensors", SpecFile(header, ""));
  auto reader = SafetensorsReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  ASSERT_EQ((*reader)->names().size(), static_cast<size_t>(kTensors));
  EXPECT_EQ((*reader)->names().front(), absl::StrCat("t", kTensors));
  EXPECT_EQ((*reader)->names().back(), "t1");
}

TEST_F(SafetensorsTest, DuplicateKeyInsideAnEntryIsRefused) {
  const std::string header =
      R"({"w":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  const std::string path = WriteBytes("dup.safetensors", SpecFile(header, kEight));
  ExpectError(SafetensorsReader::Open(path).status(), kInvalid, {"'dtype'", "more than once"});
}

TEST_F(SafetensorsTest, MissingFileIsNotFound) {
  const std::string path = Path("absent.safetensors");
  ExpectError(SafetensorsReader::Open(path).status(), absl::StatusCode::kNotFound, {path});
}

TEST_F(SafetensorsTest, FileShorterThanLengthPrefixIsDataLoss) {
  const std::string path = WriteBytes("short.safetensors", std::string("\x02\0\0\0\0", 5));
  ExpectError(SafetensorsReader::Open(path).status(), absl::StatusCode::kDataLoss, {path});
  const std::string empty = WriteBytes("empty.safetensors", "");
  ExpectError(SafetensorsReader::Open(empty).status(), absl::StatusCode::kDataLoss, {empty});
}

TEST_F(SafetensorsTest, HeaderLengthPastEndOfFileIsDataLoss) {
  const std::string path = WriteBytes("trunc.safetensors", Le(100, 8) + "{}        ");
  ExpectError(SafetensorsReader::Open(path).status(), absl::StatusCode::kDataLoss, {path, "100"});
  // A valid file cut short inside its data section.
  const std::string full = SpecFile(kHandBuiltHeader, HandBuiltData());
  const std::string cut = WriteBytes("cut.safetensors", full.substr(0, full.size() - 3));
  ExpectError(SafetensorsReader::Open(cut).status(), absl::StatusCode::kDataLoss,
              {cut, "past the end"});
}

TEST_F(SafetensorsTest, HeaderLengthAboveLimitIsRejected) {
  const std::string path =
      WriteBytes("huge.safetensors", Le(kMaxSafetensorsHeaderBytes + 1, 8) + "{}      ");
  ExpectError(SafetensorsReader::Open(path).status(), kInvalid, {path, "limit"});
  const std::string max =
      WriteBytes("max.safetensors", Le(std::numeric_limits<uint64_t>::max(), 8));
  ExpectError(SafetensorsReader::Open(max).status(), kInvalid, {max});
}

TEST_F(SafetensorsTest, InvalidBoolByteIsDataLossOnGet) {
  const std::string path = WriteBytes(
      "bool.safetensors",
      SpecFile(R"({"m":{"dtype":"BOOL","shape":[2],"data_offsets":[0,2]}})", Le(0x0201, 2)));
  auto reader = SafetensorsReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  ExpectError((*reader)->Get("m").status(), absl::StatusCode::kDataLoss, {path, "'m'"});
}

TEST_F(SafetensorsTest, UnknownTensorNameIsNotFound) {
  const std::string path =
      WriteBytes("hand.safetensors", SpecFile(kHandBuiltHeader, HandBuiltData()));
  auto reader = SafetensorsReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_FALSE((*reader)->Contains("nope"));
  ExpectError((*reader)->Get("nope").status(), absl::StatusCode::kNotFound, {"nope", path});
  ExpectError((*reader)->Get("nope", at::kFloat).status(), absl::StatusCode::kNotFound,
              {"nope", path});
  ExpectError((*reader)->Info("nope").status(), absl::StatusCode::kNotFound, {"nope", path});
}

// ------------------------------------------------------------------------------------------
// Writer errors and temporary files.

TEST_F(SafetensorsTest, WriterRejectsBadNamesAndTypes) {
  const std::string path = Path("w.safetensors");
  auto writer = SafetensorsWriter::Create(path);
  ASSERT_TRUE(writer.ok()) << writer.status();
  ASSERT_TRUE((*writer)->Add("w", at::ones({2})).ok());
  ExpectError((*writer)->Add("w", at::ones({2})), kInvalid, {"'w'", path, "more than once"});
  ExpectError((*writer)->Add("", at::ones({2})), kInvalid, {path});
  ExpectError((*writer)->Add("__metadata__", at::ones({2})), kInvalid, {"__metadata__"});
  ExpectError((*writer)->Add("c", at::ones({2}, at::kComplexFloat)), kInvalid, {"'c'", path});
  ExpectError((*writer)->Add("u", at::Tensor()), kInvalid, {"'u'"});
  ExpectError((*writer)->Add("bad\xff", at::ones({2})), kInvalid, {path, "UTF-8"});
  // Rejected tensors leave the file consistent: only "w" is written.
  ASSERT_TRUE((*writer)->Finish().ok());
  auto reader = SafetensorsReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->names(), std::vector<std::string>{"w"});
}

TEST_F(SafetensorsTest, MetadataThatIsNotUtf8FailsFinishCleanly) {
  const std::string path = Path("meta.safetensors");
  auto writer = SafetensorsWriter::Create(path);
  ASSERT_TRUE(writer.ok()) << writer.status();
  ASSERT_TRUE((*writer)->Add("w", at::ones({2})).ok());
  (*writer)->SetMetadata("note", "\xc3(");
  ExpectError((*writer)->Finish(), kInvalid, {path, "header"});
  EXPECT_TRUE(DirEntries().empty());
}

TEST_F(SafetensorsTest, WriterIsUnusableAfterFinish) {
  auto writer = SafetensorsWriter::Create(Path("f.safetensors"));
  ASSERT_TRUE(writer.ok()) << writer.status();
  ASSERT_TRUE((*writer)->Finish().ok());
  ExpectError((*writer)->Add("late", at::ones({1})), absl::StatusCode::kFailedPrecondition,
              {"late"});
  ExpectError((*writer)->Finish(), absl::StatusCode::kFailedPrecondition, {"f.safetensors"});
  // A file with no tensors is still a valid file.
  auto reader = SafetensorsReader::Open(Path("f.safetensors"));
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_TRUE((*reader)->names().empty());
}

TEST_F(SafetensorsTest, WriterDestructorLeavesNoTemporaryFiles) {
  {
    auto writer = SafetensorsWriter::Create(Path("never.safetensors"));
    ASSERT_TRUE(writer.ok()) << writer.status();
    ASSERT_TRUE((*writer)->Add("w", at::ones({1000})).ok());
    const std::vector<std::string> during = DirEntries();
    ASSERT_EQ(during.size(), 1u);
    EXPECT_THAT(during[0], HasSubstr("never.safetensors.data.tmp."));
  }
  EXPECT_TRUE(DirEntries().empty());
}

TEST_F(SafetensorsTest, FailedFinishLeavesNoTemporaryFiles) {
  // The destination is an existing directory, so the final rename fails.
  const std::string path = Path("taken");
  std::filesystem::create_directory(path);
  auto writer = SafetensorsWriter::Create(path);
  ASSERT_TRUE(writer.ok()) << writer.status();
  ASSERT_TRUE((*writer)->Add("w", at::ones({4})).ok());
  ExpectError((*writer)->Finish(), absl::StatusCode::kFailedPrecondition, {path});
  EXPECT_EQ(DirEntries(), std::vector<std::string>{"taken"});
}

// Makes writes past `limit_bytes` fail (EFBIG) for this process, like a full disk, while in
// scope. SIGXFSZ is ignored so the failing write returns an error instead of killing the test.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t limit_bytes) {
    getrlimit(RLIMIT_FSIZE, &saved_);
    previous_handler_ = std::signal(SIGXFSZ, SIG_IGN);
    rlimit limited = saved_;
    limited.rlim_cur = limit_bytes;
    setrlimit(RLIMIT_FSIZE, &limited);
  }
  ~FileSizeLimit() {
    setrlimit(RLIMIT_FSIZE, &saved_);
    std::signal(SIGXFSZ, previous_handler_);
  }

 private:
  rlimit saved_{};
  void (*previous_handler_)(int) = nullptr;
};

TEST_F(SafetensorsTest, WriteFailureInAddIsReportedAndPoisonsTheWriter) {
  const std::string path = Path("full.safetensors");
  auto writer = SafetensorsWriter::Create(path);
  ASSERT_TRUE(writer.ok()) << writer.status();
  absl::Status added;
  {
    FileSizeLimit limit(64 << 10);
    added = (*writer)->Add("big", at::ones({1 << 18}));  // 1 MiB
  }
  ASSERT_FALSE(added.ok());
  EXPECT_THAT(std::string(added.message()), HasSubstr("'big'"));
  EXPECT_THAT(std::string(added.message()), HasSubstr(path));
  ExpectError((*writer)->Add("small", at::ones({1})), absl::StatusCode::kFailedPrecondition,
              {"'small'"});
  ExpectError((*writer)->Finish(), absl::StatusCode::kFailedPrecondition, {path});
  EXPECT_TRUE(DirEntries().empty());
}

TEST_F(SafetensorsTest, WriteFailureInFinishLeavesNoFile) {
  const std::string path = Path("full.safetensors");
  auto writer = SafetensorsWriter::Create(path);
  ASSERT_TRUE(writer.ok()) << writer.status();
  ASSERT_TRUE((*writer)->Add("big", at::ones({1 << 18})).ok());  // 1 MiB
  absl::Status finished;
  {
    FileSizeLimit limit(512 << 10);  // the output cannot grow past half of the data
    finished = (*writer)->Finish();
  }
  ASSERT_FALSE(finished.ok());
  EXPECT_THAT(std::string(finished.message()), HasSubstr(path));
  EXPECT_TRUE(DirEntries().empty());
}

TEST_F(SafetensorsTest, CreateInMissingDirectoryIsNotFound) {
  const std::string path = Path("no/such/dir/out.safetensors");
  ExpectError(SafetensorsWriter::Create(path).status(), absl::StatusCode::kNotFound, {path});
}

}  // namespace
}  // namespace twin
