// `mlxcel convert`: quantize a Hugging Face checkpoint into the MLX layout, or write it
// as one GGUF file (--to gguf --quant f16|q8_0|q4_0|q4_1|q5_0|q5_1) in llama.cpp's layout.
#include <memory>
#include <string>

#include "base/error.h"
#include "cli/commands.h"
#include "loader/gguf_writer.h"
#include "models/convert.h"

namespace mlxcel::cli {

void add_convert_command(CLI::App& app) {
  struct Args {
    std::string model, out, scale_dtype = "f16", to = "mlx", gguf_quant = "f16";
    bool quantize = false;
    int bits = 4, group_size = 64;
  };
  auto a = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("convert", "Convert a checkpoint (MLX affine quantization)");
  cmd->add_option("-m,--model", a->model, "Source checkpoint folder")->required();
  cmd->add_option("-o,--output", a->out, "Output folder")->required();
  cmd->add_flag("-q,--quantize", a->quantize, "Quantize Linear and Embedding weights");
  cmd->add_option("--q-bits", a->bits, "Bits per weight")->check(CLI::IsMember({2, 3, 4, 5, 6, 8}));
  cmd->add_option("--q-group-size", a->group_size, "Group size")->check(CLI::IsMember({32, 64, 128}));
  cmd->add_option("--scale-dtype", a->scale_dtype, "dtype of scales and biases")
      ->check(CLI::IsMember({"f16", "bf16", "f32"}));
  cmd->add_option("--to", a->to, "Output format: mlx (a folder) or gguf (one file, llama.cpp layout)")
      ->check(CLI::IsMember({"mlx", "gguf"}));
  cmd->add_option("--quant", a->gguf_quant, "GGUF tensor type of the matrices (with --to gguf)")
      ->check(CLI::IsMember({"f32", "f16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1"}));
  cmd->callback([a] {
    if (a->to == "gguf") {
      GgufConvertOptions g;
      g.quant = parse_gguf_quant(a->gguf_quant);
      convert_to_gguf(a->model, a->out, g);
      return;
    }
    ConvertOptions o;
    o.quantize = a->quantize;
    o.spec.bits = a->bits;
    o.spec.group_size = a->group_size;
    o.scale_dtype = parse_dtype(a->scale_dtype);
    if (!o.quantize) invalid("convert: nothing to do (pass --quantize)");
    convert_checkpoint(a->model, a->out, o);
  });
}

}  // namespace mlxcel::cli
