// Jinja2 lexer with the environment transformers uses: trim_blocks=True,
// lstrip_blocks=True, keep_trailing_newline=False, default delimiters.
#pragma once

#include <string>
#include <vector>

namespace mlxcel::jinja {

enum class Tok {
  data,            // template text
  variable_begin,  // {{
  variable_end,    // }}
  block_begin,     // {%
  block_end,       // %}
  name,
  string,          // value already unescaped
  integer,
  floating,
  op,              // operator or punctuation
  eof,
};

struct Token {
  Tok type;
  std::string value;
  int line = 1;
  int col = 1;
};

// Splits `source` into tokens; throws TemplateSyntaxError-like mlxcel::Error with line:col.
std::vector<Token> tokenize(const std::string& source);

// Error text with position, as used by lexer, parser and renderer.
std::string position_message(int line, int col, const std::string& msg);

}  // namespace mlxcel::jinja
