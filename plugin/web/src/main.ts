// The web page served at `/`: the designer against the server that serves it.

import { startDesigner } from "./app";
import { browserHistoryStore } from "./history";

const root = document.getElementById("app");
if (root) {
  startDesigner(root, { kind: "web", server: "", history: browserHistoryStore() });
}
