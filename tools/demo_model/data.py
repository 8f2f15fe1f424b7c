"""Synthetic chat data for mlxcel's demo model (pure Python, no torch).

Every example is a dict:
  task       task name (add, sub, capital, reverse, count, spell, repeat, json,
             tool_call, tool_answer, tool_direct, plain)
  messages   chat messages (OpenAI style; the last one is the assistant answer),
             absent for plain text
  tools      list of tool JSON schemas or None
  thinking   True when the answer carries a <think> reasoning line
  prompt_messages / expected: for eval items, the messages without the answer
             and the expected assistant text (the answer after </think>)
  text       plain text (raw completion) items only

Held-out splits: arithmetic pairs used for eval never appear in training; capital
questions in eval use templates never trained on; reversal/counting eval words are
never reversed or counted in training (they appear only in the forward spelling task,
so the model knows their letters); JSON eval (template, name, age) triples never appear
in training (every name does, with other ages); tool eval questions are excluded from
training.

Reversal answers spell the word forwards and then backwards, letter by letter with
hyphens ("d-r-a-w, reversed: w-a-r-d"): with a byte-level BPE, a reversed word as one
string would tokenize into pieces unrelated to the word's own tokens, while spelled
letters are one small token each; spelling forwards first (a task trained on every word)
turns the reversal into copying those letter tokens in reverse order.
"""

import json
import random

SEED = 20251127

# ----------------------------------------------------------------------------- lists

COUNTRIES = [
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"),
    ("Portugal", "Lisbon"), ("the United Kingdom", "London"), ("Ireland", "Dublin"),
    ("the Netherlands", "Amsterdam"), ("Belgium", "Brussels"), ("Switzerland", "Bern"),
    ("Austria", "Vienna"), ("Poland", "Warsaw"), ("the Czech Republic", "Prague"),
    ("Hungary", "Budapest"), ("Greece", "Athens"), ("Sweden", "Stockholm"), ("Norway", "Oslo"),
    ("Finland", "Helsinki"), ("Denmark", "Copenhagen"), ("Iceland", "Reykjavik"),
    ("Russia", "Moscow"), ("Ukraine", "Kyiv"), ("Turkey", "Ankara"), ("Egypt", "Cairo"),
    ("Kenya", "Nairobi"), ("Nigeria", "Abuja"), ("Morocco", "Rabat"), ("Ethiopia", "Addis Ababa"),
    ("Ghana", "Accra"), ("Japan", "Tokyo"), ("China", "Beijing"), ("South Korea", "Seoul"),
    ("India", "New Delhi"), ("Pakistan", "Islamabad"), ("Thailand", "Bangkok"),
    ("Vietnam", "Hanoi"), ("Indonesia", "Jakarta"), ("the Philippines", "Manila"),
    ("Australia", "Canberra"), ("New Zealand", "Wellington"), ("Canada", "Ottawa"),
    ("the United States", "Washington"), ("Mexico", "Mexico City"), ("Brazil", "Brasilia"),
    ("Argentina", "Buenos Aires"), ("Chile", "Santiago"), ("Peru", "Lima"),
    ("Colombia", "Bogota"), ("Cuba", "Havana"), ("Iran", "Tehran"), ("Iraq", "Baghdad"),
    ("Saudi Arabia", "Riyadh"), ("Romania", "Bucharest"),
]

CAPITAL_TRAIN_TEMPLATES = [
    "What is the capital of {c}?", "What's the capital of {c}?", "Name the capital of {c}.",
    "Which city is the capital of {c}?", "Tell me the capital of {c}.", "Capital of {c}?",
    "What is the capital city of {c}?", "I'd like to know the capital of {c}.",
    "What city serves as the capital of {c}?", "Do you know the capital of {c}?",
    "Give me the capital of {c}.", "The capital of {c} is which city?",
    "Please tell me the capital city of {c}.", "Which city is {c}'s capital?",
    "Could you tell me the capital of {c}?", "What's {c}'s capital?", "Can you name the capital of {c}?",
    "Tell me {c}'s capital city.", "Which city is the capital city of {c}?", "In {c}, which city is the capital?",
    "What is the name of the capital of {c}?", "Do you know what the capital of {c} is?",
    "Name {c}'s capital.", "Which city is the seat of government of {c}?", "{c}'s capital is which city?",
    "Please name the capital of {c}.", "What do you call the capital of {c}?", "Where is {c}'s capital?",
]
CAPITAL_HELDOUT_TEMPLATES = [
    "What is {c}'s capital city?", "Can you tell me what the capital of {c} is?",
    "Where is the capital of {c}?", "Which city serves as the capital of {c}?",
    "Name the capital city of {c}, please.",
]

