// Id-for-id parity of HfTokenizer with Hugging Face's Tokenizers.js on real vocabularies.
// tests/text/run_parity.sh generates the fixtures (tests/text/make_fixtures.mjs) and runs this
// with TWIN_HF_PARITY_DIR set; each tokenizer is loaded from its tokenizer.json directory and
// from its vocab.txt / vocab.json + merges.txt directory, and must give the reference ids for
// every text.
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/text/hf_tokenizer.h"

namespace twin {
namespace {

struct Reference {
  std::string dir;
  std::vector<std::string> texts;
  nlohmann::json tokenizers;
};

const Reference& GetReference() {
  static const Reference* ref = [] {
    auto* r = new Reference;
    const char* dir = std::getenv("TWIN_HF_PARITY_DIR");
    if (dir == nullptr) return r;
    r->dir = dir;
    std::ifstream in(r->dir + "/reference.json");
    if (!in) return r;
    nlohmann::json root = nlohmann::json::parse(in);
    r->texts = root["texts"].get<std::vector<std::string>>();
    r->tokenizers = std::move(root["tokenizers"]);
    return r;
  }();
  return *ref;
}

std::string Ids(const std::vector<int64_t>& ids) {
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < ids.size(); ++i) out << (i ? ", " : "") << ids[i];
  out << "]";
  return out.str();
}

struct Case {
  std::string name;  // the tokenizer's name in reference.json
  bool legacy;       // the vocab.txt / vocab.json + merges.txt directory
};

class ParityTest : public ::testing::TestWithParam<Case> {};

TEST_P(ParityTest, SameIdsAsTokenizersJs) {
  const Reference& ref = GetReference();
  ASSERT_FALSE(ref.dir.empty())
      << "TWIN_HF_PARITY_DIR is not set: run this through tests/text/run_parity.sh";
  ASSERT_FALSE(ref.texts.empty()) << ref.dir << "/reference.json is missing or has no texts";
  const Case& c = GetParam();
  ASSERT_TRUE(ref.tokenizers.contains(c.name)) << c.name << " is not in reference.json";
  const std::string dir = ref.dir + "/" + c.name + (c.legacy ? "-legacy" : "");
  auto tok = HfTokenizer::Load(dir);
  ASSERT_TRUE(tok.ok()) << tok.status();

  const nlohmann::json& expected_all = ref.tokenizers[c.name];
  ASSERT_EQ(expected_all.size(), ref.texts.size());
  size_t mismatches = 0;
  size_t ids_compared = 0;
  for (size_t i = 0; i < ref.texts.size(); ++i) {
    const auto expected = expected_all[i].get<std::vector<int64_t>>();
    auto got = (*tok)->Encode(ref.texts[i]);
    ASSERT_TRUE(got.ok()) << "text " << i << ": " << got.status();
    ids_compared += expected.size();
    if (got->ids == expected) continue;
    if (mismatches++ == 0) {
      ADD_FAILURE() << dir << ": first mismatch at text " << i << " "
                    << nlohmann::json(ref.texts[i]).dump() << "\n  Tokenizers.js: "
                    << Ids(expected) << "\n  HfTokenizer:   " << Ids(got->ids);
    }
  }
  EXPECT_EQ(mismatches, 0u) << "texts whose ids differ";
  std::cout << "[ parity ] " << c.name << (c.legacy ? " (legacy files)" : " (tokenizer.json)")
            << ": " << ref.texts.size() - mismatches << " of " << ref.texts.size()
            << " texts identical, " << ids_compared << " ids" << std::endl;
}

std::vector<Case> AllCases() {
  std::vector<Case> cases;
  for (const char* name : {"bert_uncased", "bert_cased", "bert_uncased_keep_accents", "roberta",
                           "roberta_prefix_space", "gpt2"}) {
    cases.push_back({name, false});
    cases.push_back({name, true});
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Tokenizers, ParityTest, ::testing::ValuesIn(AllCases()),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return info.param.name + (info.param.legacy ? "_legacy" : "_json");
                         });

}  // namespace
}  // namespace twin
