#include "bench/zoo/causal_tasks.h"

#include <algorithm>
#include <cstring>
#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace twin::zoo {
namespace {

// The ids around the text of an example: bos before the prompt, eos after the target.
constexpr size_t kFrameIds = 2;
// The least text before a cut (manual, brackets), so that the model has something to read.
constexpr size_t kMinContextBytes = 12;
constexpr size_t kMaxWordBytes = 16;    // manual: longer next words are not chosen
constexpr size_t kMaxOpenBrackets = 4;  // brackets: deeper cuts are not chosen
constexpr size_t kMaxUpperBytes = 32;   // upper: the fragment's longest

constexpr char kSpamQuestion[] = " | spam or ham? ";
constexpr char kLangQuestion[] = " | language? ";
constexpr char kCloseQuestion[] = " | close: ";
constexpr char kUpperQuestion[] = " | upper: ";

const std::map<std::string, std::string>& Corpora() {
  static const auto* corpora = new std::map<std::string, std::string>{{"spam", "spam"},
                                                                      {"lang", "lang"},
                                                                      {"manual", "manual"},
                                                                      {"brackets", "code"},
                                                                      {"upper", "topic"}};
  return *corpora;
}

// FNV-1a: a hash that is the same on every platform, unlike std::hash.
uint64_t StableHash(const std::string& s) {
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ULL;
  return h;
}

bool IsContinuationByte(char c) { return (static_cast<unsigned char>(c) & 0xC0) == 0x80; }

// "<text> <question>" -> the label's name.
std::vector<CausalPair> LabelPairs(const TextSplit& split, const std::vector<std::string>& labels,
                                   const char* question, size_t budget) {
  size_t longest = 0;
  for (const std::string& l : labels) longest = std::max(longest, l.size());
  std::vector<CausalPair> pairs;
  if (std::strlen(question) + longest >= budget) return pairs;
  const size_t text_bytes = budget - std::strlen(question) - longest;
  for (size_t i = 0; i < split.texts.size(); ++i) {
    const std::string text = CutUtf8(OneLine(split.texts[i]), text_bytes);
    if (text.empty()) continue;
    pairs.push_back({absl::StrCat(text, question), labels[split.labels[i]]});
  }
  return pairs;
}

// "<paragraph up to a space> " -> the next word.
std::vector<CausalPair> NextWordPairs(const TextSplit& split, size_t budget) {
  std::vector<CausalPair> pairs;
  for (const std::string& raw : split.texts) {
    const std::string text = OneLine(raw);
    std::vector<std::pair<size_t, size_t>> cuts;  // (prompt bytes, word bytes)
    for (size_t i = kMinContextBytes; i < text.size(); ++i) {
      if (text[i] != ' ') continue;
      const size_t end = std::min(text.find(' ', i + 1), text.size());
      const size_t word = end - (i + 1);
      if (i + 1 + word > budget) break;
      if (word > 0 && word <= kMaxWordBytes) cuts.emplace_back(i + 1, word);
    }
    if (cuts.empty()) continue;
    const auto [prompt, word] = cuts[StableHash(text) % cuts.size()];
    pairs.push_back({text.substr(0, prompt), text.substr(prompt, word)});
  }
  return pairs;
}

// The closing bracket of an opening one, or 0.
char Closer(char c) {
  switch (c) {
    case '(':
      return ')';
    case '[':
      return ']';
    case '{':
      return '}';
    default:
      return 0;
  }
}

// "<code up to a point where brackets are open> | close: " -> their closers, innermost first.
std::vector<CausalPair> BracketPairs(const TextSplit& split, size_t budget) {
  const size_t question = std::strlen(kCloseQuestion);
  std::vector<CausalPair> pairs;
  for (const std::string& raw : split.texts) {
    const std::string text = OneLine(raw);
    std::string open;  // the closers of the brackets open so far, outermost first
    std::vector<std::pair<size_t, std::string>> cuts;
    for (size_t i = 0; i < text.size() && i + question + open.size() <= budget; ++i) {
      if (i >= kMinContextBytes && !open.empty() && open.size() <= kMaxOpenBrackets &&
          !IsContinuationByte(text[i])) {
        cuts.emplace_back(i, std::string(open.rbegin(), open.rend()));
      }
      const char c = text[i];
      if (Closer(c) != 0) {
        open += Closer(c);
      } else if (c == ')' || c == ']' || c == '}') {
        if (open.empty() || open.back() != c) break;  // closes what this window did not open
        open.pop_back();
      }
    }
    // A cut that would not fit with its own closers is dropped.
    cuts.erase(std::remove_if(cuts.begin(), cuts.end(),
                              [&](const auto& cut) {
                                return cut.first + question + cut.second.size() > budget;
                              }),
               cuts.end());
    if (cuts.empty()) continue;
    const auto& [cut, closers] = cuts[StableHash(text) % cuts.size()];
    pairs.push_back({absl::StrCat(text.substr(0, cut), kCloseQuestion), closers});
  }
  return pairs;
}

// "<first words> | upper: " -> the words in capitals.
std::vector<CausalPair> UpperPairs(const TextSplit& split, size_t budget) {
  const size_t fragment_bytes =
      std::min(kMaxUpperBytes, (budget - std::strlen(kUpperQuestion)) / 2);
  std::vector<CausalPair> pairs;
  for (const std::string& raw : split.texts) {
    const std::string text = OneLine(raw);
    std::string fragment = CutUtf8(text, fragment_bytes);
    const size_t space = fragment.rfind(' ');
    // Whole words where the cut falls inside one (and the fragment is not a single word).
    if (fragment.size() < text.size() && text[fragment.size()] != ' ' &&
        space != std::string::npos) {
      fragment.resize(space);
    }
    if (fragment.empty()) continue;
    pairs.push_back({absl::StrCat(fragment, kUpperQuestion), absl::AsciiStrToUpper(fragment)});
  }
  return pairs;
}

}  // namespace

