// The Figma sandbox's entry point (built to dist/code.js). `__html__` is dist/ui.html, which
// Figma injects; everything else lives in logic.ts.

import { type FigmaApi, startPlugin } from "./logic";

startPlugin(figma as unknown as FigmaApi, __html__);
