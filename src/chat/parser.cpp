#include "chat/parser.h"

#include <charconv>
#include <initializer_list>

#include "chat/lexer.h"

namespace mlxcel::jinja {

namespace {

constexpr int kMaxNesting = 200;

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : toks_(std::move(tokens)) {}

  NodeList parse() {
    NodeList body = subparse({});
    if (cur().type != Tok::eof) fail_here("unexpected end tag");
    return body;
  }

 private:
  // ---- token helpers ----
  const Token& cur() const { return toks_[pos_]; }
  const Token& look() const { return toks_[pos_ + 1 < toks_.size() ? pos_ + 1 : pos_]; }
  Token next() {
    Token t = toks_[pos_];
    if (pos_ + 1 < toks_.size()) ++pos_;
    return t;
  }
  bool is_op(const char* op) const { return cur().type == Tok::op && cur().value == op; }
  bool is_name(const char* n) const { return cur().type == Tok::name && cur().value == n; }
  bool skip_op(const char* op) {
    if (!is_op(op)) return false;
    next();
    return true;
  }
  bool skip_name(const char* n) {
    if (!is_name(n)) return false;
    next();
    return true;
  }
  static std::string describe(const Token& t) {
    switch (t.type) {
      case Tok::eof: return "end of template";
      case Tok::block_end: return "end of statement block";
      case Tok::variable_end: return "end of print statement";
      case Tok::block_begin: return "begin of statement block";
      case Tok::variable_begin: return "begin of print statement";
      case Tok::data: return "template data";
      case Tok::string: return "string";
      default: return t.value;
    }
  }
  [[noreturn]] void fail_at(const Token& t, const std::string& msg) const {
    throw Error(ErrorKind::invalid_request, position_message(t.line, t.col, msg));
  }
  [[noreturn]] void fail_here(const std::string& msg) const { fail_at(cur(), msg); }
  void expect_op(const char* op) {
    if (!skip_op(op)) fail_here(fmt::format("expected token '{}', got '{}'", op, describe(cur())));
  }
  void expect_name(const char* n) {
    if (!skip_name(n)) fail_here(fmt::format("expected token '{}', got '{}'", n, describe(cur())));
  }
  Token expect_identifier() {
    if (cur().type != Tok::name) fail_here(fmt::format("expected token 'name', got '{}'", describe(cur())));
    return next();
  }
  void expect_block_end() {
    if (cur().type != Tok::block_end) fail_here(fmt::format("expected token 'end of statement block', got '{}'", describe(cur())));
    next();
  }
  void enter() {
    if (++depth_ > kMaxNesting) fail_here("template nested too deeply");
  }

  ExprPtr make(Expr::Kind k, const Token& at) {
    auto e = std::make_unique<Expr>();
    e->kind = k;
    e->line = at.line;
    e->col = at.col;
    return e;
  }
  NodePtr make_node(Node::Kind k, const Token& at) {
    auto n = std::make_unique<Node>();
    n->kind = k;
    n->line = at.line;
    n->col = at.col;
    return n;
  }

  // ---- statements ----

  // Parses until a block whose first name is in `end_tokens` (left unconsumed, at the name).
  NodeList subparse(std::initializer_list<const char*> end_tokens) {
    NodeList body;
    while (true) {
      const Token& t = cur();
      if (t.type == Tok::eof) {
        if (end_tokens.size() != 0) {
          fail_at(t, fmt::format("Unexpected end of template. Jinja was looking for the following tags: '{}'.",
                                 *end_tokens.begin()));
        }
        return body;
      }
      if (t.type == Tok::data) {
        auto n = make_node(Node::Kind::text, t);
        n->text = t.value;
        next();
        body.push_back(std::move(n));
      } else if (t.type == Tok::variable_begin) {
        Token at = next();
        auto n = make_node(Node::Kind::output, at);
        n->expr = parse_tuple(false, true, {}, false);
        if (cur().type != Tok::variable_end) fail_here(fmt::format("expected token 'end of print statement', got '{}'", describe(cur())));
        next();
        body.push_back(std::move(n));
      } else if (t.type == Tok::block_begin) {
        next();
        for (const char* e : end_tokens) {
          if (is_name(e)) return body;
        }
        body.push_back(parse_statement());
      } else {
        fail_here("unexpected token");
      }
    }
  }

