#include "chat/interp.h"

#include <cmath>

#include "chat/lexer.h"

namespace mlxcel::jinja {

namespace {

// A macro, or the `caller` of a call block.
class Macro : public Object {
 public:
  Macro(std::string name, const std::vector<MacroParam>* params, const NodeList* body, ScopePtr closure)
      : name_(std::move(name)), params_(params), body_(body), closure_(std::move(closure)) {}
  std::string type_name() const override { return "Macro"; }
  bool callable() const override { return true; }
  std::string repr() const override { return "<Macro '" + name_ + "'>"; }
  std::optional<Value> get_attr(const std::string& n) const override {
    if (n == "name") return Value(name_);
    return std::nullopt;
  }
  void release() override { closure_.reset(); }

  Value call(Interpreter& in, CallArgs& args) override {
    in.step();
    if (++in.call_depth() > in.limits().max_call_depth) {
      --in.call_depth();
      fail("maximum macro recursion depth exceeded");
    }
    struct Guard {
      int& d;
      ~Guard() { --d; }
    } guard{in.call_depth()};
    auto scope = std::make_shared<Scope>(closure_);
    const auto& params = *params_;
    if (args.args.size() > params.size()) {
      fail(fmt::format("macro '{}' takes not more than {} argument(s)", name_, params.size()));
    }
    std::vector<bool> set(params.size(), false);
    for (size_t i = 0; i < args.args.size(); ++i) {
      scope->vars[params[i].name] = args.args[i];
      set[i] = true;
    }
    for (auto& [k, v] : args.kwargs) {
      bool found = false;
      for (size_t i = 0; i < params.size(); ++i) {
        if (params[i].name == k) {
          if (set[i]) fail(fmt::format("macro '{}' got multiple values for argument '{}'", name_, k));
          scope->vars[k] = v;
          set[i] = found = true;
          break;
        }
      }
      if (!found) {
        if (k == "caller") {
          scope->vars[k] = v;
        } else {
          fail(fmt::format("macro '{}' takes no keyword argument '{}'", name_, k));
        }
      }
    }
    for (size_t i = 0; i < params.size(); ++i) {
      if (set[i]) continue;
      if (params[i].default_value) {
        scope->vars[params[i].name] = in.eval(*params[i].default_value, scope);
      } else {
        scope->vars[params[i].name] = Value::undefined(fmt::format("'{}' is undefined", params[i].name));
      }
    }
    if (scope->vars.find("caller") == scope->vars.end()) {
      scope->vars["caller"] = Value::undefined("'caller' is undefined");
    }
    return Value(in.render_body(*body_, scope));
  }

 private:
  std::string name_;
  const std::vector<MacroParam>* params_;
  const NodeList* body_;
  ScopePtr closure_;
};

class Namespace : public Object {
 public:
  Namespace() : attrs_(std::make_shared<Dict>()) {}
  std::string type_name() const override { return "Namespace"; }
  std::optional<Value> get_attr(const std::string& name) const override {
    if (const Value* v = attrs_->find(name)) return *v;
    return std::nullopt;
  }
  bool set_attr(const std::string& name, Value value) override {
    attrs_->set(Value(name), std::move(value));
    return true;
  }
  std::string repr() const override { return "<Namespace " + Value(attrs_).repr() + ">"; }
  void release() override {
    attrs_->items.clear();
    attrs_->index.clear();
  }
  DictPtr attrs_;
};

class LoopObject : public Object, public std::enable_shared_from_this<LoopObject> {
 public:
  LoopObject(std::vector<Value> items, int depth, const Node* node, ScopePtr scope, Interpreter* in)
      : items_(std::move(items)), depth_(depth), node_(node), scope_(std::move(scope)), in_(in) {}
  std::string type_name() const override { return "LoopContext"; }
  bool callable() const override { return node_->recursive; }
  std::string repr() const override {
    return fmt::format("<LoopContext {}/{}>", index0_ + 1, items_.size());
  }
  Value call(Interpreter& in, CallArgs& args) override {
    if (!node_->recursive) fail("The loop must be marked 'recursive' to be called recursively.");
    if (args.args.size() != 1) fail("loop() takes exactly one argument");
    std::string out;
    in.render_loop(*node_, args.args[0], scope_, depth_ + 1, out);
    return Value(out);
  }
  std::optional<Value> get_attr(const std::string& n) const override {
    int64_t len = static_cast<int64_t>(items_.size());
    int64_t i = static_cast<int64_t>(index0_);
    if (n == "index0") return Value(i);
    if (n == "index") return Value(i + 1);
    if (n == "revindex") return Value(len - i);
    if (n == "revindex0") return Value(len - i - 1);
    if (n == "first") return Value(i == 0);
    if (n == "last") return Value(i == len - 1);
    if (n == "length") return Value(len);
    if (n == "depth") return Value(static_cast<int64_t>(depth_));
    if (n == "depth0") return Value(static_cast<int64_t>(depth_ - 1));
    if (n == "previtem") return i > 0 ? items_[index0_ - 1] : Value::undefined("there is no previous item");
    if (n == "nextitem") return i + 1 < len ? items_[index0_ + 1] : Value::undefined("there is no next item");
    if (n == "cycle") {
      size_t idx = index0_;
      return Value(std::static_pointer_cast<Object>(std::make_shared<Builtin>(
          "cycle", [idx](Interpreter&, CallArgs& a) -> Value {
            if (a.args.empty()) fail("no items for cycling given");
            return a.args[idx % a.args.size()];
          })));
    }
    if (n == "changed") {
      auto self = std::const_pointer_cast<LoopObject>(shared_from_this());
      return Value(std::static_pointer_cast<Object>(std::make_shared<Builtin>(
          "changed", [self](Interpreter&, CallArgs& a) -> Value {
            Value cur = Value::list(a.args);
            if (self->has_last_ && py_equal(cur, self->last_changed_)) return Value(false);
            self->has_last_ = true;
            self->last_changed_ = cur;
            return Value(true);
          })));
    }
    return std::nullopt;
  }
  size_t index0_ = 0;

