// libFuzzer target for the SentencePiece precompiled_charsmap decoder (see docs/fuzzing.md):
// the input is a raw charsmap blob, or (first byte 'B') base64 text of one. Any input either
// parses or throws mlxcel::Error; a parsed map normalizes sample texts and the input itself
// into valid UTF-8, with pieces that cover the text left to right.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "base/error.h"
#include "tokenizer/precompiled.h"
#include "tokenizer/unicode.h"

using namespace mlxcel;

namespace {
void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "property violated: %s\n", what);
    std::abort();
  }
}

void exercise(const PrecompiledCharsmap& m, const std::string& text) {
  size_t next = 0;
  std::string out;
  m.normalize(text, [&](std::string_view piece, size_t b, size_t e) {
    check(b == next && e > b && e <= text.size(), "pieces cover the input in order");
    next = e;
    out.append(piece);
  });
  check(next == text.size(), "pieces reach the end");
  check(unicode::is_valid_utf8(out), "output is valid UTF-8");
  check(out == m.normalize(text), "both normalize overloads agree");
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string in(reinterpret_cast<const char*>(data), size);
  std::string blob = in;
  if (!in.empty() && in[0] == 'B') {
    try {
      blob = base64_decode(std::string_view(in).substr(1));
    } catch (const Error&) {
      return 0;
    }
  }
  PrecompiledCharsmap m;
  try {
    m = PrecompiledCharsmap::parse(blob);
  } catch (const Error&) {
    return 0;
  }
  for (const char* s : {"Hello, world!", "a\xE2\x84\xA2" "b", "x\xCC\x81\xCC\x81\xCC\x81 y\xCC\x88",
                        "\xEF\xBC\xA1\xE3\x80\x80\xE2\x80\x8B", "\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x92\xBB"}) {
    exercise(m, s);
  }
  exercise(m, unicode::sanitize_utf8(in));
  return 0;
}
