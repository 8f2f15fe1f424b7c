// Syntax tree of a parsed Jinja2 template.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "chat/value.h"

namespace mlxcel::jinja {

struct Expr;
struct Node;
using ExprPtr = std::unique_ptr<Expr>;
using NodePtr = std::unique_ptr<Node>;
using NodeList = std::vector<NodePtr>;

struct Expr {
  enum class Kind {
    literal,    // value
    name,       // name
    list,       // args
    tuple,      // args
    dict,       // args = k0, v0, k1, v1, ...
    getattr,    // args[0].name
    getitem,    // args[0][args[1]]
    slice,      // args = start, stop, step (null when absent)
    call,       // args[0](args[1..], kwargs)
    filter,     // name; args[0] = subject (null in filter blocks), args[1..] = arguments
    test,       // name; args[0] = subject, args[1..]; negated
    unary,      // name in {"-", "+", "not"}; args[0]
    binary,     // name = operator; args[0], args[1]
    logic,      // name in {"and", "or"}
    compare,    // args[0] then ops[i] applied to args[i+1]
    concat,     // args joined with ~
    cond,       // args = then, cond, else (else may be null)
    nsref,      // assignment target name.attr (name in `name`, attr in `attr`)
  };
  Kind kind;
  int line = 0;
  int col = 0;
  Value value;
  std::string name;
  std::string attr;
  bool negated = false;
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  ExprPtr dyn_args;    // *args
  ExprPtr dyn_kwargs;  // **kwargs
  std::vector<std::string> ops;
};

struct MacroParam {
  std::string name;
  ExprPtr default_value;  // null: required
};

struct Node {
  enum class Kind {
    text,       // text
    output,     // expr
    if_,        // branches: conds[i] -> bodies[i]; else_body
    for_,       // target, expr (iterable), cond (filter), body, else_body, recursive
    set,        // target, expr
    set_block,  // target, body, filter (optional expr with null subject)
    macro,      // name, params, body
    call_block, // expr (call), params, body
    filter_block,  // expr (filter chain with null innermost subject), body
    break_,
    continue_,
    scope,      // body rendered in place (generation blocks)
  };
  Kind kind;
  int line = 0;
  int col = 0;
  std::string text;
  ExprPtr target;
  ExprPtr expr;
  ExprPtr cond;
  std::vector<ExprPtr> conds;
  std::vector<NodeList> bodies;
  NodeList body;
  NodeList else_body;
  bool recursive = false;
  std::vector<MacroParam> params;
  bool uses_caller = false;
};

}  // namespace mlxcel::jinja
