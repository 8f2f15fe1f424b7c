// Wire formats: request bodies (OpenAI and llama-server) -> typed parameters, and the
// OpenAI-shaped error body {"error": {"message", "type", "param", "code"}} with the
// HTTP status for each mlxcel::Error kind. Unknown fields are ignored; a known field of
// the wrong type, or a feature mlxcel does not implement, is a 400 naming the field.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/error.h"
#include "engine/sampler.h"
#include "server/http.h"

namespace mlxcel::server {

using json = nlohmann::json;
using ordered_json = nlohmann::ordered_json;

// An error with an HTTP status and OpenAI fields; thrown by parsers and routes.
class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string type, const std::string& message, std::string param = {}, std::string code = {})
      : std::runtime_error(message), status(status), type(std::move(type)), param(std::move(param)),
        code(std::move(code)) {}
  int status;
  std::string type, param, code;
  int retry_after_s = 0;  // > 0: a Retry-After header
};

// 400 invalid_request_error naming `param`.
[[noreturn]] void bad_param(const std::string& param, const std::string& message);
// 400 for a feature that is not implemented (never silently ignored).
[[noreturn]] void not_supported(const std::string& param, const std::string& message);

HttpResponse error_response(const ApiError& e);
// invalid_request 400, not_found 404, unsupported 400, resource_exhausted 503
// (Retry-After), internal 500.
HttpResponse error_response(const Error& e);
HttpResponse json_response(const json& body, int status = 200);

// Parses a request body: a JSON object no deeper than max_depth. Malformed JSON,
// invalid UTF-8 and a non-object are 400s.
json parse_body(const std::string& body, int max_depth);

// Server-side defaults for what a request leaves out.
struct RequestDefaults {
  SamplingParams sampling;
  bool seed_set = false;
  int n_predict = -1;
};

// Generation parameters common to every completion endpoint.
struct GenParams {
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  int n = 1;
  int max_tokens = -1;         // -1: until the context is full
  SamplingParams sampling;
  std::vector<std::string> stop;
  std::string model;
  bool ignore_eos = false;  // llama-server's ignore_eos: the model's end tokens do not stop it
};

enum class Flavor { openai_chat, openai_completion, llama_completion };

GenParams parse_gen_params(const json& body, const RequestDefaults& d, Flavor flavor);

// Chat request extras.
struct ChatParams {
  ordered_json messages;        // normalized: text content parts joined
  ordered_json tools;           // null when none / tool_choice "none"
  ordered_json template_kwargs = ordered_json::object();
  bool add_generation_prompt = true;
};
ChatParams parse_chat_params(const json& body);

// A prompt: text (string) or token ids (llama-server accepts both).
struct PromptInput {
  std::string text;
  std::vector<int> ids;
  bool is_ids = false;
};
PromptInput parse_prompt(const json& body, const char* field);

// Small field readers (throw bad_param on a wrong type).
std::optional<bool> get_bool(const json& body, const char* field);
std::optional<std::string> get_string(const json& body, const char* field);

std::string random_id(const std::string& prefix);  // "chatcmpl-<24 chars>"
int64_t unix_time();

}  // namespace mlxcel::server
