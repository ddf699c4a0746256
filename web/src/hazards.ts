// Hazard icons (inline SVG paths, no icon font or CDN) and colours shared by the screens.
export interface HazardLook { color: string; path: string }

export const HAZARDS: Record<string, HazardLook> = {
  fire: { color: "#ff4d4f", path: "M12 2c1 4 5 6 5 11a5 5 0 0 1-10 0c0-2 1-4 2-5 0 2 1 3 2 3 0-3-1-6 1-9z" },
  parking: { color: "#fadb14", path: "M5 3h8a5 5 0 0 1 0 10H9v8H5V3zm4 4v2h4a1 1 0 0 0 0-2H9z" },
  clutter: { color: "#fa8c16", path: "M3 9l9-5 9 5v10l-9 5-9-5V9zm9 1L6 7v2l6 3 6-3V7l-6 3z" },
  poster: { color: "#36cfc9", path: "M5 2h10l4 4v16H5V2zm3 6v2h8V8H8zm0 4v2h8v-2H8zm0 4v2h5v-2H8z" },
  // A configured state-classification scene (docs/scenes.md): a framed crop.
  scene: { color: "#9254de", path: "M3 3h7v2H5v5H3V3zm11 0h7v7h-2V5h-5V3zM3 14h2v5h5v2H3v-7zm16 0h2v7h-7v-2h5v-5z" },
};

export function hazardLook(hazard: string): HazardLook {
  return HAZARDS[hazard] ?? { color: "#8c8c8c", path: "M11 2h2v13h-2zM11 18h2v3h-2z" };
}
