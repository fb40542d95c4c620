import assert from "node:assert/strict";
import { test } from "node:test";
import { SseParser } from "../web/src/sse";

// The stream as letterpress-api's axum Sse writes it: id, event, data, blank line.
const STREAM =
  ": keep-alive\n\nid: 1\nevent: queued\ndata: {}\n\nid: 2\r\nevent: step\r\ndata: {\"step\":1,\r\ndata: \"steps\":4}\r\n\r\n" +
  "id: 3\nevent: succeeded\ndata: {\"output\":{\"seed\":7}}\n\n";

test("parses messages whatever the chunking", () => {
  for (const size of [1, 2, 3, 7, STREAM.length]) {
    const p = new SseParser();
    const got = [];
    for (let i = 0; i < STREAM.length; i += size) got.push(...p.push(STREAM.slice(i, i + size)));
    assert.deepEqual(
      got.map((m) => [m.id, m.event, m.data]),
      [
        ["1", "queued", "{}"],
        ["2", "step", '{"step":1,\n"steps":4}'],
        ["3", "succeeded", '{"output":{"seed":7}}'],
      ],
      `chunk size ${size}`,
    );
  }
});

test("a message without event is 'message'; an unterminated one waits", () => {
  const p = new SseParser();
  assert.deepEqual(p.push("data:x\n"), []);
  assert.deepEqual(p.push("\n"), [{ id: "", event: "message", data: "x" }]);
  assert.deepEqual(p.push("event: a\n\n"), [], "event without data is dropped");
});
