// The wire schema (bfstream/static/protocol.json) for the Node tests: a small validator of the
// JSON Schema keywords the schema uses, so that every frame the fake server sends to the client,
// and every frame the client sends, is checked against the same document as the server's tests.
import { readFileSync } from "node:fs";

const SCHEMA = JSON.parse(readFileSync(new URL("../../bfstream/static/protocol.json", import.meta.url), "utf8"));
const KNOWN = new Set([
  "$schema", "$id", "title", "description", "$defs", "$ref", "type", "const", "enum", "required", "properties",
  "propertyNames", "additionalProperties", "oneOf", "if", "then", "items", "minItems", "maxItems", "minimum",
  "maximum", "minLength", "maxLength", "pattern",
]);

function typeOf(value) {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  if (typeof value === "number") return Number.isInteger(value) ? "integer" : "number";
  return typeof value;
}

function resolve(ref) {
  return ref.replace(/^#\//, "").split("/").reduce((node, part) => node[part], SCHEMA);
}

/** Problems of `value` against `schema` (empty when it holds), each with its path. */
export function problems(value, schema, path = "") {
  if (schema === true) return [];
  const found = [];
  const add = (why) => found.push(`${path || "(frame)"}: ${why}`);
  for (const keyword of Object.keys(schema)) if (!KNOWN.has(keyword)) throw new Error(`unsupported keyword ${keyword}`);
  if (schema.$ref) found.push(...problems(value, resolve(schema.$ref), path));
  const type = typeOf(value);
  if (schema.type) {
    const allowed = [schema.type].flat();
    if (!allowed.includes(type) && !(type === "integer" && allowed.includes("number"))) add(`is ${type}, not ${allowed}`);
  }
  if ("const" in schema && JSON.stringify(value) !== JSON.stringify(schema.const)) add(`is not ${JSON.stringify(schema.const)}`);
  if (schema.enum && !schema.enum.some((v) => JSON.stringify(v) === JSON.stringify(value))) add(`is not one of ${schema.enum}`);
  if (type === "string") {
    if (schema.minLength !== undefined && [...value].length < schema.minLength) add("is too short");
    if (schema.maxLength !== undefined && [...value].length > schema.maxLength) add("is too long");
    if (schema.pattern && !new RegExp(schema.pattern, "u").test(value)) add(`does not match ${schema.pattern}`);
  }
  if (type === "integer" || type === "number") {
    if (schema.minimum !== undefined && value < schema.minimum) add(`is below ${schema.minimum}`);
    if (schema.maximum !== undefined && value > schema.maximum) add(`is above ${schema.maximum}`);
  }
  if (type === "array") {
    if (schema.minItems !== undefined && value.length < schema.minItems) add("has too few items");
    if (schema.maxItems !== undefined && value.length > schema.maxItems) add("has too many items");
    if (schema.items) value.forEach((item, i) => found.push(...problems(item, schema.items, `${path}/${i}`)));
  }
  if (type === "object") {
    for (const name of schema.required ?? []) if (!(name in value)) add(`lacks ${name}`);
    for (const [name, child] of Object.entries(value)) {
      if (schema.properties && name in schema.properties) found.push(...problems(child, schema.properties[name], `${path}/${name}`));
      else if (schema.additionalProperties === false) add(`has no field ${name}`);
      if (schema.propertyNames) found.push(...problems(name, schema.propertyNames, `${path}/${name} (name)`));
    }
  }
  if (schema.oneOf) {
    const matching = schema.oneOf.filter((option) => problems(value, option, path).length === 0).length;
    if (matching !== 1) add(`matches ${matching} of the ${schema.oneOf.length} forms, not one`);
  }
  if (schema.if && problems(value, schema.if, path).length === 0 && schema.then) found.push(...problems(value, schema.then, path));
  return found;
}

function check(frame, definition) {
  const found = problems(frame, { $ref: `#/$defs/${definition}` });
  if (found.length) throw new Error(`a ${definition} outside the wire schema: ${JSON.stringify(frame)}\n${found.join("\n")}`);
  return frame;
}

export const checkServerFrame = (frame) => check(frame, "serverFrame");
export const checkClientFrame = (frame) => check(frame, "clientFrame");
