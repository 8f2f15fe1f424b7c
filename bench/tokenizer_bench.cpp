// Tokenizer throughput: encodes the corpus (tests/fixtures/tokenizer/corpus.jsonl, every text
// repeated `repeats` times, one document each) with add_special_tokens=false, single thread.
// tools/tokenizer_goldens/bench_hf.py measures HF `tokenizers` on the same documents; the
// checksum line must be equal for both.
//
//   tokenizer_bench <tokenizer.json> <corpus.jsonl> [repeats=200] [rounds=3]
//                   [--hf-s SECONDS] [--name NAME] [--md bench/results/tokenizer.md]
//
// --hf-s is bench_hf.py's best_s for the same tokenizer and corpus: the program then prints
// the speed ratio (HF time / ours; >= 1.0 means we are at least as fast). --md appends a
// table row (name, MB/s, HF MB/s, ratio, checksum) to the results file.
//
// CMake builds it with -DMLXCEL_BUILD_BENCH=ON (target tokenizer_bench). Built standalone (static, so it runs on a machine without the -dev packages):
//   g++ -std=c++20 -O3 -static -DFMT_HEADER_ONLY -I src src/base/error.cpp src/base/mmap.cpp
//     src/loader/gguf.cpp src/tokenizer/*.cpp bench/tokenizer_bench.cpp
//     -licuuc -licudata -lpcre2-8 -lpthread -ldl -o tokenizer_bench   (one command line)
// Results: bench/results/tokenizer.md.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tokenizer/tokenizer.h"

int main(int argc, char** argv) {
  std::vector<const char*> pos;
  double hf_s = 0;
  std::string name, md;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--hf-s") && i + 1 < argc) hf_s = std::atof(argv[++i]);
    else if (!std::strcmp(argv[i], "--name") && i + 1 < argc) name = argv[++i];
    else if (!std::strcmp(argv[i], "--md") && i + 1 < argc) md = argv[++i];
    else pos.push_back(argv[i]);
  }
  if (pos.size() < 2) {
    std::fprintf(stderr,
                 "usage: %s <tokenizer.json> <corpus.jsonl> [repeats] [rounds] [--hf-s SECONDS] [--name NAME] "
                 "[--md FILE]\n",
                 argv[0]);
    return 2;
  }
  argv = const_cast<char**>(pos.data()) - 1;  // argv[1..] = positional arguments
  argc = static_cast<int>(pos.size()) + 1;
  if (name.empty()) name = argv[1];
  int repeats = argc > 3 ? std::atoi(argv[3]) : 200;
  int rounds = argc > 4 ? std::atoi(argv[4]) : 3;
  using clock = std::chrono::steady_clock;
  auto t0 = clock::now();
  mlxcel::Tokenizer tok = mlxcel::Tokenizer::from_file(argv[1]);
  double load_s = std::chrono::duration<double>(clock::now() - t0).count();
  std::vector<std::string> docs;
  std::ifstream f(argv[2]);
  std::vector<std::string> texts;
  for (std::string line; std::getline(f, line);) {
    if (!line.empty()) texts.push_back(nlohmann::json::parse(line)["text"].get<std::string>());
  }
  for (int r = 0; r < repeats; ++r) docs.insert(docs.end(), texts.begin(), texts.end());
  size_t bytes = 0;
  for (const auto& d : docs) bytes += d.size();
  double best = 1e30;
  uint64_t n_tokens = 0, checksum = 0;
  for (int round = 0; round < rounds; ++round) {
    n_tokens = 0;
    checksum = 0;
    auto t1 = clock::now();
    for (const auto& d : docs) {
      auto ids = tok.encode(d, false);
      n_tokens += ids.size();
      for (size_t i = 0; i < ids.size(); ++i) checksum = checksum * 1000003u + static_cast<uint64_t>(ids[i]) + i;
    }
    best = std::min(best, std::chrono::duration<double>(clock::now() - t1).count());
  }
  std::printf("mlxcel load_s=%.3f docs=%zu bytes=%zu tokens=%llu best_s=%.4f MB/s=%.2f tok/s=%.0f checksum=%llu\n", load_s,
              docs.size(), bytes, static_cast<unsigned long long>(n_tokens), best, bytes / best / 1e6, n_tokens / best,
              static_cast<unsigned long long>(checksum));
  if (hf_s > 0) {
    std::printf("ratio %s: HF %.4f s / ours %.4f s = %.2fx\n", name.c_str(), hf_s, best, hf_s / best);
  }
  if (!md.empty()) {
    std::ofstream out(md, std::ios::app);
    out << "| " << name << " | " << bytes / best / 1e6 << " | " << (hf_s > 0 ? std::to_string(bytes / hf_s / 1e6) : "-")
        << " | " << (hf_s > 0 ? std::to_string(hf_s / best) : "-") << " | " << checksum << " |\n";
  }
  return 0;
}
