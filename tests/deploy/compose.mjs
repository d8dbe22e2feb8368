// Checks docker-compose.yml without a Docker engine: against the compose-spec JSON schema (the official
// compose-spec.json as the npm package dclint ships it, schemas/compose.schema.json), then against the rules this
// repository keeps for it. Run by tests/api/deploy.rs. Input by env:
//   COMPOSE_SCHEMA_PREFIX  the npm prefix where dclint is installed (scripts/services.sh: .services/specs)
//   COMPOSE_FILE           the compose file
// Prints "all checks passed"; otherwise what failed, and exits 1.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const prefix = path.resolve(env('COMPOSE_SCHEMA_PREFIX'));
// ESM ignores NODE_PATH: load dclint's own YAML parser and JSON-schema validator from where it was installed.
const dclint = createRequire(path.join(prefix, 'node_modules', 'dclint', 'package.json'));
const YAML = dclint('yaml');
const Ajv = dclint('ajv').default;
const schema = JSON.parse(fs.readFileSync(path.join(prefix, 'node_modules', 'dclint', 'schemas', 'compose.schema.json'), 'utf8'));
assert.equal(schema.title, 'Compose Specification');

const compose = YAML.parse(fs.readFileSync(env('COMPOSE_FILE'), 'utf8'));
const ajv = new Ajv({ allErrors: true, strict: false, validateSchema: false });
const validate = ajv.compile(schema);
assert.ok(validate(compose), `the compose file breaks the compose-spec schema: ${JSON.stringify(validate.errors, null, 2)}`);
// The schema is not a rubber stamp: a misspelt key and a wrong type fail.
assert.ok(!validate({ ...compose, servcies: {} }), 'an unknown top-level key passes');
assert.ok(!validate({ services: { x: { image: 'a:1', ports: 'not a list' } } }), 'ports as a string passes');

const services = Object.entries(compose.services);
const failures = [];
for (const [name, service] of services) {
  if (service.image !== undefined) {
    const tag = service.image.includes(':') ? service.image.split(':').pop() : '';
    if (tag === '' || tag === 'latest') failures.push(`${name}: image ${service.image} is not pinned to a version`);
  } else if (service.build === undefined) {
    failures.push(`${name}: neither image nor build`);
  }
  if (!service.healthcheck || !Array.isArray(service.healthcheck.test)) failures.push(`${name}: no healthcheck`);
  const dependsOn = service.depends_on ?? {};
  if (Array.isArray(dependsOn)) {
    if (dependsOn.length > 0) failures.push(`${name}: depends_on without a condition`);
  } else {
    for (const [dependency, { condition }] of Object.entries(dependsOn)) {
      if (condition !== 'service_healthy') failures.push(`${name}: depends on ${dependency} with ${condition}, not service_healthy`);
    }
  }
}
// State that must survive a restart lives in named volumes.
const named = new Set(Object.keys(compose.volumes ?? {}));
const volumeAt = (service, target) =>
  (compose.services[service].volumes ?? []).some((v) => {
    const [source, mount] = (typeof v === 'string' ? v : `${v.source}:${v.target}`).split(':');
    return named.has(source) && mount === target;
  });
const dynamodb = compose.services.dynamodb;
const dbPath = dynamodb.command[dynamodb.command.indexOf('-dbPath') + 1];
if (dynamodb.command.includes('-inMemory')) failures.push('dynamodb: -inMemory loses every table on restart');
if (!dynamodb.command.includes('-sharedDb')) failures.push('dynamodb: no -sharedDb');
if (!dynamodb.command.includes('-dbPath') || !volumeAt('dynamodb', dbPath)) failures.push('dynamodb: -dbPath not on a named volume');
if (!volumeAt('meilisearch', '/meili_data')) failures.push('meilisearch: /meili_data not on a named volume');
const dataDir = compose.services.orderflow.environment.ORDERFLOW__DATA_DIR;
if (!volumeAt('orderflow', dataDir)) failures.push(`orderflow: data_dir ${dataDir} not on a named volume`);
assert.deepEqual(failures, []);
console.log(`checked ${services.length} services`);
console.log('all checks passed');
