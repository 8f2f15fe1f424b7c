// The official OpenAI JS SDK against a running mlxcel-server (run_openai_sdk_test.sh
// starts one). Checks that a real client parses our responses, streams and errors.
//   node openai_sdk_test.mjs http://127.0.0.1:PORT/v1 KEY
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const [baseURL, apiKey] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
const messages = [{ role: 'user', content: 'hello world' }];

const models = await client.models.list();
assert.ok(models.data.length === 1 && typeof models.data[0].id === 'string');

const chat = await client.chat.completions.create({ model: 'm', messages, max_tokens: 8, seed: 1 });
assert.equal(chat.object, 'chat.completion');
assert.equal(chat.choices[0].message.role, 'assistant');
assert.ok(chat.usage.completion_tokens <= 8);

const stream = await client.chat.completions.create({
  model: 'm', messages, max_tokens: 6, stream: true, stream_options: { include_usage: true },
});
let ids = new Set(), sawRole = false, usage = null, finish = null;
for await (const chunk of stream) {
  ids.add(chunk.id);
  if (chunk.choices.length && chunk.choices[0].delta.role === 'assistant') sawRole = true;
  if (chunk.choices.length && chunk.choices[0].finish_reason) finish = chunk.choices[0].finish_reason;
  if (chunk.usage) usage = chunk.usage;
}
assert.equal(ids.size, 1);
assert.ok(sawRole && usage && finish);

const comp = await client.completions.create({ model: 'm', prompt: 'hello', max_tokens: 4, n: 2 });
assert.equal(comp.choices.length, 2);

await assert.rejects(
  client.chat.completions.create({ model: 'm', messages, temperature: 'hot' }),
  (e) => e.status === 400 && e.error?.type === 'invalid_request_error' && e.param === 'temperature');
await assert.rejects(
  client.chat.completions.create({ model: 'm', messages, logprobs: true }),
  (e) => e.status === 400 && e.code === 'not_supported');
const bad = new OpenAI({ baseURL, apiKey: 'wrong-key', maxRetries: 0 });
await assert.rejects(bad.models.list(), (e) => e.status === 401 && e.error?.type === 'authentication_error');
console.log('openai sdk: all checks passed');