  // Parses statements until one of `end_tokens`; consumes the end name and, when `drop`,
  // the block end too.
  NodeList parse_statements(std::initializer_list<const char*> end_tokens, bool drop) {
    expect_block_end();
    NodeList body = subparse(end_tokens);
    if (cur().type == Tok::eof) fail_here("unexpected end of template");
    if (drop) {
      next();
      expect_block_end();
    }
    return body;
  }

  NodePtr parse_statement() {
    const Token t = cur();
    if (t.type != Tok::name) fail_here("tag name expected");
    enter();
    NodePtr n;
    const std::string& w = t.value;
    if (w == "if") n = parse_if();
    else if (w == "for") n = parse_for();
    else if (w == "set") n = parse_set();
    else if (w == "macro") n = parse_macro();
    else if (w == "call") n = parse_call_block();
    else if (w == "filter") n = parse_filter_block();
    else if (w == "break" || w == "continue") {
      if (loop_depth_ == 0) fail_here(fmt::format("'{}' is only allowed inside a loop", w));
      next();
      n = make_node(w == "break" ? Node::Kind::break_ : Node::Kind::continue_, t);
      expect_block_end();
    } else if (w == "generation") {
      next();
      n = make_node(Node::Kind::scope, t);
      n->body = parse_statements({"endgeneration"}, true);
    } else if (w == "print") {
      next();
      n = make_node(Node::Kind::output, t);
      n->expr = parse_tuple(false, true, {}, false);
      expect_block_end();
    } else if (w == "with") {
      n = parse_with();
    } else {
      fail_here(fmt::format("Encountered unknown tag '{}'.", w));
    }
    --depth_;
    return n;
  }

  NodePtr parse_if() {
    Token at = next();
    auto n = make_node(Node::Kind::if_, at);
    while (true) {
      n->conds.push_back(parse_tuple(false, false, {}, false));
      n->bodies.push_back(parse_statements({"elif", "else", "endif"}, false));
      Token tok = next();
      if (tok.value == "elif") continue;
      if (tok.value == "else") n->else_body = parse_statements({"endif"}, true);
      else expect_block_end();
      break;
    }
    return n;
  }

  NodePtr parse_for() {
    Token at = next();
    auto n = make_node(Node::Kind::for_, at);
    n->target = parse_assign_target(true, {"in"});
    expect_name("in");
    n->expr = parse_tuple(false, false, {"recursive"}, false);
    if (skip_name("if")) n->cond = parse_expression(true);
    n->recursive = skip_name("recursive");
    ++loop_depth_;
    n->body = parse_statements({"endfor", "else"}, false);
    --loop_depth_;
    Token tok = next();
    if (tok.value == "endfor") {
      expect_block_end();
    } else {
      n->else_body = parse_statements({"endfor"}, true);
    }
    return n;
  }

  NodePtr parse_set() {
    Token at = next();
    ExprPtr target;
    if (cur().type == Tok::name && look().type == Tok::op && look().value == ".") {
      Token name = next();
      next();
      Token attr = expect_identifier();
      target = make(Expr::Kind::nsref, name);
      target->name = name.value;
      target->attr = attr.value;
    } else {
      target = parse_assign_target(true, {});
    }
    if (skip_op("=")) {
      auto n = make_node(Node::Kind::set, at);
      n->target = std::move(target);
      n->expr = parse_tuple(false, true, {}, false);
      expect_block_end();
      return n;
    }
    auto n = make_node(Node::Kind::set_block, at);
    n->target = std::move(target);
    if (is_op("|")) n->expr = parse_filter(nullptr, false);
    int saved = loop_depth_;
    loop_depth_ = 0;
    n->body = parse_statements({"endset"}, true);
    loop_depth_ = saved;
    return n;
  }

