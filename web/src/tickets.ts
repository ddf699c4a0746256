// The open tickets in the user's scope, loaded once and then kept current by the live stream.
import { computed, onUnmounted, ref } from "vue";
import { api, ApiError, gridNames, isOpen, OPEN_STATUSES, type Camera, type GridNode, type Ticket } from "./api";
import { connectLive, type TicketEvent } from "./live";

export function useTickets(onExpired: () => void, onEvent: (e: TicketEvent) => void = () => {}) {
  const byId = ref(new Map<number, Ticket>());
  const places = ref(new Map<string, string>());
  const cameraNames = ref(new Map<string, string>());
  const now = ref(Date.now());

  const load = async () => {
    try {
      const page = await api<{ items: Ticket[] }>(`/tickets?status=${OPEN_STATUSES.join(",")}&limit=200`);
      byId.value = new Map(page.items.map((t) => [t.id, t]));
      places.value = gridNames(await api<GridNode[]>("/grid"));
      const cams = await api<Camera[]>("/cameras");
      cameraNames.value = new Map(cams.filter((c) => c.name).map((c) => [c.id, c.name as string]));
    } catch (e) {
      if (e instanceof ApiError && e.status === 401) onExpired();
    }
  };
  const live = connectLive((e) => {
    const next = new Map(byId.value);
    if (isOpen(e.ticket)) next.set(e.ticket.id, e.ticket); else next.delete(e.ticket.id);
    byId.value = next;
    onEvent(e);
  }, onExpired, load);
  const clock = window.setInterval(() => { now.value = Date.now(); }, 1000);
  onUnmounted(() => { live.stop(); window.clearInterval(clock); });
  void load();

  const newestFirst = computed(() => [...byId.value.values()].sort(
    (a, b) => Date.parse(b.opened_at) - Date.parse(a.opened_at) || b.id - a.id));
  // "grid names · camera name": the configured camera name when the alert carried none.
  const place = (t: Ticket) => `${places.value.get(t.grid_path.join("/")) ?? t.grid_path.join(" / ")} · ${
    t.camera_name ?? cameraNames.value.get(t.camera_id) ?? t.camera_id}`;
  const ageSeconds = (t: Ticket) => (now.value - Date.parse(t.opened_at)) / 1000;
  const dueSeconds = (t: Ticket) => (t.due_at ? (Date.parse(t.due_at) - now.value) / 1000 : null);
  const nodeName = (path: string) => places.value.get(path) ?? path;
  return { tickets: byId, newestFirst, live: live.state, place, nodeName, ageSeconds, dueSeconds, now, reload: load };
}
