// Feature tests of the Jinja2 engine. Expected outputs in jinja_cases.json come from Python
// Jinja2 set up like transformers (tools/chat_goldens/make_unit_cases.py).
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "chat/chat_template.h"
#include "chat/jinja.h"

namespace {

using mlxcel::Error;
using mlxcel::jinja::RenderOptions;
using mlxcel::jinja::Template;
using nlohmann::ordered_json;

std::string render(const std::string& src, const ordered_json& ctx = ordered_json::object(),
                   const RenderOptions& opts = {}) {
  return Template::parse(src).render(ctx.is_null() ? ordered_json::object() : ctx, opts);
}

std::string error_of(const std::string& src, const ordered_json& ctx = ordered_json::object(),
                     const RenderOptions& opts = {}) {
  try {
    render(src, ctx, opts);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

ordered_json cases() {
  const char* env = std::getenv("MLXCEL_SOURCE_DIR");
  std::ifstream f(std::string(env ? env : MLXCEL_SOURCE_DIR) + "/tests/chat/jinja_cases.json");
  std::stringstream ss;
  ss << f.rdbuf();
  return ordered_json::parse(ss.str());
}

void run_group(const std::string& group) {
  ordered_json all = cases();
  ASSERT_TRUE(all.contains(group));
  for (const auto& c : all[group]) {
    const std::string src = c["src"].get<std::string>();
    std::string got;
    try {
      got = render(src, c["ctx"]);
    } catch (const std::exception& e) {
      got = std::string("ERROR: ") + e.what();
    }
    EXPECT_EQ(got, c["ok"].get<std::string>()) << "template: " << src;
  }
}

TEST(Jinja, WhitespaceControl) { run_group("WhitespaceControl"); }
TEST(Jinja, Expressions) { run_group("Expressions"); }
TEST(Jinja, Statements) { run_group("Statements"); }
TEST(Jinja, Filters) { run_group("Filters"); }
TEST(Jinja, Tests) { run_group("Tests"); }
TEST(Jinja, StringMethods) { run_group("StringMethods"); }

TEST(Jinja, ParseErrorsNameLineAndColumn) {
  EXPECT_NE(error_of("a\n{% if x %}\nb").find("line 3"), std::string::npos) << error_of("a\n{% if x %}\nb");
  EXPECT_NE(error_of("x\n  {{ 1 + }}").find("line 2, column 10"), std::string::npos) << error_of("x\n  {{ 1 + }}");
  EXPECT_NE(error_of("{% foo %}").find("unknown tag 'foo'"), std::string::npos);
  EXPECT_NE(error_of("{{ 'abc }}").find("line 1"), std::string::npos);
  EXPECT_NE(error_of("{% break %}").find("loop"), std::string::npos);
}

TEST(Jinja, RuntimeErrorsNameLineAndColumn) {
  std::string e = error_of("ok\n{{ x.y }}");
  EXPECT_NE(e.find("line 2, column"), std::string::npos) << e;
  EXPECT_NE(e.find("'x' is undefined"), std::string::npos) << e;
  EXPECT_NE(error_of("{{ 1 / 0 }}").find("division by zero"), std::string::npos);
  EXPECT_NE(error_of("{{ x|tojson }}").find("not JSON serializable"), std::string::npos);
  EXPECT_NE(error_of("{{ [1]|map('upper')|tojson }}").find("generator"), std::string::npos);
  EXPECT_NE(error_of("{{ 'x'|nosuchfilter }}").find("No filter named 'nosuchfilter'"), std::string::npos);
  EXPECT_NE(error_of("{{ none|length }}").find("has no len()"), std::string::npos);
}

TEST(Jinja, UndefinedSemantics) {
  EXPECT_EQ(render("[{{ x }}][{{ x|length }}][{{ x|default('d') }}][{% for i in x %}i{% endfor %}][{{ x is defined }}]"),
            "[][0][d][][False]");
  EXPECT_EQ(render("[{{ d.missing }}][{{ d.missing is defined }}]", {{"d", ordered_json::object()}}), "[][False]");
  EXPECT_NE(error_of("{{ d.a.b }}", {{"d", ordered_json::object()}}).find("has no attribute 'a'"), std::string::npos);
}

TEST(Jinja, SandboxForbidsMutation) {
  EXPECT_NE(error_of("{% set l = [1] %}{{ l.append(2) }}").find("unsafe"), std::string::npos);
  EXPECT_NE(error_of("{% set d = {} %}{{ d.update({'a': 1}) }}").find("unsafe"), std::string::npos);
  EXPECT_NE(error_of("{{ ''.__class__ }}x").find("(no error)"), std::string::npos);  // renders empty, like jinja2
  EXPECT_EQ(render("{{ ''.__class__ }}x"), "x");
}

TEST(Jinja, RaiseExceptionCarriesMessage) {
  try {
    render("{% if messages|length == 0 %}{{ raise_exception('No messages provided.') }}{% endif %}",
           {{"messages", ordered_json::array()}});
    FAIL() << "expected raise";
  } catch (const mlxcel::jinja::TemplateRaisedError& e) {
    EXPECT_STREQ(e.what(), "No messages provided.");
    EXPECT_EQ(e.kind(), mlxcel::ErrorKind::invalid_request);
  }
}

TEST(Jinja, StrftimeNowUsesInjectedClock) {
  RenderOptions o;
  std::tm tm{};
  tm.tm_year = 2024 - 1900;
  tm.tm_mon = 6;
  tm.tm_mday = 26;
  tm.tm_hour = 12;
  tm.tm_isdst = -1;
  o.now = std::mktime(&tm);
  EXPECT_EQ(render("{{ strftime_now('%d %b %Y') }}", ordered_json::object(), o), "26 Jul 2024");
}

TEST(Jinja, LimitsStopHostileTemplates) {
  RenderOptions o;
  o.limits.max_steps = 100000;
  o.limits.max_output_bytes = 1 << 20;
  EXPECT_NE(error_of("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", {}, o)
                .find("step limit"),
            std::string::npos);
  EXPECT_NE(error_of("{{ 'x' * 100000000 }}", {}, o).find("size limit"), std::string::npos);
  EXPECT_NE(error_of("{% set s = namespace(v='x') %}{% for i in range(60) %}{% set s.v = s.v ~ s.v %}{% endfor %}", {}, o)
                .find("size limit"),
            std::string::npos);
  EXPECT_NE(error_of("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", {}, o).find("recursion"), std::string::npos);
  EXPECT_NE(error_of("{{ range(1000000)|length }}", {}, o).find("MAX_RANGE"), std::string::npos);
  std::string deep = std::string(5000, '(') + "1" + std::string(5000, ')');
  EXPECT_NE(error_of("{{ " + deep + " }}").find("nested too deeply"), std::string::npos);
  std::string deep_list;
  for (int i = 0; i < 5000; ++i) deep_list += "[";
  for (int i = 0; i < 5000; ++i) deep_list += "]";
  EXPECT_NE(error_of("{{ " + deep_list + " }}").find("nested too deeply"), std::string::npos);
}

TEST(ChatTemplate, AppliesMessagesToolsAndKwargs) {
  mlxcel::chat::ChatTemplate tpl(
      "{{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
      "{% if tools %}[{{ tools|length }} tools]{% endif %}{% if add_generation_prompt %}<assistant>{% endif %}"
      "{{ enable_thinking }}");
  mlxcel::chat::ChatTemplateOptions o;
  o.add_generation_prompt = true;
  o.tools = ordered_json::array({{{"type", "function"}}});
  o.extra["bos_token"] = "<s>";
  o.extra["enable_thinking"] = false;
  ordered_json msgs = ordered_json::array({{{"role", "user"}, {"content", "hi"}}});
  EXPECT_EQ(tpl.apply(msgs, o), "<s><user>hi[1 tools]<assistant>False");
  o.tools = nullptr;
  EXPECT_EQ(tpl.apply(msgs, o), "<s><user>hi<assistant>False");
}

TEST(ChatTemplate, KeepsJsonKeyOrder) {
  mlxcel::chat::ChatTemplate tpl("{{ messages[0]|tojson }} {{ messages[0] }}");
  ordered_json msgs = ordered_json::parse(R"([{"role": "user", "content": "x", "a": 1.5}])");
  EXPECT_EQ(tpl.apply(msgs, {}), R"({"role": "user", "content": "x", "a": 1.5} {'role': 'user', 'content': 'x', 'a': 1.5})");
}

}  // namespace