  void parse_signature(std::vector<MacroParam>& params) {
    expect_op("(");
    bool has_default = false;
    while (!is_op(")")) {
      if (!params.empty()) expect_op(",");
      Token name = expect_identifier();
      MacroParam p;
      p.name = name.value;
      if (skip_op("=")) {
        p.default_value = parse_expression(true);
        has_default = true;
      } else if (has_default) {
        fail_at(name, "non-default argument follows default argument");
      }
      params.push_back(std::move(p));
    }
    expect_op(")");
  }

  NodePtr parse_macro() {
    Token at = next();
    auto n = make_node(Node::Kind::macro, at);
    n->text = expect_identifier().value;
    parse_signature(n->params);
    int saved = loop_depth_;
    loop_depth_ = 0;
    n->body = parse_statements({"endmacro"}, true);
    loop_depth_ = saved;
    return n;
  }

  NodePtr parse_call_block() {
    Token at = next();
    auto n = make_node(Node::Kind::call_block, at);
    if (is_op("(")) parse_signature(n->params);
    n->expr = parse_expression(true);
    if (n->expr->kind != Expr::Kind::call) fail_at(at, "expected call");
    int saved = loop_depth_;
    loop_depth_ = 0;
    n->body = parse_statements({"endcall"}, true);
    loop_depth_ = saved;
    return n;
  }

  NodePtr parse_filter_block() {
    Token at = next();
    auto n = make_node(Node::Kind::filter_block, at);
    n->expr = parse_filter(nullptr, true);
    n->body = parse_statements({"endfilter"}, true);
    return n;
  }

  // {% with a = 1, b = 2 %}...{% endwith %}: a scope with assignments.
  NodePtr parse_with() {
    Token at = next();
    auto n = make_node(Node::Kind::for_, at);  // placeholder, rewritten below
    n->kind = Node::Kind::scope;
    NodeList sets;
    while (cur().type != Tok::block_end) {
      if (!sets.empty()) expect_op(",");
      auto s = make_node(Node::Kind::set, cur());
      s->target = parse_assign_target(true, {});
      expect_op("=");
      s->expr = parse_expression(true);
      sets.push_back(std::move(s));
    }
    NodeList body = parse_statements({"endwith"}, true);
    n->body = std::move(sets);
    for (auto& b : body) n->body.push_back(std::move(b));
    n->recursive = true;  // marks "new scope" for with blocks
    return n;
  }

  ExprPtr parse_assign_target(bool with_tuple, std::initializer_list<const char*> extra_end) {
    ExprPtr target;
    if (with_tuple) {
      target = parse_tuple(true, true, extra_end, false);
    } else {
      target = parse_primary();
    }
    auto check = [&](const Expr& e) {
      if (e.kind != Expr::Kind::name) fail_at(cur(), "can't assign to this expression");
    };
    if (target->kind == Expr::Kind::tuple) {
      for (auto& a : target->args) check(*a);
    } else {
      check(*target);
    }
    return target;
  }

  // ---- expressions ----

  bool is_tuple_end(std::initializer_list<const char*> extra_end) const {
    const Token& t = cur();
    if (t.type == Tok::variable_end || t.type == Tok::block_end || t.type == Tok::eof) return true;
    if (t.type == Tok::op && t.value == ")") return true;
    for (const char* e : extra_end)
      if (t.type == Tok::name && t.value == e) return true;
    return false;
  }

  ExprPtr parse_tuple(bool simplified, bool with_condexpr, std::initializer_list<const char*> extra_end,
                      bool explicit_parens) {
    Token at = cur();
    std::vector<ExprPtr> args;
    bool is_tuple = false;
    while (true) {
      if (!args.empty()) expect_op(",");
      if (is_tuple_end(extra_end)) break;
      if (simplified) args.push_back(parse_primary());
      else args.push_back(parse_expression(with_condexpr));
      if (is_op(",")) is_tuple = true;
      else break;
    }
    if (!is_tuple) {
      if (!args.empty()) return std::move(args[0]);
      if (!explicit_parens) fail_here(fmt::format("Expected an expression, got '{}'", describe(cur())));
    }
    auto e = make(Expr::Kind::tuple, at);
    e->args = std::move(args);
    return e;
  }

