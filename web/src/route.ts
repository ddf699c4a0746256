// Hash routes inside a screen: #/ticket/<id> (ticket detail), #/zones/<camera id> (zone editor), #/codes
// (report codes) and #/plan (site plan editor). The server serves /wall and /m only, so a deep link needs no
// server route; the API decides what it shows.
import { ref } from "vue";

export type Route = { name: "home" } | { name: "ticket"; id: number } | { name: "zones"; camera: string }
  | { name: "codes" } | { name: "plan" };

function parse(hash: string): Route {
  const m = /^#\/ticket\/(\d+)$/.exec(hash);
  if (m) return { name: "ticket", id: Number(m[1]) };
  const z = /^#\/zones\/(.+)$/.exec(hash);
  if (z) return { name: "zones", camera: decodeURIComponent(z[1]) };
  if (hash === "#/codes") return { name: "codes" };
  if (hash === "#/plan") return { name: "plan" };
  return { name: "home" };
}

export const route = ref<Route>(parse(location.hash));
window.addEventListener("hashchange", () => { route.value = parse(location.hash); });

export function go(hash: string): void {
  if (location.hash === hash) return;
  location.hash = hash;
}

export function home(): void {
  history.pushState(null, "", location.pathname + location.search);
  route.value = { name: "home" };
}
