// The live connection: an EventSource on GET /events that reconnects by itself (Last-Event-ID resume is
// the browser's) and reports online / offline. The server sends a `ping` event every heartbeat; no message
// for WATCHDOG_MS means the connection is dead even if the socket looks open.
import { ref } from "vue";
import type { Ticket } from "./api";

export interface TicketEvent {
  type: "created" | "moved" | "escalated" | "camera_check" | "updated";
  kind: string; event_id: number; ticket_id: number; ts: string; to_status: string | null; actor: string | null;
  ticket: Ticket;
}

export type LiveState = "connecting" | "online" | "offline";

const WATCHDOG_MS = 40_000;
const RECONNECT_MS = 3_000;

export function connectLive(onTicket: (e: TicketEvent) => void, onLogout: () => void,
                            onReconnect: () => void) {
  const state = ref<LiveState>("connecting");
  let source: EventSource | null = null;
  let lastId: string | null = null;
  let watchdog = 0;
  let stopped = false;

  const arm = () => {
    window.clearTimeout(watchdog);
    watchdog = window.setTimeout(() => { state.value = "offline"; reopen(); }, WATCHDOG_MS);
  };
  const open = () => {
    const url = lastId ? `/events?after=${encodeURIComponent(lastId)}` : "/events";
    const es = new EventSource(url);
    source = es;
    es.onopen = () => {
      const wasOffline = state.value === "offline";
      state.value = "online";
      arm();
      if (wasOffline && !lastId) onReconnect();
    };
    es.addEventListener("ticket", (m) => {
      const msg = m as MessageEvent<string>;
      lastId = msg.lastEventId || lastId;
      state.value = "online";
      arm();
      onTicket(JSON.parse(msg.data) as TicketEvent);
    });
    es.addEventListener("ping", () => { state.value = "online"; arm(); });
    es.addEventListener("logout", () => { stop(); onLogout(); });
    es.onerror = () => {
      state.value = "offline";
      if (es.readyState === EventSource.CLOSED) window.setTimeout(reopen, RECONNECT_MS);  // e.g. a 5xx
    };
  };
  const reopen = () => { if (stopped) return; source?.close(); open(); };
  const stop = () => { stopped = true; window.clearTimeout(watchdog); source?.close(); };
  open();
  return { state, stop };
}