  ExprPtr parse_expression(bool with_condexpr) {
    enter();
    ExprPtr e = with_condexpr ? parse_condexpr() : parse_or();
    --depth_;
    return e;
  }

  ExprPtr parse_condexpr() {
    Token at = cur();
    ExprPtr expr1 = parse_or();
    while (skip_name("if")) {
      ExprPtr expr2 = parse_or();
      ExprPtr expr3;
      if (skip_name("else")) expr3 = parse_condexpr();
      auto c = make(Expr::Kind::cond, at);
      c->args.push_back(std::move(expr1));
      c->args.push_back(std::move(expr2));
      c->args.push_back(std::move(expr3));
      expr1 = std::move(c);
    }
    return expr1;
  }

  ExprPtr logic(const char* op, ExprPtr l, ExprPtr r, const Token& at) {
    auto e = make(Expr::Kind::logic, at);
    e->name = op;
    e->args.push_back(std::move(l));
    e->args.push_back(std::move(r));
    return e;
  }

  ExprPtr parse_or() {
    ExprPtr l = parse_and();
    while (is_name("or")) {
      Token at = next();
      l = logic("or", std::move(l), parse_and(), at);
    }
    return l;
  }

  ExprPtr parse_and() {
    ExprPtr l = parse_not();
    while (is_name("and")) {
      Token at = next();
      l = logic("and", std::move(l), parse_not(), at);
    }
    return l;
  }

  ExprPtr parse_not() {
    if (is_name("not")) {
      Token at = next();
      enter();
      auto e = make(Expr::Kind::unary, at);
      e->name = "not";
      e->args.push_back(parse_not());
      --depth_;
      return e;
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
    Token at = cur();
    ExprPtr first = parse_math1();
    ExprPtr cmp;
    while (true) {
      std::string op;
      if (cur().type == Tok::op && (cur().value == "==" || cur().value == "!=" || cur().value == "<" ||
                                    cur().value == "<=" || cur().value == ">" || cur().value == ">=")) {
        op = next().value;
      } else if (skip_name("in")) {
        op = "in";
      } else if (is_name("not") && look().type == Tok::name && look().value == "in") {
        next();
        next();
        op = "notin";
      } else {
        break;
      }
      if (!cmp) {
        cmp = make(Expr::Kind::compare, at);
        cmp->args.push_back(std::move(first));
      }
      cmp->ops.push_back(op);
      cmp->args.push_back(parse_math1());
    }
    return cmp ? std::move(cmp) : std::move(first);
  }

  ExprPtr binary(const std::string& op, ExprPtr l, ExprPtr r, const Token& at) {
    auto e = make(Expr::Kind::binary, at);
    e->name = op;
    e->args.push_back(std::move(l));
    e->args.push_back(std::move(r));
    return e;
  }

  ExprPtr parse_math1() {
    ExprPtr l = parse_concat();
    while (is_op("+") || is_op("-")) {
      Token at = next();
      l = binary(at.value, std::move(l), parse_concat(), at);
    }
    return l;
  }

  ExprPtr parse_concat() {
    Token at = cur();
    ExprPtr first = parse_math2();
    if (!is_op("~")) return first;
    auto e = make(Expr::Kind::concat, at);
    e->args.push_back(std::move(first));
    while (skip_op("~")) e->args.push_back(parse_math2());
    return e;
  }

  ExprPtr parse_math2() {
    ExprPtr l = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      Token at = next();
      l = binary(at.value, std::move(l), parse_pow(), at);
    }
    return l;
  }

  ExprPtr parse_pow() {
    ExprPtr l = parse_unary(true);
    while (is_op("**")) {
      Token at = next();
      l = binary("**", std::move(l), parse_unary(true), at);
    }
    return l;
  }