COMMON_WORDS = """
able about above act add after again age ago air all almost alone along also always among
and animal answer any apple area arm army art ask away baby back bad bag ball bank base
bear beat bed before begin being bell best better big bird black blood blue board boat
body bone book born both bottom box boy brain bread break bring brother brown build burn
busy buy call calm camp can car card care carry case cat catch cause cell center chair
chance change check child city class clean clear climb clock close cloud coast cold color
come common cook cool copy corn cost could count country course cover cow cross crowd cry
cup cut dance dark day dead deal dear death deep desk dinner dog door down draw dream dress
drink drive drop dry duck during dust each ear early earth east easy eat edge egg eight
empty end enemy enjoy enough enter even event ever every exact face fact fair fall family
farm fast father fear feel field fight fill final find fine finger fire first fish five
flat floor flow flower fly follow food foot force forest form forward four free fresh
friend front fruit full fun game garden gas gate gather give glad glass gold good grass
gray great green ground group grow guess guide hair half hall hand happy hard hat have head
hear heart heat heavy help here high hill hold hole home hope horse hot hour house huge
human hunt idea inch iron island job join joke jump just keep key kind king kitchen knee
know lake land large last late laugh lead learn leave left leg less letter level lie life
lift light like line lion list listen little live long look lost loud love low lucky lunch
machine main make man many map mark market matter meal mean meat meet metal middle milk mind
minute miss money month moon more morning mother mountain mouse mouth move music name
narrow nation near neck need never new next nice night nine noise north nose note nothing
now number ocean offer office often oil old once only open orange order other outside
over page paint pair paper park part party pass past path pay peace pen people pick
picture piece place plain plan plant play please point poor post power press pretty price
print prize pull push queen question quick quiet race radio rain raise reach read ready
real red rest rich ride right ring river road rock roll roof room root rope rose round
rule run safe salt same sand save say school sea season seat second see seed sell send
seven shape share sharp sheep shell ship shoe shop short show side sign silver simple
sing sister sit six size skin sky sleep slow small smell smile snow soft soil song soon
sound south space speak speed spell spring square stand star start state station stay
step stick still stone stop store storm story street strong sugar summer sun swim table
tail take talk tall teach team tell ten test thank thick thin thing think three time
tiny today tool top touch town track trade train travel tree trip true try turn twelve
two uncle under until up use valley very view village visit voice wait walk wall want
warm wash watch water wave way weak wear weather week weight west wet wheel white whole
wide wife wild wind window winter wish woman wonder wood word work world write yard year
yellow young zebra
""".split()

ONSETS = ["b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v",
          "w", "z", "br", "cr", "dr", "fl", "gr", "pl", "st", "tr", "ch", "sh", "th", "sp"]
VOWELS = ["a", "e", "i", "o", "u", "a", "e", "o", "ai", "ea", "oo", "ou"]
CODAS = ["", "", "", "", "n", "r", "s", "t", "l", "m", "nd", "st", "ck", "ng"]

NAMES = """
Alice Bob Carol David Emma Frank Grace Henry Isla Jack Karen Liam Mia Noah Olivia Paul
Quinn Rosa Sam Tina Uma Victor Wendy Xavier Yara Zoe Aaron Bella Caleb Daisy Ethan Fiona
George Hannah Ivan Julia Kevin Laura Mason Nina Oscar Piper Ryan Sara Tom Ursula Vera
Walter Alex Beth Chris Diana Eric Flora Gavin Helen Igor Jane Kyle Lena Marco Nora Owen
Paula Rita Simon Tara Umar Vince Willa Yusuf Zack Amir Bianca Carlos Dora Elena Felix
Gina Hugo Iris James Kira Leo Maya Nico Omar Pia Rafael Sofia Theo Uri Valeria Wade Ximena
Yuki Zara Anna Ben Clara Dan Eva Finn Gus Holly Ines Jonas Kate Luke Mara Ned Opal Pedro
Ruth Seth Tess Ugo Vito Will Yves Zelda Arlo Cora Dex Elsa Milo Nadia Ravi Sven Lars Ingrid
""".split()