 private:
  std::vector<Value> items_;
  int depth_;
  const Node* node_;
  ScopePtr scope_;
  Interpreter* in_;
  bool has_last_ = false;
  Value last_changed_;
};

class BoundMethod : public Object {
 public:
  BoundMethod(Value obj, std::string name) : obj_(std::move(obj)), name_(std::move(name)) {}
  std::string type_name() const override { return "builtin_function_or_method"; }
  bool callable() const override { return true; }
  Value call(Interpreter& in, CallArgs& args) override { return in.call_method(obj_, name_, args); }
  std::string repr() const override {
    return fmt::format("<built-in method {} of {} object>", name_, obj_.type_name());
  }

 private:
  Value obj_;
  std::string name_;
};

bool is_safe_method(const Value& obj, const std::string& name) {
  static const char* str_methods[] = {"startswith", "endswith", "strip", "lstrip", "rstrip", "split", "rsplit",
                                      "upper", "lower", "title", "capitalize", "replace", "find", "rfind",
                                      "index", "rindex", "count", "format", "join", "splitlines", "isdigit",
                                      "isalpha", "isalnum", "isspace", "isupper", "islower", "istitle",
                                      "isnumeric", "isdecimal", "center", "ljust", "rjust", "zfill",
                                      "swapcase", "partition", "rpartition", "removeprefix", "removesuffix",
                                      "casefold", "expandtabs", "encode", "format_map", "isidentifier",
                                      "isprintable", "isascii", "translate", "maketrans"};
  static const char* dict_methods[] = {"items", "keys", "values", "get", "copy"};
  static const char* list_methods[] = {"index", "count", "copy"};
  if (obj.is_string()) {
    for (const char* m : str_methods)
      if (name == m) return true;
  } else if (obj.is_dict()) {
    for (const char* m : dict_methods)
      if (name == m) return true;
  } else if (obj.is_list() && !obj.is_generator()) {
    for (const char* m : list_methods)
      if (name == m) return true;
  }
  return false;
}

bool is_unsafe_method(const Value& obj, const std::string& name) {
  static const char* dict_unsafe[] = {"pop", "popitem", "setdefault", "update", "clear", "fromkeys"};
  static const char* list_unsafe[] = {"append", "pop", "extend", "insert", "remove", "reverse", "sort", "clear"};
  if (obj.is_dict() && !obj.is_tuple()) {
    for (const char* m : dict_unsafe)
      if (name == m) return true;
  } else if (obj.is_list() && !obj.is_tuple() && !obj.is_generator()) {
    for (const char* m : list_unsafe)
      if (name == m) return true;
  }
  return false;
}

std::string object_type_repr(const Value& v) {
  if (v.is_none()) return "None";
  return v.type_name() + " object";
}

void slice_indices(int64_t len, const Value& vstart, const Value& vstop, const Value& vstep, int64_t& start,
                   int64_t& stop, int64_t& step) {
  auto as_index = [](const Value& v) -> int64_t {
    if (!v.is_int() && !v.is_bool()) fail("slice indices must be integers or None");
    return v.as_int();
  };
  step = vstep.is_none() || vstep.is_undefined() ? 1 : as_index(vstep);
  if (step == 0) fail("slice step cannot be zero");
  int64_t lower = step < 0 ? -1 : 0;
  int64_t upper = step < 0 ? len - 1 : len;
  auto adjust = [&](const Value& v, int64_t def) -> int64_t {
    if (v.is_none() || v.is_undefined()) return def;
    int64_t x = as_index(v);
    if (x < 0) {
      x += len;
      if (x < lower) x = lower;
    } else if (x > upper) {
      x = upper;
    }
    return x;
  };
  start = adjust(vstart, step < 0 ? upper : lower);
  stop = adjust(vstop, step < 0 ? lower : upper);
}

}  // namespace

// ---------------------------------------------------------------------------

Interpreter::~Interpreter() {
  for (auto& w : tracked_) {
    if (auto o = w.lock()) o->release();
  }
}

void Interpreter::step(uint64_t n) {
  steps_ += n;
  if (steps_ > limits_.max_steps) fail("template exceeded the step limit (infinite loop?)");
}

void Interpreter::check_size(size_t n) const {
  if (n > limits_.max_output_bytes) fail("template output exceeds the size limit");
}

void Interpreter::append(std::string& out, const std::string& s) {
  check_size(out.size() + s.size());
  out += s;
}

std::string Interpreter::render(const NodeList& body, ScopePtr root) {
  std::string out;
  exec(body, root, out);
  return out;
}

std::string Interpreter::render_body(const NodeList& body, const ScopePtr& scope) {
  std::string out;
  exec(body, scope, out);
  return out;
}

Interpreter::Flow Interpreter::exec(const NodeList& body, const ScopePtr& scope, std::string& out) {
  for (const auto& n : body) {
    Flow f = exec_node(*n, scope, out);
    if (f != Flow::normal) return f;
  }
  return Flow::normal;
}

Value Interpreter::render_loop(const Node& n, const Value& iterable, const ScopePtr& scope, int depth,
                               std::string& out) {
  std::vector<Value> items = iterate(iterable);
  if (n.cond) {
    std::vector<Value> kept;
    for (auto& item : items) {
      step();
      auto tmp = std::make_shared<Scope>(scope);
      assign(*n.target, item, tmp);
      if (eval(*n.cond, tmp).truthy()) kept.push_back(std::move(item));
    }
    items = std::move(kept);
  }
  if (items.empty()) {
    exec(n.else_body, std::make_shared<Scope>(scope), out);
    return Value();
  }
  if (depth > limits_.max_call_depth) fail("maximum loop recursion depth exceeded");
  auto loop = std::make_shared<LoopObject>(items, depth, &n, scope, this);
  Value loop_value(std::static_pointer_cast<Object>(loop));
  for (size_t i = 0; i < items.size(); ++i) {
    step();
    loop->index0_ = i;
    auto it = std::make_shared<Scope>(scope);
    assign(*n.target, items[i], it);
    it->vars["loop"] = loop_value;
    Flow f = exec(n.body, it, out);
    if (f == Flow::break_) break;
  }
  return Value();
}

Interpreter::Flow Interpreter::exec_node(const Node& n, const ScopePtr& scope, std::string& out) {
  try {
    switch (n.kind) {
      case Node::Kind::text: append(out, n.text); break;
      case Node::Kind::output: {
        Value v = eval(*n.expr, scope);
        append(out, v.str());
        break;
      }
      case Node::Kind::if_: {
        for (size_t i = 0; i < n.conds.size(); ++i) {
          if (eval(*n.conds[i], scope).truthy()) return exec(n.bodies[i], scope, out);
        }
        return exec(n.else_body, scope, out);
      }
      case Node::Kind::for_: {
        Value iterable = eval(*n.expr, scope);
        render_loop(n, iterable, scope, 1, out);
        break;
      }
      case Node::Kind::set: assign(*n.target, eval(*n.expr, scope), scope); break;
      case Node::Kind::set_block: {
        Value v(render_body(n.body, scope));
        if (n.expr) {
          std::function<Value(const Expr&)> apply = [&](const Expr& f) -> Value {
            Value subject = f.args[0] ? apply(*f.args[0]) : v;
            CallArgs a = eval_args(f, 1, scope);
            return apply_filter(f.name, subject, a);
          };
          v = apply(*n.expr);
        }
        assign(*n.target, v, scope);
        break;
      }
      case Node::Kind::macro: {
        ObjectPtr m = std::make_shared<Macro>(n.text, &n.params, &n.body, scope);
        track(m);
        scope->vars[n.text] = Value(m);
        break;
      }
      case Node::Kind::call_block: {
        ObjectPtr m = std::make_shared<Macro>("caller", &n.params, &n.body, scope);
        track(m);
        Value caller(m);
        const Expr& call = *n.expr;
        Value callee = eval(*call.args[0], scope);
        CallArgs a = eval_args(call, 1, scope);
        a.kwargs.emplace_back("caller", caller);
        append(out, this->call(callee, a).str());
        break;
      }
      case Node::Kind::filter_block: {
        Value body(render_body(n.body, scope));
        std::function<Value(const Expr&)> apply = [&](const Expr& f) -> Value {
          Value subject = f.args[0] ? apply(*f.args[0]) : body;
          CallArgs a = eval_args(f, 1, scope);
          return apply_filter(f.name, subject, a);
        };
        append(out, apply(*n.expr).str());
        break;
      }
      case Node::Kind::break_: return Flow::break_;
      case Node::Kind::continue_: return Flow::continue_;
      case Node::Kind::scope:
        if (n.recursive) return exec(n.body, std::make_shared<Scope>(scope), out);
        return exec(n.body, scope, out);
    }
  } catch (const RenderError& e) {
    throw Error(ErrorKind::invalid_request, position_message(n.line, n.col, e.what()));
  }
  return Flow::normal;
}

void Interpreter::assign(const Expr& target, const Value& v, const ScopePtr& scope) {
  if (target.kind == Expr::Kind::name) {
    scope->vars[target.name] = v;
  } else if (target.kind == Expr::Kind::tuple) {
    std::vector<Value> items = iterate(v);
    if (items.size() > target.args.size()) fail(fmt::format("too many values to unpack (expected {})", target.args.size()));
    if (items.size() < target.args.size()) {
      fail(fmt::format("not enough values to unpack (expected {}, got {})", target.args.size(), items.size()));
    }
    for (size_t i = 0; i < items.size(); ++i) assign(*target.args[i], items[i], scope);
  } else if (target.kind == Expr::Kind::nsref) {
    const Value* ns = scope->find(target.name);
    if (!ns || !ns->is_object() || !ns->as_object()->set_attr(target.attr, v)) {
      fail("cannot assign attribute on non-namespace object");
    }
  } else {
    fail("can't assign to this expression");
  }
}

Value Interpreter::lookup_global(const std::string& name) {
  if (globals_.empty()) {
    auto add = [&](const char* n, Builtin::Fn fn) {
      globals_[n] = Value(std::static_pointer_cast<Object>(std::make_shared<Builtin>(n, std::move(fn))));
    };
    add("range", [](Interpreter& in, CallArgs& a) -> Value {
      if (!a.kwargs.empty()) fail("range() takes no keyword arguments");
      int64_t start = 0, stop = 0, st = 1;
      for (auto& v : a.args)
        if (!v.is_int() && !v.is_bool()) fail(fmt::format("'{}' object cannot be interpreted as an integer", v.type_name()));
      if (a.args.size() == 1) stop = a.args[0].as_int();
      else if (a.args.size() == 2 || a.args.size() == 3) {
        start = a.args[0].as_int();
        stop = a.args[1].as_int();
        if (a.args.size() == 3) st = a.args[2].as_int();
      } else fail("range expected 1 to 3 arguments");
      if (st == 0) fail("range() arg 3 must not be zero");
      std::vector<Value> items;
      for (int64_t i = start; st > 0 ? i < stop : i > stop; i += st) {
        if (static_cast<int64_t>(items.size()) >= in.limits().max_range) {
          fail(fmt::format("Range too big. The sandbox blocks ranges larger than MAX_RANGE ({}).", in.limits().max_range));
        }
        items.emplace_back(i);
      }
      return Value::list(std::move(items));
    });
    add("namespace", [](Interpreter& in, CallArgs& a) -> Value {
      auto ns = std::make_shared<Namespace>();
      in.track(ns);
      for (auto& v : a.args) {
        if (!v.is_dict()) fail("namespace() positional argument must be a mapping");
        for (auto& [k, x] : v.as_dict()->items) ns->attrs_->set(k, x);
      }
      for (auto& [k, v] : a.kwargs) ns->attrs_->set(Value(k), v);
      return Value(std::static_pointer_cast<Object>(ns));
    });
    add("dict", [](Interpreter&, CallArgs& a) -> Value {
      Value d = Value::dict();
      for (auto& v : a.args) {
        if (v.is_dict()) {
          for (auto& [k, x] : v.as_dict()->items) d.as_dict()->set(k, x);
        } else {
          fail("dict() positional argument must be a mapping");
        }
      }
      for (auto& [k, v] : a.kwargs) d.as_dict()->set(Value(k), v);
      return d;
    });
    add("raise_exception", [](Interpreter&, CallArgs& a) -> Value {
      std::string msg = a.args.empty() ? "" : a.args[0].str();
      throw RaisedException(msg);
    });
    add("strftime_now", [](Interpreter& in, CallArgs& a) -> Value {
      if (a.args.empty() || !a.args[0].is_string()) fail("strftime_now() expects a format string");
      std::time_t t = in.now() ? *in.now() : std::time(nullptr);
      std::tm tm{};
      localtime_r(&t, &tm);
      char buf[512];
      size_t n = std::strftime(buf, sizeof buf, a.args[0].as_string().c_str(), &tm);
      return Value(std::string(buf, n));
    });
    add("joiner", [](Interpreter&, CallArgs& a) -> Value {
      std::string sep = a.args.empty() ? ", " : a.args[0].str();
      auto used = std::make_shared<bool>(false);
      return Value(std::static_pointer_cast<Object>(std::make_shared<Builtin>(
          "joiner", [sep, used](Interpreter&, CallArgs&) -> Value {
            if (!*used) {
              *used = true;
              return Value("");
            }
            return Value(sep);
          })));
    });
  }
  auto it = globals_.find(name);
  if (it != globals_.end()) return it->second;
  return Value::undefined(fmt::format("'{}' is undefined", name));
}

Value Interpreter::eval(const Expr& e, const ScopePtr& scope) {
  try {
    return eval_inner(e, scope);
  } catch (const RenderError& err) {
    throw Error(ErrorKind::invalid_request, position_message(e.line, e.col, err.what()));
  }
}

CallArgs Interpreter::eval_args(const Expr& e, size_t first, const ScopePtr& scope) {
  CallArgs a;
  for (size_t i = first; i < e.args.size(); ++i) a.args.push_back(eval(*e.args[i], scope));
  for (const auto& [k, v] : e.kwargs) a.kwargs.emplace_back(k, eval(*v, scope));
  if (e.dyn_args) {
    for (auto& v : iterate(eval(*e.dyn_args, scope))) a.args.push_back(v);
  }
  if (e.dyn_kwargs) {
    Value d = eval(*e.dyn_kwargs, scope);
    if (!d.is_dict()) fail("argument after ** must be a mapping");
    for (auto& [k, v] : d.as_dict()->items) {
      if (!k.is_string()) fail("keywords must be strings");
      a.kwargs.emplace_back(k.as_string(), v);
    }
  }
  return a;
}

Value Interpreter::call(const Value& callee, CallArgs& args) {
  if (callee.is_undefined()) fail(callee.undefined_hint());
  if (!callee.is_callable()) fail(fmt::format("'{}' object is not callable", callee.type_name()));
  return callee.as_object()->call(*this, args);
}

Value Interpreter::eval_inner(const Expr& e, const ScopePtr& scope) {
  switch (e.kind) {
    case Expr::Kind::literal: return e.value;
    case Expr::Kind::name: {
      if (const Value* v = scope->find(e.name)) return *v;
      return lookup_global(e.name);
    }
    case Expr::Kind::list:
    case Expr::Kind::tuple: {
      std::vector<Value> items;
      items.reserve(e.args.size());
      for (const auto& a : e.args) items.push_back(eval(*a, scope));
      return Value::list(std::move(items), e.kind == Expr::Kind::tuple);
    }
    case Expr::Kind::dict: {
      Value d = Value::dict();
      for (size_t i = 0; i + 1 < e.args.size(); i += 2) {
        Value k = eval(*e.args[i], scope);
        d.as_dict()->set(k, eval(*e.args[i + 1], scope));
      }
      return d;
    }
    case Expr::Kind::getattr: return get_attr(eval(*e.args[0], scope), e.name);
    case Expr::Kind::getitem: {
      Value obj = eval(*e.args[0], scope);
      if (e.args[1]->kind == Expr::Kind::slice) return slice(obj, *e.args[1], scope);
      return get_item(obj, eval(*e.args[1], scope));
    }
    case Expr::Kind::slice: fail("slice outside of subscript");
    case Expr::Kind::call: {
      Value callee = eval(*e.args[0], scope);
      CallArgs a = eval_args(e, 1, scope);
      return call(callee, a);
    }
    case Expr::Kind::filter: {
      Value subject = e.args[0] ? eval(*e.args[0], scope) : Value();
      CallArgs a = eval_args(e, 1, scope);
      return apply_filter(e.name, subject, a);
    }
    case Expr::Kind::test: {
      Value subject = eval(*e.args[0], scope);
      CallArgs a = eval_args(e, 1, scope);
      bool r = apply_test(e.name, subject, a);
      return Value(e.negated ? !r : r);
    }
    case Expr::Kind::unary: {
      Value v = eval(*e.args[0], scope);
      if (e.name == "not") return Value(!v.truthy());
      require_defined(v);
      if (e.name == "-") {
        if (v.is_float()) return Value(-v.as_double());
        if (v.is_int() || v.is_bool()) {
          if (v.as_int() == INT64_MIN) fail("integer overflow");
          return Value(-v.as_int());
        }
        fail(fmt::format("bad operand type for unary -: '{}'", v.type_name()));
      }
      if (v.is_float()) return v;
      if (v.is_int() || v.is_bool()) return Value(v.as_int());
      fail(fmt::format("bad operand type for unary +: '{}'", v.type_name()));
    }
    case Expr::Kind::binary: {
      Value a = eval(*e.args[0], scope);
      Value b = eval(*e.args[1], scope);
      return binary(e.name, a, b);
    }
    case Expr::Kind::logic: {
      Value a = eval(*e.args[0], scope);
      if (e.name == "and") return a.truthy() ? eval(*e.args[1], scope) : a;
      return a.truthy() ? a : eval(*e.args[1], scope);
    }
    case Expr::Kind::compare: {
      Value left = eval(*e.args[0], scope);
      for (size_t i = 0; i < e.ops.size(); ++i) {
        Value right = eval(*e.args[i + 1], scope);
        const std::string& op = e.ops[i];
        bool r;
        if (op == "==") r = py_equal(left, right);
        else if (op == "!=") r = !py_equal(left, right);
        else if (op == "<") r = py_compare(left, right) < 0;
        else if (op == "<=") r = py_compare(left, right) <= 0;
        else if (op == ">") r = py_compare(left, right) > 0;
        else if (op == ">=") r = py_compare(left, right) >= 0;
        else if (op == "in") r = contains(right, left);
        else r = !contains(right, left);
        if (!r) return Value(false);
        left = std::move(right);
      }
      return Value(true);
    }
    case Expr::Kind::concat: {
      std::string s;
      for (const auto& a : e.args) {
        s += eval(*a, scope).str();
        check_size(s.size());
      }
      return Value(std::move(s));
    }
    case Expr::Kind::cond: {
      if (eval(*e.args[1], scope).truthy()) return eval(*e.args[0], scope);
      if (e.args[2]) return eval(*e.args[2], scope);
      return Value::undefined("the inline if-expression evaluated to false and no else section was defined.");
    }
    case Expr::Kind::nsref: fail("namespace reference outside of assignment");
  }
  fail("unknown expression");
}

Value Interpreter::get_attr(const Value& obj, const std::string& name) {
  if (obj.is_undefined()) fail(obj.undefined_hint());
  if (obj.is_object()) {
    if (auto v = obj.as_object()->get_attr(name)) return *v;
    return Value::undefined(fmt::format("'{} object' has no attribute '{}'", obj.type_name(), name));
  }
  if (is_unsafe_method(obj, name)) {
    return Value::undefined(fmt::format("access to attribute '{}' of '{}' object is unsafe.", name, obj.type_name()));
  }
  if (is_safe_method(obj, name)) {
    return Value(std::static_pointer_cast<Object>(std::make_shared<BoundMethod>(obj, name)));
  }
  if (obj.is_dict()) {
    if (const Value* v = obj.as_dict()->find(name)) return *v;
  }
  return Value::undefined(fmt::format("'{}' has no attribute '{}'", object_type_repr(obj), name));
}

Value Interpreter::get_item(const Value& obj, const Value& key) {
  if (obj.is_undefined()) fail(obj.undefined_hint());
  if (obj.is_dict()) {
    const Value* v = nullptr;
    try {
      v = obj.as_dict()->find(key);
    } catch (const RenderError&) {
      v = nullptr;  // unhashable key: jinja2 turns the TypeError into an undefined
    }
    if (v) return *v;
  } else if (obj.is_list() && !obj.is_generator() && (key.is_int() || key.is_bool())) {
    const auto& items = obj.as_list()->items;
    int64_t i = key.as_int();
    int64_t n = static_cast<int64_t>(items.size());
    if (i < 0) i += n;
    if (i >= 0 && i < n) return items[static_cast<size_t>(i)];
  } else if (obj.is_string() && (key.is_int() || key.is_bool())) {
    const std::string& s = obj.as_string();
    int64_t i = key.as_int();
    std::vector<uint32_t> cps = utf8_decode(s);
    int64_t n = static_cast<int64_t>(cps.size());
    if (i < 0) i += n;
    if (i >= 0 && i < n) {
      std::string out;
      utf8_append(out, cps[static_cast<size_t>(i)]);
      return Value(out);
    }
  }
  if (key.is_string()) return get_attr(obj, key.as_string());
  return Value::undefined(fmt::format("{} has no element {}", object_type_repr(obj), key.repr()));
}

Value Interpreter::slice(const Value& obj, const Expr& s, const ScopePtr& scope) {
  Value vs = s.args[0] ? eval(*s.args[0], scope) : Value::none();
  Value ve = s.args[1] ? eval(*s.args[1], scope) : Value::none();
  Value vst = s.args[2] ? eval(*s.args[2], scope) : Value::none();
  if (obj.is_undefined()) fail(obj.undefined_hint());
  int64_t start, stop, step;
  if (obj.is_list() && !obj.is_generator()) {
    const auto& items = obj.as_list()->items;
    slice_indices(static_cast<int64_t>(items.size()), vs, ve, vst, start, stop, step);
    std::vector<Value> out;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) out.push_back(items[static_cast<size_t>(i)]);
    return Value::list(std::move(out), obj.is_tuple());
  }
  if (obj.is_string()) {
    std::vector<uint32_t> cps = utf8_decode(obj.as_string());
    slice_indices(static_cast<int64_t>(cps.size()), vs, ve, vst, start, stop, step);
    std::string out;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) utf8_append(out, cps[static_cast<size_t>(i)]);
    return Value(out);
  }
  return Value::undefined(fmt::format("{} has no element slice", object_type_repr(obj)));
}

