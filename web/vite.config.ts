import { defineConfig } from "vite";
import vue from "@vitejs/plugin-vue";
import { fileURLToPath } from "node:url";

// The build goes into the Python package (pipeline/web/static/app), served by the ticket API under
// /static/app/; /wall and /m return its index.html.
export default defineConfig({
  base: "/static/app/",
  plugins: [vue()],
  build: {
    outDir: fileURLToPath(new URL("../pipeline/web/static/app", import.meta.url)),
    emptyOutDir: true,
    chunkSizeWarningLimit: 700,
    rollupOptions: { output: { manualChunks: { echarts: ["echarts/core", "echarts/charts", "echarts/components", "echarts/renderers"] } } },
  },
});