  ExprPtr parse_unary(bool with_filter) {
    ExprPtr node;
    if (is_op("-") || is_op("+")) {
      Token at = next();
      enter();
      node = make(Expr::Kind::unary, at);
      node->name = at.value;
      node->args.push_back(parse_unary(false));
      --depth_;
    } else {
      node = parse_primary();
    }
    node = parse_postfix(std::move(node));
    if (with_filter) node = parse_filter_expr(std::move(node));
    return node;
  }

  ExprPtr parse_primary() {
    Token t = cur();
    switch (t.type) {
      case Tok::name: {
        next();
        auto e = make(Expr::Kind::literal, t);
        if (t.value == "true" || t.value == "True") e->value = Value(true);
        else if (t.value == "false" || t.value == "False") e->value = Value(false);
        else if (t.value == "none" || t.value == "None") e->value = Value::none();
        else {
          e->kind = Expr::Kind::name;
          e->name = t.value;
        }
        return e;
      }
      case Tok::string: {
        next();
        std::string s = t.value;
        while (cur().type == Tok::string) s += next().value;
        auto e = make(Expr::Kind::literal, t);
        e->value = Value(std::move(s));
        return e;
      }
      case Tok::integer: {
        next();
        auto e = make(Expr::Kind::literal, t);
        int64_t v = 0;
        auto r = std::from_chars(t.value.data(), t.value.data() + t.value.size(), v);
        if (r.ec != std::errc()) fail_at(t, "integer literal out of range");
        e->value = Value(v);
        return e;
      }
      case Tok::floating: {
        next();
        auto e = make(Expr::Kind::literal, t);
        e->value = Value(std::strtod(t.value.c_str(), nullptr));
        return e;
      }
      case Tok::op:
        if (t.value == "(") {
          next();
          enter();
          ExprPtr e = parse_tuple(false, true, {}, true);
          --depth_;
          expect_op(")");
          return e;
        }
        if (t.value == "[") {
          next();
          enter();
          auto e = make(Expr::Kind::list, t);
          while (!is_op("]")) {
            if (!e->args.empty()) expect_op(",");
            if (is_op("]")) break;
            e->args.push_back(parse_expression(true));
          }
          expect_op("]");
          --depth_;
          return e;
        }
        if (t.value == "{") {
          next();
          enter();
          auto e = make(Expr::Kind::dict, t);
          while (!is_op("}")) {
            if (!e->args.empty()) expect_op(",");
            if (is_op("}")) break;
            e->args.push_back(parse_expression(true));
            expect_op(":");
            e->args.push_back(parse_expression(true));
          }
          expect_op("}");
          --depth_;
          return e;
        }
        break;
      default: break;
    }
    fail_at(t, fmt::format("unexpected '{}'", describe(t)));
  }

  ExprPtr parse_postfix(ExprPtr node) {
    while (true) {
      if (is_op(".") || is_op("[")) node = parse_subscript(std::move(node));
      else if (is_op("(")) node = parse_call(std::move(node));
      else break;
    }
    return node;
  }

  ExprPtr parse_filter_expr(ExprPtr node) {
    while (true) {
      if (is_op("|")) node = parse_filter(std::move(node), false);
      else if (is_name("is")) node = parse_test(std::move(node));
      else if (is_op("(")) node = parse_call(std::move(node));
      else break;
    }
    return node;
  }

  ExprPtr parse_subscript(ExprPtr node) {
    Token t = next();
    if (t.value == ".") {
      Token a = next();
      if (a.type == Tok::name) {
        auto e = make(Expr::Kind::getattr, t);
        e->args.push_back(std::move(node));
        e->name = a.value;
        return e;
      }
      if (a.type != Tok::integer) fail_at(a, "expected name or number");
      auto idx = make(Expr::Kind::literal, a);
      idx->value = Value(static_cast<int64_t>(std::stoll(a.value)));
      auto e = make(Expr::Kind::getitem, t);
      e->args.push_back(std::move(node));
      e->args.push_back(std::move(idx));
      return e;
    }
    enter();
    std::vector<ExprPtr> args;
    while (!is_op("]")) {
      if (!args.empty()) expect_op(",");
      args.push_back(parse_subscribed());
    }
    expect_op("]");
    --depth_;
    auto e = make(Expr::Kind::getitem, t);
    e->args.push_back(std::move(node));
    if (args.size() == 1) {
      e->args.push_back(std::move(args[0]));
    } else {
      auto tup = make(Expr::Kind::tuple, t);
      tup->args = std::move(args);
      e->args.push_back(std::move(tup));
    }
    return e;
  }

