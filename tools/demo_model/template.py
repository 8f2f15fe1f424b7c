"""The demo model's ChatML chat template (Qwen-like) and a local renderer for tests.

Features: system message; tools listed as JSON inside <tools></tools> in the system turn
with the <tool_call> instructions; assistant tool_calls rendered as
<tool_call>\\n{"name": ..., "arguments": ...}\\n</tool_call>; role "tool" messages
rendered as <tool_response> blocks inside a user turn; assistant turns after the last
user query carry a <think>\\n...\\n</think>\\n\\n block (empty when there is no
reasoning_content); add_generation_prompt with enable_thinking=false ends the prompt with
"<think>\\n\\n</think>\\n\\n" like Qwen 3.
"""

CHAT_TEMPLATE = (
    "{%- if tools %}\n"
    "{{- '<|im_start|>system\\n' }}\n"
    "{%- if messages[0].role == 'system' %}\n"
    "{{- messages[0].content + '\\n\\n' }}\n"
    "{%- endif %}\n"
    "{{- '# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' }}\n"
    "{%- for tool in tools %}\n"
    "{{- '\\n' }}\n"
    "{{- tool | tojson }}\n"
    "{%- endfor %}\n"
    "{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n"
    "{\"name\": <function-name>, \"arguments\": <args-json-object>}\\n</tool_call><|im_end|>\\n' }}\n"
    "{%- elif messages[0].role == 'system' %}\n"
    "{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}\n"
    "{%- endif %}\n"
    "{%- set ns = namespace(last_query=-1) %}\n"
    "{%- for message in messages %}\n"
    "{%- if message.role == 'user' %}\n"
    "{%- set ns.last_query = loop.index0 %}\n"
    "{%- endif %}\n"
    "{%- endfor %}\n"
    "{%- for message in messages %}\n"
    "{%- if message.content is string %}\n"
    "{%- set content = message.content %}\n"
    "{%- else %}\n"
    "{%- set content = '' %}\n"
    "{%- endif %}\n"
    "{%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}\n"
    "{{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>\\n' }}\n"
    "{%- elif message.role == 'assistant' %}\n"
    "{%- if message.reasoning_content is string %}\n"
    "{%- set reasoning = message.reasoning_content %}\n"
    "{%- else %}\n"
    "{%- set reasoning = '' %}\n"
    "{%- endif %}\n"
    "{%- if '</think>' in content %}\n"
    "{%- set reasoning = content.split('</think>')[0].split('<think>')[-1] %}\n"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') %}\n"
    "{%- endif %}\n"
    "{{- '<|im_start|>assistant\\n' }}\n"
    "{%- if loop.index0 > ns.last_query %}\n"
    "{{- '<think>\\n' + reasoning.strip('\\n') + '\\n</think>\\n\\n' }}\n"
    "{%- endif %}\n"
    "{{- content }}\n"
    "{%- if message.tool_calls %}\n"
    "{%- for tool_call in message.tool_calls %}\n"
    "{%- if (loop.first and content) or (not loop.first) %}\n"
    "{{- '\\n' }}\n"
    "{%- endif %}\n"
    "{%- if tool_call.function %}\n"
    "{%- set tool_call = tool_call.function %}\n"
    "{%- endif %}\n"
    "{{- '<tool_call>\\n{\"name\": \"' + tool_call.name + '\", \"arguments\": ' }}\n"
    "{%- if tool_call.arguments is string %}\n"
    "{{- tool_call.arguments }}\n"
    "{%- else %}\n"
    "{{- tool_call.arguments | tojson }}\n"
    "{%- endif %}\n"
    "{{- '}\\n</tool_call>' }}\n"
    "{%- endfor %}\n"
    "{%- endif %}\n"
    "{{- '<|im_end|>\\n' }}\n"
    "{%- elif message.role == 'tool' %}\n"
    "{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}\n"
    "{{- '<|im_start|>user' }}\n"
    "{%- endif %}\n"
    "{{- '\\n<tool_response>\\n' + content + '\\n</tool_response>' }}\n"
    "{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}\n"
    "{{- '<|im_end|>\\n' }}\n"
    "{%- endif %}\n"
    "{%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "{{- '<|im_start|>assistant\\n' }}\n"
    "{%- if enable_thinking is defined and enable_thinking is false %}\n"
    "{{- '<think>\\n\\n</think>\\n\\n' }}\n"
    "{%- endif %}\n"
    "{%- endif %}"
)


def local_renderer():
    """A jinja2 environment configured like transformers' chat-template renderer
    (trim_blocks, lstrip_blocks, loopcontrols, tojson without HTML escaping, keys kept
    in order). Used only for tests without transformers."""
    import json

    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    tmpl = env.from_string(CHAT_TEMPLATE)

    def render(messages, tools=None, add_generation_prompt=False, **kw):
        return tmpl.render(messages=messages, tools=tools, add_generation_prompt=add_generation_prompt,
                           **kw)

    return render
