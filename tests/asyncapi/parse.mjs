// Parses orderflow's AsyncAPI document with the AsyncAPI project's own parser (npm @asyncapi/parser, which also
// runs its Spectral rule set), then checks real events against the documented payloads. Run by
// tests/api/asyncapi.rs. Input by env:
//   ASYNCAPI_PARSER_PREFIX  the npm prefix where @asyncapi/parser is installed (scripts/services.sh: .services/specs)
//   ASYNCAPI_DOCUMENT       the document (the body of GET /asyncapi.json)
//   ASYNCAPI_EVENTS         a JSON array of CloudEvents the service really produced
// Prints one line per channel, `message <channel> <name>` per message, then "all checks passed"; otherwise prints
// what failed and exits 1.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
// ESM ignores NODE_PATH: load the parser (and the ajv it depends on) from the prefix it was installed in.
const prefix = createRequire(path.join(path.resolve(env('ASYNCAPI_PARSER_PREFIX')), 'package.json'));
const { Parser, DiagnosticSeverity } = prefix('@asyncapi/parser');
const parserRequire = createRequire(prefix.resolve('@asyncapi/parser'));
const Ajv = parserRequire('ajv').default;
const addFormats = parserRequire('ajv-formats').default;

const text = fs.readFileSync(env('ASYNCAPI_DOCUMENT'), 'utf8');
const { document, diagnostics } = await new Parser().parse(text);
for (const d of diagnostics) {
  console.log(`diagnostic ${d.severity} ${d.code} at ${d.path.join('.')}: ${d.message}`);
}
const errors = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error);
assert.equal(errors.length, 0, 'the parser reports errors');
assert.ok(document, 'the parser returned no document');
// Warnings are failures too: the document should pass the project's recommended rules as they are.
const warnings = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Warning);
assert.equal(warnings.length, 0, 'the parser reports warnings');
assert.equal(document.version(), '3.0.0');

// The parser is not a rubber stamp: an operation without its `action` is an error.
const broken = JSON.parse(text);
delete Object.values(broken.operations)[0].action;
const { diagnostics: brokenDiagnostics } = await new Parser().parse(JSON.stringify(broken));
assert.ok(brokenDiagnostics.some((d) => d.severity === DiagnosticSeverity.Error), 'a broken document parses cleanly');

const payloads = new Map();
for (const channel of document.channels()) {
  console.log(`channel ${channel.id()} ${channel.address()} ${channel.servers().all().map((s) => s.protocol()).join(',')}`);
  for (const message of channel.messages()) {
    console.log(`message ${channel.id()} ${message.name()}`);
    payloads.set(message.name(), message.payload().json());
  }
}

// Real events, as the bridge publishes them, validate against their type's payload schema.
const ajv = new Ajv({ allErrors: true, strict: false });
addFormats(ajv);
const events = JSON.parse(fs.readFileSync(env('ASYNCAPI_EVENTS'), 'utf8'));
assert.ok(events.length > 0, 'no events to check');
for (const event of events) {
  const schema = payloads.get(event.type);
  assert.ok(schema, `no message documents ${event.type}`);
  const validate = ajv.compile(schema);
  assert.ok(validate(event), `${event.type} does not match its payload: ${JSON.stringify(validate.errors)}\n${JSON.stringify(event)}`);
  // The schema is not a rubber stamp: an undocumented data field, or data of another type, fails.
  assert.ok(!validate({ ...event, data: { ...event.data, undocumented: 1 } }), `${event.type} accepts extra data`);
  assert.ok(!validate({ ...event, type: 'orders.Unknown' }), `${event.type} accepts another type`);
}
console.log(`checked ${events.length} events`);
console.log('all checks passed');