CITIES = sorted(set([cap for _, cap in COUNTRIES] + [
    "New York", "Chicago", "Toronto", "Sydney", "Melbourne", "Barcelona", "Munich", "Milan",
    "Osaka", "Shanghai", "Mumbai", "Dubai", "Singapore", "Hong Kong", "Istanbul", "Zurich",
    "Geneva", "Lyon", "Hamburg", "Seattle", "Boston", "Denver", "Miami", "Vancouver",
    "Montreal", "Cape Town", "Lagos", "Rio de Janeiro", "Sao Paulo", "Kyoto",
]))

CURRENCIES = ["USD", "EUR", "GBP", "JPY", "CHF", "CAD", "AUD", "CNY", "INR", "SEK"]
STOCKS = ["AAPL", "MSFT", "GOOG", "AMZN", "NVDA", "TSLA", "META", "IBM", "INTC", "ORCL",
          "NFLX", "AMD", "ADBE", "CSCO", "SAP", "SONY"]
CONDITIONS = ["sunny", "cloudy", "rainy", "windy", "snowy", "foggy", "clear", "stormy"]

SYSTEM_PROMPTS = [
    "You are a helpful assistant.",
    "You are mlxcel's demo assistant. Answer briefly.",
    "You are a concise assistant. Give short, exact answers.",
    "Answer the user's question.",
]

