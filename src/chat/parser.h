// Jinja2 parser: tokens -> syntax tree, following jinja2/parser.py's grammar.
#pragma once

#include <string>

#include "chat/ast.h"

namespace mlxcel::jinja {

// Parses a whole template; throws mlxcel::Error(invalid_request) naming line and column.
NodeList parse_template(const std::string& source);

}  // namespace mlxcel::jinja
