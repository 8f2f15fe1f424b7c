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
  client.chat.completions.create({ model: 'm', messages, response_format: { type: 'json_object' } }),
  (e) => e.status === 400 && e.code === 'not_supported');

// logprobs / top_logprobs and logit_bias (chat and legacy completions).
const lp = await client.chat.completions.create({
  model: 'm', messages, max_tokens: 4, logprobs: true, top_logprobs: 2, logit_bias: { '5': -100 },
});
const content = lp.choices[0].logprobs.content;
assert.equal(content.length, lp.usage.completion_tokens);
for (const t of content) {
  assert.ok(typeof t.token === 'string' && t.logprob <= 0 && Array.isArray(t.bytes));
  assert.equal(t.top_logprobs.length, 2);
  assert.ok(t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob);
}
const clp = await client.completions.create({ model: 'm', prompt: 'hello', max_tokens: 3, logprobs: 2 });
assert.equal(clp.choices[0].logprobs.tokens.length, clp.usage.completion_tokens);
assert.equal(clp.choices[0].logprobs.text_offset[0], 0);
await assert.rejects(
  client.chat.completions.create({ model: 'm', messages, logit_bias: { '5': 500 } }),
  (e) => e.status === 400 && e.param === 'logit_bias');
await assert.rejects(
  client.chat.completions.create({ model: 'm', messages, logprobs: true, top_logprobs: 21 }),
  (e) => e.status === 400 && e.param === 'top_logprobs');

// Responses: create, retrieve, previous_response_id, streaming (raw events and the
// SDK's accumulating stream helper), delete.
const input = 'What is 667 + 911?';
const r1 = await client.responses.create({ model: 'm', input, max_output_tokens: 40, instructions: 'Answer briefly.' });
assert.equal(r1.object, 'response');
assert.ok(['completed', 'incomplete'].includes(r1.status));
assert.equal(typeof r1.output_text, 'string');
const got = await client.responses.retrieve(r1.id);
assert.equal(got.id, r1.id);
assert.deepEqual(got.output, r1.output);
const r2 = await client.responses.create({ model: 'm', input: 'And 1 + 1?', previous_response_id: r1.id, max_output_tokens: 8 });
assert.equal(r2.previous_response_id, r1.id);
assert.ok(r2.usage.input_tokens > r1.usage.input_tokens);
const rs = await client.responses.create({ model: 'm', input, max_output_tokens: 40, stream: true });
const types = [];
let deltas = '', doneText = null;
for await (const ev of rs) {
  types.push(ev.type);
  if (ev.type === 'response.output_text.delta') deltas += ev.delta;
  if (ev.type === 'response.output_text.done') doneText = ev.text;
}
assert.equal(types[0], 'response.created');
assert.ok(['response.completed', 'response.incomplete'].includes(types.at(-1)), types.join(','));
for (const t of ['response.output_item.added', 'response.output_item.done'])
  assert.ok(types.includes(t), t);
if (doneText !== null) assert.equal(deltas, doneText);
const helper = client.responses.stream({ model: 'm', input, max_output_tokens: 40 });
let helperDeltas = '';
helper.on('response.output_text.delta', (e) => { helperDeltas += e.delta; });
const final = await helper.finalResponse();
assert.ok(final.id.startsWith('resp_'));
assert.equal(final.output_text, helperDeltas);
await client.responses.delete(r1.id);
await assert.rejects(client.responses.retrieve(r1.id), (e) => e.status === 404);
await assert.rejects(
  client.responses.create({ model: 'm', input: 'x', previous_response_id: r1.id }),
  (e) => e.status === 400 && e.param === 'previous_response_id');
const bad = new OpenAI({ baseURL, apiKey: 'wrong-key', maxRetries: 0 });
await assert.rejects(bad.models.list(), (e) => e.status === 401 && e.error?.type === 'authentication_error');
console.log('openai sdk: all checks passed');