  ExprPtr parse_subscribed() {
    Token at = cur();
    ExprPtr start;
    if (is_op(":")) {
      next();
    } else {
      ExprPtr node = parse_expression(true);
      if (!is_op(":")) return node;
      next();
      start = std::move(node);
    }
    auto s = make(Expr::Kind::slice, at);
    ExprPtr stop, step;
    if (!is_op(":") && !is_op("]") && !is_op(",")) stop = parse_expression(true);
    if (skip_op(":")) {
      if (!is_op("]") && !is_op(",")) step = parse_expression(true);
    }
    s->args.push_back(std::move(start));
    s->args.push_back(std::move(stop));
    s->args.push_back(std::move(step));
    return s;
  }

  void parse_call_args(Expr& e) {
    Token at = cur();
    expect_op("(");
    enter();
    bool require_comma = false;
    while (!is_op(")")) {
      if (require_comma) {
        expect_op(",");
        if (is_op(")")) break;
      }
      if (is_op("*")) {
        next();
        e.dyn_args = parse_expression(true);
      } else if (is_op("**")) {
        next();
        e.dyn_kwargs = parse_expression(true);
      } else if (cur().type == Tok::name && look().type == Tok::op && look().value == "=") {
        std::string key = next().value;
        next();
        e.kwargs.emplace_back(key, parse_expression(true));
      } else {
        if (!e.kwargs.empty() || e.dyn_args || e.dyn_kwargs) fail_at(at, "invalid syntax for function call expression");
        e.args.push_back(parse_expression(true));
      }
      require_comma = true;
    }
    expect_op(")");
    --depth_;
  }

  ExprPtr parse_call(ExprPtr node) {
    Token at = cur();
    auto e = make(Expr::Kind::call, at);
    e->args.push_back(std::move(node));
    parse_call_args(*e);
    return e;
  }

  std::string parse_dotted_name() {
    std::string name = expect_identifier().value;
    while (is_op(".")) {
      next();
      name += "." + expect_identifier().value;
    }
    return name;
  }

  // `node` may be null for filter blocks and `{% set x | f %}`.
  ExprPtr parse_filter(ExprPtr node, bool start_inline) {
    while (is_op("|") || start_inline) {
      if (!start_inline) next();
      Token at = cur();
      auto e = make(Expr::Kind::filter, at);
      e->name = parse_dotted_name();
      e->args.push_back(std::move(node));
      if (is_op("(")) parse_call_args(*e);
      node = std::move(e);
      start_inline = false;
    }
    return node;
  }

  ExprPtr parse_test(ExprPtr node) {
    Token at = next();  // 'is'
    bool negated = skip_name("not");
    auto e = make(Expr::Kind::test, at);
    e->name = parse_dotted_name();
    e->negated = negated;
    e->args.push_back(std::move(node));
    const Token& c = cur();
    if (is_op("(")) {
      parse_call_args(*e);
    } else if ((c.type == Tok::name || c.type == Tok::string || c.type == Tok::integer ||
                c.type == Tok::floating || (c.type == Tok::op && (c.value == "(" || c.value == "[" || c.value == "{"))) &&
               !(c.type == Tok::name && (c.value == "else" || c.value == "or" || c.value == "and"))) {
      if (is_name("is")) fail_here("You cannot chain multiple tests with is");
      ExprPtr arg = parse_primary();
      e->args.push_back(parse_postfix(std::move(arg)));
    }
    return e;
  }

  std::vector<Token> toks_;
  size_t pos_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;
};

}  // namespace

NodeList parse_template(const std::string& source) { return Parser(tokenize(source)).parse(); }

}  // namespace mlxcel::jinja