std::vector<Value> Interpreter::iterate(const Value& v) {
  switch (v.kind()) {
    case Value::Kind::undefined: return {};
    case Value::Kind::list: return v.as_list()->items;
    case Value::Kind::dict: {
      std::vector<Value> keys;
      for (const auto& kv : v.as_dict()->items) keys.push_back(kv.first);
      return keys;
    }
    case Value::Kind::string: {
      std::vector<Value> out;
      for (uint32_t cp : utf8_decode(v.as_string())) {
        std::string s;
        utf8_append(s, cp);
        out.emplace_back(std::move(s));
      }
      return out;
    }
    default: fail(fmt::format("'{}' object is not iterable", v.type_name()));
  }
}

bool Interpreter::contains(const Value& container, const Value& item) {
  if (container.is_string()) {
    if (!item.is_string()) fail(fmt::format("'in <string>' requires string as left operand, not {}", item.type_name()));
    return container.as_string().find(item.as_string()) != std::string::npos;
  }
  if (container.is_list()) {
    for (const auto& x : container.as_list()->items)
      if (py_equal(x, item)) return true;
    return false;
  }
  if (container.is_dict()) return container.as_dict()->find(item) != nullptr;
  if (container.is_undefined()) return false;
  fail(fmt::format("argument of type '{}' is not iterable", container.type_name()));
}

