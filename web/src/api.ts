// Calls of the ticket API (same origin; the session is the HttpOnly cookie set by POST /auth/login).

export interface Me { username: string; role: string; scopes: string[] }

export interface Ticket {
  id: number; incident_id: string; hazard: string; severity: number; status: string; allowed_next: string[];
  title: string; camera_id: string; camera_name: string | null; grid_path: string[]; opened_at: string;
  updated_at: string; evidence: { snapshot: string; clip: string }; assignee: string | null; note: string | null;
  due_at: string | null; due_stage: string | null; overdue: boolean; closed_at: string | null;
  boxes?: Box[]; details?: Record<string, unknown>; zone_id?: string | null; resolved_at?: string | null;
  escalation_level?: number; reopen_count?: number; confidence?: number;
}

/** A detection box of the alert, normalised 0..1 of the image. */
export interface Box { x1: number; y1: number; x2: number; y2: number; label?: string; confidence?: number }

export interface TicketEventRow {
  id: number; kind: string; from_status: string | null; to_status: string | null; actor: string | null;
  note: string | null; ts: string; payload: Record<string, unknown> | null;
}

export interface TicketDetail extends Ticket { events: TicketEventRow[] }

export interface Attachment { id: number; kind: string; sha256: string; uploaded_by: string | null; uploaded_at: string; url: string }

export interface CameraCheck {
  check_id: string; requested_at: string; outcome: string | null; result_at: string | null;
  snapshot_url: string | null; detail: string | null;
}

export interface Patrol { username: string; display_name: string | null; open_tickets: number }

export interface NodeCounts { path: string; open: number; overdue: number }

export interface DayStats { day: string; opened: number; closed: number; false_alarms: number; closure_rate: number | null }

/** A zone as in the site YAML (pipeline/config.py ZoneConfig); other fields are kept as they came. */
export interface Zone {
  id: string; name?: string | null; kind: string; polygon: [number, number][]; hazards: string[];
  [other: string]: unknown;
}

export interface Camera {
  id: string; name: string | null; grid_path: string[]; enabled: boolean;
  health: { state: string; last_frame_ts: number | null; last_error: string | null } | null;
}

export interface GroupStats {
  key: string; tickets: number; closed: number; open: number; false_alarms: number;
  closure_rate: number | null; on_time_closure_rate: number | null; false_alarm_share: number | null;
  median_close_seconds: number | null;
}

export interface GridNode {
  code: string; name: string; path: string[]; level?: string; active_tickets?: number; children: GridNode[];
}

export class ApiError extends Error {
  constructor(public status: number, message: string, public body: unknown = null) { super(message); }
}

export async function api<T>(path: string, init: RequestInit = {}): Promise<T> {
  const r = await fetch(path, { credentials: "same-origin", ...init });
  if (!r.ok) {
    let detail = r.statusText;
    let body: unknown = null;
    try {
      body = await r.json();
      const d = (body as { detail?: unknown }).detail;
      detail = typeof d === "string" ? d
        : d && typeof d === "object" && "reason" in d && (d as { reason: unknown }).reason ? String((d as { reason: unknown }).reason)
        : JSON.stringify(d);
    } catch { /* not JSON */ }
    throw new ApiError(r.status, detail, body);
  }
  return (r.status === 204 ? undefined : await r.json()) as T;
}

export function postJson<T>(path: string, body: unknown): Promise<T> {
  return api<T>(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
}

export function putJson<T>(path: string, body: unknown): Promise<T> {
  return api<T>(path, { method: "PUT", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
}

export const OPEN_STATUSES = ["received", "verified", "dispatched", "in_progress", "resolved", "checked"];

export function isOpen(t: Ticket): boolean { return OPEN_STATUSES.includes(t.status); }

/** Grid code path -> "name / name / ..." from GET /grid. */
export function gridNames(nodes: GridNode[]): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (ns: GridNode[], names: string[]) => {
    for (const n of ns) {
      const here = [...names, n.name];
      out.set(n.path.join("/"), here.join(" / "));
      walk(n.children, here);
    }
  };
  walk(nodes, []);
  return out;
}

/** Whether a ticket on `path` (codes) lies at or below the grid node `node` ("T1/D1"; "" = everything). */
export function underNode(path: string[], node: string): boolean {
  const p = path.join("/");
  return !node || p === node || p.startsWith(node + "/");
}

/** The moves `me` may make on `t`, as the server's role table (pipeline/tickets/roles.py MOVERS) allows. */
export function movesFor(me: Me, t: Ticket): string[] {
  if (me.role === "admin" || me.role === "dispatcher") return t.allowed_next;
  if (me.role !== "patrol" || t.assignee !== me.username) return [];
  const patrol: Record<string, string> = { dispatched: "in_progress", in_progress: "resolved" };
  return t.allowed_next.filter((to) => patrol[t.status] === to);
}

/** A resident report code (一楼一码), as GET /report-codes lists it. */
export interface ReportCode {
  id: number; grid_path: string[]; place: string; enabled: boolean; url: string; created_at: string;
  created_by: string | null; disabled_at: string | null; reports: number;
}

export function patchJson<T>(path: string, body: unknown): Promise<T> {
  return api<T>(path, { method: "PATCH", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
}

/** A camera pin on a site plan, x and y normalised 0..1 of the image. */
export interface Pin { camera_id: string; x: number; y: number }

export interface SitePlan {
  id: number; grid_path: string[]; width: number; height: number; size_bytes: number; sha256: string;
  image_url: string; uploaded_at: string; uploaded_by: string | null; pins: Pin[];
}

/** The plan to show for the grid node `node` ("" = everything): the deepest plan at or above it, else the
 * whole site's, else (when the node has none above it) the first plan below it. */
export function planFor(plans: SitePlan[], node: string): SitePlan | null {
  const path = (p: SitePlan) => p.grid_path.join("/");
  const above = plans.filter((p) => underNode(node ? node.split("/") : [], path(p)))
    .sort((a, b) => b.grid_path.length - a.grid_path.length);
  return above[0] ?? plans.find((p) => underNode(p.grid_path, node)) ?? null;
}

/** Every cell (level 4) of GET /grid: path and "name / name / ..." names. */
export function gridCells(nodes: GridNode[]): { path: string; names: string }[] {
  const out: { path: string; names: string }[] = [];
  const walk = (ns: GridNode[], names: string[]) => {
    for (const n of ns) {
      const here = [...names, n.name];
      if (n.path.length === 4) out.push({ path: n.path.join("/"), names: here.join(" / ") });
      walk(n.children, here);
    }
  };
  walk(nodes, []);
  return out;
}
