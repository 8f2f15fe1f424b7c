#!/usr/bin/env python3
"""Writes tests/fixtures/tokenizer/corpus.jsonl: the texts the tokenizer goldens cover.

Run once from the repository root; the output is committed. One JSON object per line:
{"name": "...", "text": "..."}.
"""
import json
import os

CASES = [
    ("empty", ""),
    ("space", " "),
    ("spaces", "   "),
    ("english", "Hello world! This is a test of the tokenizer."),
    ("english_lead_space", " Hello world"),
    ("contractions", "I'm sure you'll see they've done it, isn't it? He'd've said 'no'. I'M SHE'LL WE'D"),
    ("numbers", "1 12 123 1234 12345 3.14159 1,000,000 0x1F -42 2024-01-01 1e10"),
    ("code_python", "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n\nprint([fib(i) for i in range(10)])\n"),
    ("code_cpp", "#include <vector>\nint main() {\n\tstd::vector<int> v{1, 2, 3};\n\tfor (auto& x : v) { x *= 2; }\n\treturn 0; // done\n}\n"),
    ("json", '{"key": "value", "list": [1, 2, 3], "nested": {"a": null, "b": true}}'),
    ("whitespace_runs", "a  b   c    d\t\te\n\nf\n\n\n g \r\n h  \n  i     "),
    ("tabs_newlines", "\t\t\n\n\t \n \t  \n"),
    ("trailing_spaces", "end with spaces   "),
    ("cjk_chinese", "我们今天去公园散步，天气非常好。机器学习是人工智能的一个分支。"),
    ("cjk_japanese", "こんにちは、世界！カタカナとひらがなと漢字を混ぜます。"),
    ("cjk_korean", "안녕하세요 세계! 한국어 문장을 토큰화합니다."),
    ("emoji", "I love pizza 🍕🍕 and cats 🐱! 😀😃😄"),
    ("emoji_zwj", "Family: 👨‍👩‍👧‍👦 flag: 🏳️‍🌈 skin tone: 👍🏽 keycap: 1️⃣"),
    ("combining_marks", "e\u0301 a\u0300 n\u0303 Ame\u0301lie cafe\u0301 \u00e9 \u1e9b\u0323 o\u0308\u0304"),
    ("nfc_nfd_mix", "Ångström Å \u212b ﬁ ﬃ ① ＡＢＣ ½ ²"),
    ("arabic", "مرحبا بالعالم! هذه جملة عربية للاختبار."),
    ("hindi", "नमस्ते दुनिया! यह एक परीक्षण वाक्य है।"),
    ("mixed_scripts", "English, Русский, Ελληνικά, עברית, ไทย, Tiếng Việt."),
    ("special_qwen", "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"),
    ("special_llama3", "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>"),
    ("special_llama2", "<s>[INST] Hello there [/INST] Hi!</s>"),
    ("special_gemma", "<bos><start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\n"),
    ("special_deepseek", "<｜begin▁of▁sentence｜>Hello<｜User｜>Hi<｜Assistant｜>"),
    ("special_gptoss", "<|start|>user<|message|>Hello<|end|><|endoftext|>"),
    ("special_adjacent_text", "abc<|endoftext|>def <|endoftext|> ghi"),
    ("long_word", "Pneumonoultramicroscopicsilicovolcanoconiosis " + "a" * 300 + " " + "ab" * 150),
    ("long_repeated", "the " * 100),
    ("punctuation", "Hello... What?! (yes) [no] {maybe} <tag> \"quoted\" 'single' -- — – … ¿¡"),
    ("urls", "Visit https://example.com/path?query=1&b=2#frag or mail me@example.org"),
    ("byte_fallback_rare", "\U0001d54f\U0001d560\U0001d565 \u2603 \u16a0\u16a1 \U00010348 \U0001f9ec"),
    ("control_chars", "a\u0000b\u0001c\u007fd\u00a0e\u200bf\u2028g\ufeffh"),
    ("sentencepiece_marker", "▁already ▁has ▁markers▁"),
    ("mixed_case_digits", "GPT4o vs. Llama3.1-8B-Instruct and Qwen2.5-7B; x86_64 ARMv8"),
    ("math", "∑_{i=1}^{n} x_i² ≤ √(a² + b²) ≠ ∞ ± 1"),
    ("multiline_prose", "First paragraph.\n\nSecond paragraph with  double  spaces.\n   Indented line.\n"),
]


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = os.path.join(here, "..", "..", "tests", "fixtures", "tokenizer", "corpus.jsonl")
    with open(out, "w", encoding="utf-8") as f:
        for name, text in CASES:
            f.write(json.dumps({"name": name, "text": text}, ensure_ascii=False) + "\n")
    print(f"wrote {len(CASES)} cases to {os.path.normpath(out)}")


if __name__ == "__main__":
    main()
