import assert from "node:assert/strict";
import { test } from "node:test";
import { MIN_BOX, generationSide, moveBox, newLine, parseLayoutJson, resizeBox, scaleLayout } from "../web/src/layout";

test("moving keeps the box whole on the canvas", () => {
  assert.deepEqual(moveBox([10, 10, 110, 50], 20.4, -5, 512, 512), [30, 5, 130, 45]);
  assert.deepEqual(moveBox([10, 10, 110, 50], -100, -100, 512, 512), [0, 0, 100, 40]);
  assert.deepEqual(moveBox([10, 10, 110, 50], 1000, 1000, 512, 512), [412, 472, 512, 512]);
});

test("resizing moves only the dragged sides and keeps a minimum size", () => {
  assert.deepEqual(resizeBox([10, 10, 110, 50], "se", 20, 10, 512, 512), [10, 10, 130, 60]);
  assert.deepEqual(resizeBox([10, 10, 110, 50], "nw", -20, -100, 512, 512), [0, 0, 110, 50]);
  assert.deepEqual(resizeBox([10, 10, 110, 50], "e", -500, 0, 512, 512), [10, 10, 10 + MIN_BOX, 50]);
  assert.deepEqual(resizeBox([10, 10, 110, 50], "n", 0, 500, 512, 512), [10, 50 - MIN_BOX, 110, 50]);
  assert.deepEqual(resizeBox([10, 10, 110, 50], "s", 0, 900, 512, 512), [10, 10, 110, 512]);
});

test("a new line goes into free space", () => {
  const layout = { width: 512, height: 512, lines: [{ text: "A", bbox: [0, 0, 512, 200] as [number, number, number, number] }] };
  const l = newLine(layout);
  assert.ok(l.bbox[1] >= 200, `new line at ${l.bbox} overlaps the first`);
  assert.ok(l.bbox[3] <= 512);
});

test("layout JSON import accepts plans and names what is wrong", () => {
  const plan = { width: 512, height: 256, planner: "typographic", seed: 3, lines: [{ text: "Hi", bbox: [1, 2, 30, 40], color: "#ff0000", align: "left" }] };
  assert.deepEqual(parseLayoutJson(JSON.stringify(plan)), {
    width: 512,
    height: 256,
    lines: [{ text: "Hi", bbox: [1, 2, 30, 40], color: "#ff0000", align: "left" }],
  });
  const bad: [string, RegExp][] = [
    ["{", /not JSON/],
    ["[]", /JSON object/],
    ['{"width":0,"height":5}', /width must be a whole number from 1 to 2048/],
    ['{"width":5,"height":5,"lines":[{"text":"a","bbox":[0,0,1]}]}', /lines\[0\]\.bbox must be/],
    ['{"width":5,"height":5,"lines":[{"text":"a","bbox":[3,0,1,4]}]}', /lines\[0\]\.bbox has no area/],
    ['{"width":5,"height":5,"lines":[{"bbox":[0,0,1,1]}]}', /lines\[0\]\.text must be a string/],
    ['{"width":5,"height":5,"lines":[{"text":"a","bbox":[0,0,1,1],"color":"red"}]}', /color must be #rrggbb/],
  ];
  for (const [text, message] of bad) assert.throws(() => parseLayoutJson(text), message, text);
});

test("scaling and generation sides", () => {
  const l = scaleLayout({ width: 100, height: 50, lines: [{ text: "a", bbox: [10, 10, 20, 20] }] }, 200, 200);
  assert.deepEqual(l.lines[0].bbox, [20, 40, 40, 80]);
  assert.equal(generationSide(300), 304);
  assert.equal(generationSide(10), 64);
  assert.equal(generationSide(5000), 2048);
});