namespace {
int64_t floordiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}
}  // namespace

Value Interpreter::binary(const std::string& op, const Value& a, const Value& b) {
  bool both_num = a.is_number() && b.is_number();
  bool any_float = a.is_float() || b.is_float();
  auto type_error = [&]() -> Value {
    require_defined(a);
    require_defined(b);
    fail(fmt::format("unsupported operand type(s) for {}: '{}' and '{}'", op, a.type_name(), b.type_name()));
  };
  int64_t r = 0;
  if (op == "+") {
    if (both_num) {
      if (any_float) return Value(a.as_double() + b.as_double());
      if (__builtin_add_overflow(a.as_int(), b.as_int(), &r)) fail("integer overflow");
      return Value(r);
    }
    if (a.is_string() && b.is_string()) {
      check_size(a.as_string().size() + b.as_string().size());
      if (a.is_markup() || b.is_markup()) {
        return Value::markup((a.is_markup() ? a.as_string() : html_escape(a.as_string())) +
                             (b.is_markup() ? b.as_string() : html_escape(b.as_string())));
      }
      return Value(a.as_string() + b.as_string());
    }
    if (a.is_list() && b.is_list() && a.is_tuple() == b.is_tuple() && !a.is_generator() && !b.is_generator()) {
      std::vector<Value> items = a.as_list()->items;
      for (const auto& x : b.as_list()->items) items.push_back(x);
      check_size(items.size());
      return Value::list(std::move(items), a.is_tuple());
    }
    return type_error();
  }
  if (op == "-") {
    if (!both_num) return type_error();
    if (any_float) return Value(a.as_double() - b.as_double());
    if (__builtin_sub_overflow(a.as_int(), b.as_int(), &r)) fail("integer overflow");
      return Value(r);
  }
  if (op == "*") {
    if (both_num) {
      if (any_float) return Value(a.as_double() * b.as_double());
      if (__builtin_mul_overflow(a.as_int(), b.as_int(), &r)) fail("integer overflow");
      return Value(r);
    }
    const Value* seq = nullptr;
    const Value* count = nullptr;
    if ((a.is_string() || (a.is_list() && !a.is_generator())) && (b.is_int() || b.is_bool())) seq = &a, count = &b;
    else if ((b.is_string() || (b.is_list() && !b.is_generator())) && (a.is_int() || a.is_bool())) seq = &b, count = &a;
    if (!seq) return type_error();
    int64_t n = std::max<int64_t>(0, count->as_int());
    if (seq->is_string()) {
      size_t len = seq->as_string().size();
      if (len != 0 && static_cast<uint64_t>(n) > limits_.max_output_bytes / len) check_size(limits_.max_output_bytes + 1);
      std::string out;
      out.reserve(len * static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) out += seq->as_string();
      return seq->is_markup() ? Value::markup(std::move(out)) : Value(std::move(out));
    }
    size_t len = seq->as_list()->items.size();
    if (len != 0 && static_cast<uint64_t>(n) > limits_.max_output_bytes / len) check_size(limits_.max_output_bytes + 1);
    std::vector<Value> out;
    for (int64_t i = 0; i < n; ++i)
      for (const auto& x : seq->as_list()->items) out.push_back(x);
    return Value::list(std::move(out), seq->is_tuple());
  }
  if (op == "/") {
    if (!both_num) return type_error();
    if (b.as_double() == 0) fail("division by zero");
    return Value(a.as_double() / b.as_double());
  }
  if (op == "//") {
    if (!both_num) return type_error();
    if (any_float) {
      if (b.as_double() == 0) fail("float floor division by zero");
      return Value(std::floor(a.as_double() / b.as_double()));
    }
    if (b.as_int() == 0) fail("integer division or modulo by zero");
    return Value(floordiv(a.as_int(), b.as_int()));
  }
  if (op == "%") {
    if (a.is_string()) return Value(py_percent_format(a.as_string(), b));
    if (!both_num) return type_error();
    if (any_float) {
      double x = a.as_double(), y = b.as_double();
      if (y == 0) fail("float modulo");
      double m = std::fmod(x, y);
      if (m != 0 && ((m < 0) != (y < 0))) m += y;
      return Value(m);
    }
    if (b.as_int() == 0) fail("integer division or modulo by zero");
    int64_t m = a.as_int() % b.as_int();
    if (m != 0 && ((m < 0) != (b.as_int() < 0))) m += b.as_int();
    return Value(m);
  }
  if (op == "**") {
    if (!both_num) return type_error();
    if (!any_float && b.as_int() >= 0) {
      int64_t base = a.as_int(), e = b.as_int(), acc = 1;
      while (e > 0) {
        if ((e & 1) && __builtin_mul_overflow(acc, base, &acc)) fail("integer overflow");
        e >>= 1;
        if (e > 0 && __builtin_mul_overflow(base, base, &base)) fail("integer overflow");
      }
      return Value(acc);
    }
    return Value(std::pow(a.as_double(), b.as_double()));
  }
  fail("unknown operator " + op);
}

}  // namespace mlxcel::jinja
