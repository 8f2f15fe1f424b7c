"""Writes tests/chat/jinja_cases.json: feature cases rendered by Python Jinja2 set up like
transformers (render.make_env). Run from the repository root after editing the cases."""
import json, sys
sys.path.insert(0, 'tools/chat_goldens')
import render
env = render.make_env()
cases = {
 "WhitespaceControl": [
  ("  {% if true %}\n  x\n  {%- endif %}\n{# c #}\n  {{ 'v' }}\n{%+ if true %}a{% endif +%}\nb", {}),
  ("a  {%- if true -%}  b  {%- endif -%}  c", {}),
  ("{% for i in [1,2] %}\n  {{ i }}\n{% endfor %}\n", {}),
  ("x {{- ' y ' -}} z\n{#- comment -#}\n w", {}),
  ("{% raw %}{{ not rendered }}{% endraw %}", {}),
  ("line1\r\nline2\n", {}),
 ],
 "Expressions": [
  ("{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 10 / 4 }} {{ 2 ** -1 }}", {}),
  ("{{ 'ab' * 3 }} {{ 'a' ~ 1 ~ none }} {{ [1] + [2] }} {{ 1 < 2 < 3 }} {{ 1 == 1.0 }} {{ 'b' in 'abc' }} {{ 3 not in [1, 2] }}", {}),
  ("{{ 'yes' if x else 'no' }} {{ x or 'fallback' }} {{ x and 'never' }} {{ not x }}", {"x": False}),
  ("{{ [1, 'a', none, true, 1.5, {'k': (1, 2)}] }} {{ 1e20 }} {{ 0.1 + 0.2 }} {{ 1e-05 }} {{ 3.0 }}", {}),
  ("{{ \"it's\" }} {{ ['it\\'s', 'a\"b', 'x\\ny'] }} {{ '\\u00e9\\x41\\t|' }}", {}),
  ("{{ 'hello'[1:3] }} {{ 'hello'[::-1] }} {{ [1,2,3,4,5][::2] }} {{ [1,2,3][-2:] }} {{ 'héllo'[1] }} {{ 'héllo'|length }}", {}),
  ("{{ d.a }} {{ d['b'] }} {{ d.missing }}|{{ d.get('a') }} {{ d.get('z', 'def') }} {{ l[0] }} {{ l[-1] }} {{ l[9] }}|", {"d": {"a": 1, "b": [2]}, "l": [1, 2, 3]}),
 ],
 "Statements": [
  ("{% set x = 1 %}{% for i in range(3) %}{{ x }}{% set x = x + 1 %}{{ x }},{% endfor %}{{ x }}", {}),
  ("{% set ns = namespace(n=0) %}{% for i in range(4) %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}", {}),
  ("{% for k, v in d.items() %}{{ loop.index }}{{ k }}={{ v }}{% if not loop.last %}, {% endif %}{% endfor %}", {"d": {"b": 1, "a": 2}}),
  ("{% for x in [1,2,3,4] if x is even %}{{ x }}{{ loop.length }}{% else %}none{% endfor %}|{% for x in [] %}{% else %}empty{% endfor %}", {}),
  ("{% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 5 %}{% break %}{% endif %}{{ x }}{% endfor %}", {}),
  ("{% for x in 'ab' %}{{ loop.index0 }}{{ loop.revindex }}{{ loop.first }}{{ loop.previtem }}{{ loop.nextitem }}{{ loop.cycle('x', 'y') }};{% endfor %}", {}),
  ("{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('A') }} {{ greet('B', punct='?') }}", {}),
  ("{% macro wrap() %}[{{ caller() }}]{% endmacro %}{% call wrap() %}inner{% endcall %}", {}),
  ("{% set block %}a{{ 1 }}b{% endset %}{{ block }} {% set up | upper %}q{% endset %}{{ up }} {% filter upper %}abc{% endfilter %}", {}),
  ("{% for a, b in [(1, 2), (3, 4)] %}{{ a + b }}{% endfor %} {% set p, q = 'xy' %}{{ q }}{{ p }}", {}),
  ("{% for item in tree recursive %}{{ item.name }}{% if item.children %}({{ loop(item.children) }}){% endif %}{% endfor %}", {"tree": [{"name": "a", "children": [{"name": "b"}, {"name": "c"}]}, {"name": "d"}]}),
  ("{% generation %}gen {{ 1 }}{% endgeneration %}", {}),
 ],
 "Filters": [
  ("{{ '  x  '|trim }}|{{ 'abc'|upper }}|{{ 'ABC'|lower }}|{{ 'hello world'|title }}|{{ 'hELLO'|capitalize }}|{{ [1,2]|length }}|{{ 'x'|count }}", {}),
  ("{{ [3,1,2]|sort }} {{ ['b','A','a']|sort }} {{ [{'n': 2}, {'n': 1}]|sort(attribute='n')|map(attribute='n')|list }} {{ [1,2,1]|unique|list }} {{ [1,5,3]|max }} {{ [1,5,3]|min }} {{ [1,2,3]|sum }}", {}),
  ("{{ [1,2,3]|join(', ') }} {{ [1,2,3]|first }} {{ [1,2,3]|last }} {{ 'abc'|list }} {{ [1,2,3]|reverse|list }} {{ 'abc'|reverse }}", {}),
  ("{{ x|default('d') }} {{ ''|default('e', true) }} {{ none|default('n') }} {{ '3'|int + 1 }} {{ '2.5'|float }} {{ 'x'|int }} {{ 2.5|round }} {{ 2.567|round(2) }} {{ -3|abs }}", {}),
  ("{{ {'b': 1, 'a': 2}|dictsort }} {{ {'a': 1}|items|list }} {{ [1,2,3,4]|select('odd')|list }} {{ [1,2,3,4]|reject('odd')|list }}", {}),
  ("{{ users|selectattr('active')|map(attribute='name')|join(',') }} {{ users|rejectattr('name', 'equalto', 'a')|map(attribute='name')|list }} {{ ['a','b']|map('upper')|list }}", {"users": [{"name": "a", "active": True}, {"name": "b", "active": False}]}),
  ("{{ 'a\\nb\\n\\nc'|indent(2) }}|{{ 'a\\nb'|indent(2, true) }}|{{ 'a-b-c'|replace('-', '+') }}|{{ 'a-b-c'|replace('-', '', 1) }}", {}),
  ("{{ {'a': 1.0, 'b': [1, 'é\"\\n'], 'c': none, 'd': true}|tojson }} {{ [1, {'x': []}]|tojson(indent=2) }} {{ {'b': 1, 'a': 2}|tojson(sort_keys=true) }} {{ {'a': 1}|tojson(separators=(',', ':')) }}", {}),
  ("{{ '<a href=\"x\">&</a>'|e }} {{ 'x'|safe + '<' }} {{ '%s=%d'|format('a', 3) }} {{ 'a b  c'|wordcount }} {{ 'abc'|center(7) }}|{{ [1,2,3,4,5]|batch(2)|list }}", {}),
  ("{{ 'hello world foo bar'|truncate(12) }}|{{ '<b>x</b>  y'|striptags }}|{{ 1|string ~ 'x' }}", {}),
 ],
 "Tests": [
  ("{{ x is defined }} {{ y is undefined }} {{ n is none }} {{ 'a' is string }} {{ 1 is number }} {{ 1 is integer }} {{ 1.0 is float }} {{ true is boolean }}", {"x": 1, "n": None}),
  ("{{ {} is mapping }} {{ [] is iterable }} {{ 'a' is sequence }} {{ 3 is odd }} {{ 4 is even }} {{ 9 is divisibleby 3 }} {{ 'a' is eq 'a' }} {{ 1 is ne 2 }} {{ 1 is lt 2 }} {{ 1 is in [1] }} {{ true is true }} {{ none is not none }}", {}),
  ("{{ range is callable }} {{ 'abc' is lower }} {{ 'ABC' is upper }} {{ 'upper' is filter }} {{ 'odd' is test }}", {}),
 ],
 "StringMethods": [
  ("{{ 'a,b,c'.split(',') }} {{ 'a,b,c'.split(',', 1) }} {{ ' a  b '.split() }} {{ 'a,b,c'.rsplit(',', 1) }} {{ 'xxhixx'.strip('x') }} {{ '  y '.lstrip() }}|{{ ' y  '.rstrip() }}|", {}),
  ("{{ 'abc'.startswith('a') }} {{ 'abc'.endswith(('x', 'c')) }} {{ 'abc'.upper() }} {{ 'they\\'re here'.title() }} {{ 'aXbX'.replace('X', '-') }} {{ 'abcabc'.find('c') }} {{ 'abcabc'.count('b') }}", {}),
  ("{{ '{} and {}'.format(1, 'x') }} {{ '{0}{name}'.format(1, name=2) }} {{ '{:>5}|{:<4}|{:^5}|{:.2f}|{:03d}'.format('a', 'b', 'c', 3.14159, 7) }} {{ '-'.join(['a', 'b']) }} {{ 'a\\nb'.splitlines() }} {{ '12'.isdigit() }}", {}),
 ],
}
out = {}
for group, items in cases.items():
    res = []
    for src, ctx in items:
        try:
            res.append({"src": src, "ctx": ctx, "ok": env.from_string(src).render(**ctx)})
        except Exception as e:
            res.append({"src": src, "ctx": ctx, "error": f"{type(e).__name__}: {e}"})
    out[group] = res
json.dump(out, open('tests/chat/jinja_cases.json', 'w'), ensure_ascii=False, indent=1)
for g, r in out.items():
    for x in r:
        if 'error' in x: print(g, x)