TOOLS = {
    "get_weather": {"type": "function", "function": {
        "name": "get_weather", "description": "Get the current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}}},
    "get_time": {"type": "function", "function": {
        "name": "get_time", "description": "Get the current local time in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}}},
    "convert_currency": {"type": "function", "function": {
        "name": "convert_currency", "description": "Convert an amount between currencies.",
        "parameters": {"type": "object", "properties": {
            "amount": {"type": "number"}, "from": {"type": "string"}, "to": {"type": "string"}},
            "required": ["amount", "from", "to"]}}},
    "get_stock_price": {"type": "function", "function": {
        "name": "get_stock_price", "description": "Get the latest price of a stock.",
        "parameters": {"type": "object", "properties": {"symbol": {"type": "string"}},
                       "required": ["symbol"]}}},
}
TOOL_NAMES = list(TOOLS)

TOOL_TEMPLATES = {
    "get_weather": ["What's the weather like in {city}?", "What is the weather in {city}?",
                    "How is the weather in {city} today?", "Is it raining in {city}?",
                    "Tell me the weather in {city}.", "Check the weather in {city}, please."],
    "get_time": ["What time is it in {city}?", "What's the current time in {city}?",
                 "Tell me the local time in {city}.", "What is the time in {city} right now?"],
    "convert_currency": ["Convert {amount} {from} to {to}.", "How much is {amount} {from} in {to}?",
                         "What is {amount} {from} in {to}?", "Change {amount} {from} into {to}."],
    "get_stock_price": ["What is the stock price of {symbol}?", "How much is {symbol} trading at?",
                        "Get me the current price of {symbol} stock.", "What's {symbol} worth right now?"],
}

ADD_TEMPLATES = ["What is {a} + {b}?", "Compute {a} + {b}.", "{a} + {b} = ?", "Calculate {a} plus {b}.",
                 "What is the sum of {a} and {b}?", "What is {a} plus {b}?", "Add {a} and {b}."]
SUB_TEMPLATES = ["What is {a} - {b}?", "Compute {a} - {b}.", "{a} - {b} = ?", "Calculate {a} minus {b}.",
                 "What is {a} minus {b}?", "Subtract {b} from {a}.", "What is the difference {a} - {b}?"]
REVERSE_TEMPLATES = ["Spell '{w}' backwards.", "What is '{w}' spelled backwards?",
                     "Spell the word '{w}' backwards.", "How do you spell '{w}' backwards?",
                     "Spell '{w}' in reverse, letter by letter.", "Spell the word '{w}' in reverse order."]
COUNT_TEMPLATES = ["How many letters are in '{w}'?", "How many letters does the word '{w}' have?",
                   "Count the letters in '{w}'.", "What is the length of the word '{w}'?",
                   "How many letters are in the word '{w}'?"]
SPELL_TEMPLATES = ["Spell '{w}' letter by letter.", "Spell the word '{w}'.", "How do you spell '{w}'?"]
REPEAT_TEMPLATES = ["Repeat '{p}' {n} times.", "Say '{p}' {n} times.", "Write '{p}' {n} times.",
                    "Please repeat '{p}' {n} times."]
JSON_TEMPLATES = ["Convert to JSON: name={x} age={n}", "Turn this into JSON: name={x} age={n}",
                  "name={x} age={n}\nConvert this to a JSON object.", "Format as JSON: name={x} age={n}",
                  "Write name={x} age={n} as JSON."]


def make_words():
    """About 2,200 distinct lowercase words: the common list plus syllable words."""
    rng = random.Random(SEED + 1)
    words = list(dict.fromkeys(w for w in COMMON_WORDS if w.isalpha()))
    seen = set(words)
    while len(words) < 2200:
        n = rng.choice([2, 2, 3])
        w = "".join(rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS) for _ in range(n))
        if 4 <= len(w) <= 10 and w not in seen:
            seen.add(w)
            words.append(w)
    rng.shuffle(words)
    n_hold = len(words) * 15 // 100
    return sorted(words[n_hold:]), sorted(words[:n_hold])


TRAIN_WORDS, HELDOUT_WORDS = make_words()
_name_rng = random.Random(SEED + 2)
_names = sorted(set(NAMES))
_name_rng.shuffle(_names)
HELDOUT_NAMES = sorted(_names[:len(_names) // 5])
TRAIN_NAMES = sorted(_names[len(_names) // 5:])
ALL_WORDS = sorted(TRAIN_WORDS + HELDOUT_WORDS)
ALL_NAMES = sorted(_names)


# ----------------------------------------------------------------------------- helpers

def _vary(rng, q):
    """Small surface variations of a question (train only)."""
    r = rng.random()
    if r < 0.08 and q and q[0].isupper():
        q = q[0].lower() + q[1:]
    elif r < 0.14 and q.endswith("?"):
        q = q[:-1]
    return q


def _user_turn(rng, question, system=None, tools=None):
    msgs = []
    if system:
        msgs.append({"role": "system", "content": system})
    msgs.append({"role": "user", "content": question})
    return msgs


def _spelled(w, sep):
    return sep.join(w)


# each task builder returns (question, answer, reasoning, extra) where extra may hold
# tool info; `key` identifies the item for held-out exclusion.

def task_add(rng, split):
    a, b = rng.randrange(1000), rng.randrange(1000)
    t = rng.choice(ADD_TEMPLATES)
    return dict(key=("add", a, b), q=t.format(a=a, b=b), a=str(a + b),
                r="{} + {} = {}.".format(a, b, a + b))


def task_sub(rng, split):
    a, b = rng.randrange(1000), rng.randrange(1000)
    if rng.random() < 0.75 and b > a:
        a, b = b, a
    t = rng.choice(SUB_TEMPLATES)
    return dict(key=("sub", a, b), q=t.format(a=a, b=b), a=str(a - b),
                r="{} - {} = {}.".format(a, b, a - b))


def task_capital(rng, split):
    c, cap = rng.choice(COUNTRIES)
    t = rng.choice(CAPITAL_HELDOUT_TEMPLATES if split == "eval" else CAPITAL_TRAIN_TEMPLATES)
    q = t.format(c=c)
    q = q[0].upper() + q[1:]
    return dict(key=("capital", q), q=q, a=cap,
                r="The capital of {} is {}.".format(c, cap))


def task_reverse(rng, split):
    w = rng.choice(HELDOUT_WORDS if split == "eval" else TRAIN_WORDS)
    t = rng.choice(REVERSE_TEMPLATES)
    rev = w[::-1]
    # The answer spells the word forwards first (a task trained on every word), then
    # reverses that letter sequence: copying single-letter tokens in reverse order is
    # an easy attention pattern; recalling a held-out word's letters backwards is not.
    return dict(key=("reverse", t, w), q=t.format(w=w), a="{}, reversed: {}".format(_spelled(w, "-"), _spelled(rev, "-")),
                r="The letters of '{}' are {}. In reverse order: {}.".format(
                    w, _spelled(w, " "), _spelled(rev, " ")))


def task_count(rng, split):
    w = rng.choice(HELDOUT_WORDS if split == "eval" else TRAIN_WORDS)
    t = rng.choice(COUNT_TEMPLATES)
    return dict(key=("count", t, w), q=t.format(w=w), a=str(len(w)),
                r="'{}' is spelled {}, which is {} letters.".format(w, _spelled(w, "-"), len(w)))


def task_spell(rng, split):
    w = rng.choice(ALL_WORDS)
    t = rng.choice(SPELL_TEMPLATES)
    return dict(key=("spell", t, w), q=t.format(w=w), a=_spelled(w, "-"),
                r="The word '{}' has {} letters.".format(w, len(w)))


def task_repeat(rng, split):
    k = rng.choice([1, 1, 2])
    p = " ".join(rng.choice(TRAIN_WORDS[:]) for _ in range(k))
    n = rng.randrange(2, 6)
    t = rng.choice(REPEAT_TEMPLATES)
    return dict(key=("repeat", t, p, n), q=t.format(p=p, n=n), a=" ".join([p] * n),
                r="I need to write '{}' {} times.".format(p, n))


def task_json(rng, split):
    x = rng.choice(ALL_NAMES)
    n = rng.randrange(1, 100)
    t = rng.choice(JSON_TEMPLATES)
    return dict(key=("json", x, n), q=t.format(x=x, n=n),
                a=json.dumps({"name": x, "age": n}),
                r="The name is {} and the age is {}.".format(x, n))


def _tool_args(rng, name):
    if name in ("get_weather", "get_time"):
        return {"city": rng.choice(CITIES)}
    if name == "convert_currency":
        f, t = rng.sample(CURRENCIES, 2)
        return {"amount": rng.randrange(1, 1000), "from": f, "to": t}
    return {"symbol": rng.choice(STOCKS)}


def _tool_result(rng, name, args):
    """(tool message content, final answer)"""
    if name == "get_weather":
        t, cond = rng.randrange(-5, 36), rng.choice(CONDITIONS)
        return (json.dumps({"city": args["city"], "temperature": t, "condition": cond}),
                "It is {} degrees and {} in {}.".format(t, cond, args["city"]))
    if name == "get_time":
        hm = "{:02d}:{:02d}".format(rng.randrange(24), rng.randrange(60))
        return (json.dumps({"city": args["city"], "time": hm}), "It is {} in {}.".format(hm, args["city"]))
    if name == "convert_currency":
        res = "{}.{:02d}".format(rng.randrange(1, 2000), rng.randrange(100))
        content = '{{"amount": {}, "from": "{}", "to": "{}", "result": {}}}'.format(
            args["amount"], args["from"], args["to"], res)
        return content, "{} {} is {} {}.".format(args["amount"], args["from"], res, args["to"])
    price = "{}.{:02d}".format(rng.randrange(5, 900), rng.randrange(100))
    return (json.dumps({"symbol": args["symbol"], "price": price}),
            "{} is trading at {} USD.".format(args["symbol"], price))


def _offered_tools(rng, needed):
    others = [n for n in TOOL_NAMES if n != needed]
    k = rng.choice([0, 1, 1, 2, 2])
    names = ([needed] if needed else []) + rng.sample(others, min(k, len(others)))
    if not names:
        names = rng.sample(TOOL_NAMES, 1)
    rng.shuffle(names)
    return [TOOLS[n] for n in names]


def _tool_question(rng, name, args):
    t = rng.choice(TOOL_TEMPLATES[name])
    return t.format(**args)


def tool_call_text(name, args):
    return '<tool_call>\n{"name": "' + name + '", "arguments": ' + json.dumps(args, ensure_ascii=False) + '}\n</tool_call>'


BASE_TASKS = {"add": task_add, "sub": task_sub, "capital": task_capital, "reverse": task_reverse,
              "count": task_count, "spell": task_spell, "repeat": task_repeat, "json": task_json}


def _system(rng, split):
    r = rng.random()
    if r < 0.5:
        return None
    return rng.choice(SYSTEM_PROMPTS)


def make_chat(rng, task, split, thinking):
    """One example (dict) of a chat task, or None when it should be redrawn."""
    system = _system(rng, split)
    if task in BASE_TASKS:
        it = BASE_TASKS[task](rng, split)
        q = it["q"] if split == "eval" else _vary(rng, it["q"])
        msgs = _user_turn(rng, q, system)
        return dict(task=task, key=it["key"], tools=None, thinking=thinking, prompt_messages=msgs,
                    answer_msgs=[{"role": "assistant", "content": it["a"],
                                  "reasoning_content": it["r"] if thinking else ""}],
                    expected=it["a"])
    if task == "tool_direct":
        sub = rng.choice(["add", "sub", "capital", "json"])
        it = BASE_TASKS[sub](rng, split)
        tools = _offered_tools(rng, None)
        msgs = _user_turn(rng, it["q"], system)
        return dict(task=task, key=it["key"], tools=tools, thinking=thinking, prompt_messages=msgs,
                    answer_msgs=[{"role": "assistant", "content": it["a"],
                                  "reasoning_content": it["r"] if thinking else ""}],
                    expected=it["a"])
    name = rng.choice(TOOL_NAMES)
    args = _tool_args(rng, name)
    q = _tool_question(rng, name, args)
    tools = _offered_tools(rng, name)
    reason = "The user asks something {} can answer, so I call it.".format(name)
    call_msg = {"role": "assistant", "content": "", "reasoning_content": reason if thinking else "",
                "tool_calls": [{"type": "function", "function": {"name": name, "arguments": args}}]}
    msgs = _user_turn(rng, q if split == "eval" else _vary(rng, q), system)
    if task == "tool_call":
        return dict(task=task, key=("tool", q), tools=tools, thinking=thinking, prompt_messages=msgs,
                    answer_msgs=[call_msg], expected=tool_call_text(name, args),
                    expected_call={"name": name, "arguments": args})
    assert task == "tool_answer"
    content, answer = _tool_result(rng, name, args)
    msgs = msgs + [call_msg, {"role": "tool", "content": content}]
    reason2 = "The tool returned the answer."
    return dict(task=task, key=("tool_answer", q, content), tools=tools, thinking=thinking,
                prompt_messages=msgs,
                answer_msgs=[{"role": "assistant", "content": answer,
                              "reasoning_content": reason2 if thinking else ""}],
                expected=answer)


PLAIN_KINDS = ["capital", "count_seq", "sum", "alphabet", "story"]


def make_plain(rng, split):
    kind = rng.choice(PLAIN_KINDS if split != "eval" else ["capital", "count_seq"])
    if kind == "capital":
        c, cap = rng.choice(COUNTRIES)
        c = c[0].upper() + c[1:]
        return dict(task="plain", key=None, prompt="The capital of {} is".format(c), expected=" {}.".format(cap))
    if kind == "count_seq":
        k = rng.randrange(1, 500)
        nums = [str(k + i) for i in range(8)]
        return dict(task="plain", key=None, prompt="Counting from {}: {}, {},".format(k, nums[0], nums[1]),
                    expected=" " + ", ".join(nums[2:]) + ".")
    if kind == "sum":
        a, b = rng.randrange(1000), rng.randrange(1000)
        return dict(task="plain", key=("add", a, b), prompt="{} plus {} equals".format(a, b),
                    expected=" {}.".format(a + b))
    if kind == "alphabet":
        s = rng.randrange(0, 20)
        letters = "abcdefghijklmnopqrstuvwxyz"[s:s + rng.randrange(5, 7)]
        return dict(task="plain", key=None, prompt="The letters after {} are".format(letters[0]),
                    expected=" " + " ".join(letters[1:]) + ".")
    x = rng.choice(TRAIN_NAMES)
    city = rng.choice(CITIES)
    w = rng.choice(TRAIN_WORDS)
    return dict(task="plain", key=None, prompt="{} lives in {}.".format(x, city),
                expected=" {} likes the word '{}'. {} is happy.".format(x, w, x))


TRAIN_MIX = [  # (task, weight)
    ("add", 0.10), ("sub", 0.10), ("capital", 0.10), ("reverse", 0.18), ("count", 0.05),
    ("spell", 0.10), ("repeat", 0.05), ("json", 0.08), ("tool_call", 0.09), ("tool_answer", 0.07),
    ("tool_direct", 0.03), ("plain", 0.05), ("multi", 0.04),
]
EVAL_TASKS = ["add", "sub", "capital", "reverse", "count", "repeat", "json", "tool_call",
              "tool_answer", "think", "plain"]
THINK_EVAL_TASKS = ["add", "sub", "capital", "reverse", "count", "json", "tool_call"]
THINK_FRACTION = 0.25


def make_eval_sets(n_per_task):
    """Held-out eval items per task, deterministic. Returns (dict task->list, set of keys)."""
    rng = random.Random(SEED + 100)
    sets, keys = {}, set()
    for task in EVAL_TASKS:
        items, seen = [], set()
        tries = 0
        while len(items) < n_per_task and tries < n_per_task * 200:
            tries += 1
            if task == "plain":
                ex = make_plain(rng, "eval")
                k = ("plain", ex["prompt"])
            elif task == "think":
                ex = make_chat(rng, rng.choice(THINK_EVAL_TASKS), "eval", True)
                ex["base_task"] = ex["task"]
                ex["task"] = "think"
                k = ex["key"]
            else:
                ex = make_chat(rng, task, "eval", False)
                k = ex["key"]
            if k in seen:
                continue
            seen.add(k)
            items.append(ex)
            if ex.get("key") is not None:
                keys.add(ex["key"])
        sets[task] = items
    return sets, keys


def make_train(n, exclude, seed=SEED):
    rng = random.Random(seed)
    tasks = [t for t, _ in TRAIN_MIX]
    weights = [w for _, w in TRAIN_MIX]
    out = []
    while len(out) < n:
        task = rng.choices(tasks, weights)[0]
        if task == "plain":
            ex = make_plain(rng, "train")
            if ex["key"] in exclude:
                continue
            out.append(dict(task="plain", text=ex["prompt"] + ex["expected"]))
            continue
        thinking = rng.random() < THINK_FRACTION
        if task == "multi":
            first = make_chat(rng, rng.choice(["add", "sub", "capital", "reverse", "json", "count"]),
                              "train", False)
            second = make_chat(rng, rng.choice(["add", "sub", "capital", "reverse", "json", "count",
                                                "repeat"]), "train", thinking)
            if first["key"] in exclude or second["key"] in exclude:
                continue
            hist = first["prompt_messages"] + [{"role": "assistant", "content": first["expected"]}]
            user2 = [m for m in second["prompt_messages"] if m["role"] != "system"]
            second["prompt_messages"] = hist + user2
            second["task"] = "multi"
            out.append(second)
            continue
        ex = make_chat(rng, task, "train", thinking)
        if ex["key"] in exclude:
            continue
        out.append(ex)
    return out


def bpe_corpus(examples):
    """Texts to train the BPE on: message contents, tool schemas, template boilerplate.
    The word-list and name tasks (reverse, count, spell, repeat, json) and plain texts
    quoting words are left out, so that training words and names are not merged into
    whole-word tokens that the held-out words and names would never get: both then
    tokenize into fragments of the same kind."""
    texts = [
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n",
        "For each function call, return a json object with function name and arguments within "
        "<tool_call></tool_call> XML tags:\n",
        "system\n", "user\n", "assistant\n", "\n<tool_response>\n", "\n</tool_response>",
    ]
    texts += [json.dumps(t, ensure_ascii=False) for t in TOOLS.values()]
    texts += list(SYSTEM_PROMPTS)
    # Random syllable text (independent of the train/held-out word split) gives the BPE
    # syllable-sized merges; every word then tokenizes into pieces of the same kind.
    rng = random.Random(SEED + 3)
    for _ in range(12000):
        ws = []
        for _ in range(rng.randrange(3, 10)):
            n = rng.choice([1, 2, 2, 3])
            ws.append("".join(rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS) for _ in range(n)))
        texts.append(" ".join(ws))
    texts += list(COMMON_WORDS)
    skip = ("reverse", "count", "spell", "repeat", "json")
    for ex in examples:
        if ex["task"] == "plain":
            if "'" not in ex["text"]:
                texts.append(ex["text"])
            continue
        key = ex.get("key")
        if ex["task"] in skip or (key and key[0] in skip):
            continue
        for m in ex["prompt_messages"] + ex["answer_msgs"]:
            c = m.get("content")
            if c and "'" not in c and "name=" not in c and '"name"' not in c:
                texts.append(c)
            if m.get("tool_calls"):
                for tc in m["tool_calls"]:
                    texts.append(tool_call_text(tc["function"]["name"], tc["function"]["arguments"]))
            if m.get("reasoning_content"):
                texts.append(m["reasoning_content"])
    return texts
