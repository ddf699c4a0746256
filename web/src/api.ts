// Calls of the ticket API (same origin; the session is the HttpOnly cookie set by POST /auth/login).

export interface Me { username: string; role: string; scopes: string[] }

export interface Ticket {
  id: number; incident_id: string; hazard: string; severity: number; status: string; allowed_next: string[];
  title: string; camera_id: string; camera_name: string | null; grid_path: string[]; opened_at: string;
  updated_at: string; evidence: { snapshot: string; clip: string }; assignee: string | null; note: string | null;
  due_at: string | null; due_stage: string | null; overdue: boolean; closed_at: string | null;
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

export interface GridNode { code: string; name: string; path: string[]; children: GridNode[] }

export class ApiError extends Error {
  constructor(public status: number, message: string) { super(message); }
}

export async function api<T>(path: string, init: RequestInit = {}): Promise<T> {
  const r = await fetch(path, { credentials: "same-origin", ...init });
  if (!r.ok) {
    let detail = r.statusText;
    try { const body = await r.json(); detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail); } catch { /* not JSON */ }
    throw new ApiError(r.status, detail);
  }
  return (r.status === 204 ? undefined : await r.json()) as T;
}

export function postJson<T>(path: string, body: unknown): Promise<T> {
  return api<T>(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
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
