#!/usr/bin/env python3
"""Reference token ids from the Hugging Face `tokenizers` library, for tests/tokenizer.

Usage: make_goldens.py --models DIR --corpus corpus.jsonl --out OUTDIR [--train]

DIR holds one folder per tokenizer, each with tokenizer.json (or tokenizer.json.gz).
For every corpus text and every tokenizer, writes
  ids          = encode(text, add_special_tokens=False).ids
  ids_special  = encode(text, add_special_tokens=True).ids
  decode       = decode(ids, skip_special_tokens=False)
  decode_skip  = decode(ids_special, skip_special_tokens=True)
into OUTDIR/goldens.json. With --train it also trains small WordPiece, Unigram and BPE
tokenizers on the corpus (to cover model/normalizer/pre-tokenizer kinds that the downloaded
tokenizers do not use), saves them as OUTDIR/trained_<name>.json and adds their goldens.
"""
import argparse
import gzip
import json
import os
import sys
import time
import traceback

import tokenizers
from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, normalizers,
                        pre_tokenizers, processors, trainers)


def load_corpus(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def goldens_for(tok, corpus):
    cases = []
    for c in corpus:
        text = c["text"]
        ids = tok.encode(text, add_special_tokens=False).ids
        ids_special = tok.encode(text, add_special_tokens=True).ids
        cases.append({
            "name": c["name"],
            "ids": ids,
            "ids_special": ids_special,
            "decode": tok.decode(ids, skip_special_tokens=False),
            "decode_skip": tok.decode(ids_special, skip_special_tokens=True),
        })
    return cases


def training_texts(corpus):
    texts = [c["text"] for c in corpus]
    return texts * 20


def train_wordpiece(corpus):
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                strip_accents=None, lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    trainer = trainers.WordPieceTrainer(vocab_size=600, special_tokens=special)
    tok.train_from_iterator(training_texts(corpus), trainer)
    tok.post_processor = processors.BertProcessing(("[SEP]", tok.token_to_id("[SEP]")),
                                                   ("[CLS]", tok.token_to_id("[CLS]")))
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    tok.add_special_tokens([AddedToken("[MASK]", lstrip=True, rstrip=False, normalized=False)])
    tok.add_tokens([AddedToken("hello", single_word=True, normalized=True)])
    return tok


def train_unigram(corpus):
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(),
                                           normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first",
                                                 split=True)
    trainer = trainers.UnigramTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"],
                                      unk_token="<unk>", max_piece_length=8)
    tok.train_from_iterator(training_texts(corpus), trainer)
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first", split=True)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> $B:1 </s>:1",
        special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))])
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, rstrip=True, normalized=False)])
    return tok


def train_bpe_misc(corpus):
    tok = Tokenizer(models.BPE(unk_token="[UNK]", end_of_word_suffix="</w>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.StripAccents(),
                                           normalizers.Lowercase(), normalizers.Strip()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Whitespace(), pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.Punctuation(behavior="isolated")])
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=["[UNK]", "<s>", "</s>"],
                                  end_of_word_suffix="</w>")
    tok.train_from_iterator(training_texts(corpus), trainer)
    tok.decoder = decoders.BPEDecoder(suffix="</w>")
    tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")),
                                                      ("<s>", tok.token_to_id("<s>")))
    return tok


def train_bpe_split(corpus):
    tok = Tokenizer(models.BPE(continuing_subword_prefix="##"))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(),
        pre_tokenizers.Split(Regex("[0-9]"), behavior="merged_with_next"),
        pre_tokenizers.Split(Regex("[A-Z]"), behavior="merged_with_previous", invert=True),
        pre_tokenizers.Split("-", behavior="contiguous"),
        pre_tokenizers.Digits(individual_digits=False),
        pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)])
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<|end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  continuing_subword_prefix="##")
    tok.train_from_iterator(training_texts(corpus), trainer)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="$A <|end|>", pair="$A <|end|> $B:1 <|end|>:1",
                                      special_tokens=[("<|end|>", tok.token_to_id("<|end|>"))])])
    return tok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--train", action="store_true")
    args = ap.parse_args()
    corpus = load_corpus(args.corpus)
    result = {"tokenizers_version": tokenizers.__version__, "corpus_size": len(corpus),
              "tokenizers": {}}
    for name in sorted(os.listdir(args.models)):
        folder = os.path.join(args.models, name)
        path = os.path.join(folder, "tokenizer.json")
        try:
            if os.path.exists(path + ".gz"):
                with gzip.open(path + ".gz", "rt", encoding="utf-8") as f:
                    tok = Tokenizer.from_str(f.read())
            else:
                tok = Tokenizer.from_file(path)
            t0 = time.time()
            result["tokenizers"][name] = goldens_for(tok, corpus)
            print(f"{name}: {len(corpus)} cases in {time.time() - t0:.2f}s", flush=True)
        except Exception:
            traceback.print_exc()
    if args.train:
        for name, fn in [("wordpiece", train_wordpiece), ("unigram", train_unigram),
                         ("bpe_misc", train_bpe_misc), ("bpe_split", train_bpe_split)]:
            try:
                tok = fn(corpus)
                tok.save(os.path.join(args.out, f"trained_{name}.json"))
                result["tokenizers"]["trained_" + name] = goldens_for(tok, corpus)
                print(f"trained_{name}: ok, vocab {tok.get_vocab_size()}", flush=True)
            except Exception:
                traceback.print_exc()
    with open(os.path.join(args.out, "goldens.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, ensure_ascii=False, separators=(",", ":"))
    print("done", flush=True)


if __name__ == "__main__":
    sys.exit(main())