absl::StatusOr<std::string> CausalTaskCorpus(const std::string& task) {
  auto it = Corpora().find(task);
  if (it == Corpora().end()) {
    std::string known;
    for (const auto& [name, corpus] : Corpora())
      absl::StrAppend(&known, known.empty() ? "" : ", ", name);
    return absl::InvalidArgumentError(
        absl::StrCat("unknown generative task '", task, "' (expected one of ", known, ")"));
  }
  return it->second;
}

absl::StatusOr<std::vector<CausalPair>> MakeCausalPairs(const std::string& task,
                                                        const TextSplit& split,
                                                        const std::vector<std::string>& labels,
                                                        int64_t max_len) {
  if (auto corpus = CausalTaskCorpus(task); !corpus.ok()) return corpus.status();
  // Room for a question, a label or a few closers, and some text.
  constexpr int64_t kLeastLen = 40;
  if (max_len < kLeastLen) {
    return absl::InvalidArgumentError(
        absl::StrCat("generative task ", task, ": max_len ", max_len, " is below ", kLeastLen));
  }
  const size_t budget = static_cast<size_t>(max_len) - kFrameIds;  // prompt and target bytes
  if (task == "spam") return LabelPairs(split, labels, kSpamQuestion, budget);
  if (task == "lang") return LabelPairs(split, labels, kLangQuestion, budget);
  if (task == "manual") return NextWordPairs(split, budget);
  if (task == "brackets") return BracketPairs(split, budget);
  return UpperPairs(split, budget);
}

std::string OneLine(const std::string& text) {
  std::string out;
  bool space = false;
  for (char c : text) {
    if (absl::ascii_isspace(static_cast<unsigned char>(c))) {
      space = !out.empty();
      continue;
    }
    if (space) out += ' ';
    space = false;
    out += c;
  }
  return out;
}

std::string CutUtf8(const std::string& text, size_t max_bytes) {
  if (text.size() <= max_bytes) return text;
  size_t n = max_bytes;
  while (n > 0 && IsContinuationByte(text[n])) --n;
  return text.substr(0, n);
}

}  // namespace twin::zoo
