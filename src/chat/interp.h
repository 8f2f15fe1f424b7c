// Tree-walking renderer for parsed Jinja2 templates (internal to mlxcel_chat).
#pragma once

#include <ctime>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

#include "chat/ast.h"
#include "chat/value.h"

namespace mlxcel::jinja {

// Caps that stop a hostile template from hanging or exhausting memory.
struct Limits {
  size_t max_output_bytes = 32u << 20;  // rendered text and any single string
  int max_call_depth = 256;             // nested macro / recursive-loop calls
  uint64_t max_steps = 20'000'000;      // loop iterations + calls + filter applications
  int64_t max_range = 100'000;          // jinja2's sandbox MAX_RANGE
};

struct Scope {
  std::unordered_map<std::string, Value> vars;
  std::shared_ptr<Scope> parent;
  explicit Scope(std::shared_ptr<Scope> p = nullptr) : parent(std::move(p)) {}
  const Value* find(const std::string& name) const {
    for (const Scope* s = this; s; s = s->parent.get()) {
      auto it = s->vars.find(name);
      if (it != s->vars.end()) return &it->second;
    }
    return nullptr;
  }
};
using ScopePtr = std::shared_ptr<Scope>;

// Thrown by raise_exception(); carries the template's message verbatim.
class RaisedException : public std::runtime_error {
 public:
  explicit RaisedException(const std::string& msg) : std::runtime_error(msg) {}
};

// A callable implemented in C++.
class Builtin : public Object {
 public:
  using Fn = std::function<Value(Interpreter&, CallArgs&)>;
  Builtin(std::string name, Fn fn) : name_(std::move(name)), fn_(std::move(fn)) {}
  std::string type_name() const override { return "builtin_function_or_method"; }
  bool callable() const override { return true; }
  Value call(Interpreter& interp, CallArgs& args) override { return fn_(interp, args); }
  std::string repr() const override { return "<built-in function " + name_ + ">"; }

 private:
  std::string name_;
  Fn fn_;
};

class Interpreter {
 public:
  Interpreter(const Limits& limits, std::optional<std::time_t> now) : limits_(limits), now_(now) {}
  ~Interpreter();
  Interpreter(const Interpreter&) = delete;
  Interpreter& operator=(const Interpreter&) = delete;
  // Remembers an object that can take part in a reference cycle (macro closures,
  // namespaces); it is released when the render ends.
  void track(const ObjectPtr& o) { tracked_.push_back(o); }

  // Renders `body` with `root` as the template scope.
  std::string render(const NodeList& body, ScopePtr root);

  // ---- used by builtins ----
  Value eval(const Expr& e, const ScopePtr& scope);
  Value call(const Value& callee, CallArgs& args);
  Value apply_filter(const std::string& name, const Value& subject, CallArgs& args);
  bool apply_test(const std::string& name, const Value& subject, CallArgs& args);
  bool has_test(const std::string& name) const;
  Value get_attr(const Value& obj, const std::string& name);
  Value get_item(const Value& obj, const Value& key);
  Value call_method(const Value& obj, const std::string& name, CallArgs& args);
  std::vector<Value> iterate(const Value& v);
  void step(uint64_t n = 1);
  void check_size(size_t n) const;
  const Limits& limits() const { return limits_; }
  std::optional<std::time_t> now() const { return now_; }
  Value lookup_global(const std::string& name);

  // Renders a body into a string in `scope` (macros, call/filter/set blocks).
  std::string render_body(const NodeList& body, const ScopePtr& scope);
  int& call_depth() { return call_depth_; }
  Value render_loop(const Node& node, const Value& iterable, const ScopePtr& scope, int depth, std::string& out);

 private:
  enum class Flow { normal, break_, continue_ };
  Flow exec(const NodeList& body, const ScopePtr& scope, std::string& out);
  Flow exec_node(const Node& n, const ScopePtr& scope, std::string& out);
  void assign(const Expr& target, const Value& v, const ScopePtr& scope);
  Value eval_inner(const Expr& e, const ScopePtr& scope);
  Value eval_call(const Expr& e, const ScopePtr& scope);
  CallArgs eval_args(const Expr& e, size_t first, const ScopePtr& scope);
  Value binary(const std::string& op, const Value& a, const Value& b);
  Value slice(const Value& obj, const Expr& s, const ScopePtr& scope);
  bool contains(const Value& container, const Value& item);
  void append(std::string& out, const std::string& s);

  Limits limits_;
  std::optional<std::time_t> now_;
  uint64_t steps_ = 0;
  int call_depth_ = 0;
  std::unordered_map<std::string, Value> globals_;
  std::vector<std::weak_ptr<Object>> tracked_;
};

// Argument helper for builtins: positional-or-keyword parameters with defaults.
class ArgParser {
 public:
  ArgParser(const char* fn, CallArgs& args, std::initializer_list<const char*> names);
  // Value of parameter i (positional index or keyword); nullopt when absent.
  const Value* get(size_t i) const { return slots_[i].is_undefined() && !present_[i] ? nullptr : &slots_[i]; }
  Value get_or(size_t i, Value def) const { return present_[i] ? slots_[i] : def; }

 private:
  std::vector<Value> slots_;
  std::vector<bool> present_;
};

// Python str methods and filters shared by the interpreter and builtins.
std::string py_strip(const std::string& s, const Value* chars, bool left, bool right);
std::vector<Value> py_split(const std::string& s, const Value* sep, int64_t maxsplit, bool from_right);
std::string py_lower(const std::string& s);
std::string html_escape(const std::string& s);
std::string py_upper(const std::string& s);
std::string py_format(Interpreter& in, const std::string& fmt, CallArgs& args);
std::string py_percent_format(const std::string& fmt, const Value& args);

}  // namespace mlxcel::jinja
