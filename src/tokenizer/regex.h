// A compiled PCRE2 pattern (UTF + UCP, JIT when available) used by the pre-tokenizers and
// normalizers. Patterns are Oniguruma/Python-style as found in tokenizer.json.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mlxcel {

class Regex {
 public:
  // Throws Error(invalid_request) with PCRE2's message when the pattern does not compile.
  explicit Regex(const std::string& pattern);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // All non-overlapping matches as [begin, end) byte ranges, left to right (empty matches
  // included; the scan then advances one character).
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view text) const;
  const std::string& pattern() const { return pattern_; }

 private:
  std::string pattern_;
  void* code_ = nullptr;  // pcre2_code_8*
};

// Escapes a literal string for use inside a PCRE2 pattern.
std::string regex_escape(std::string_view literal);

}  // namespace mlxcel
