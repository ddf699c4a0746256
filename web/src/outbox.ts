// The phone's pending "resolved" reports (ticket, note, photos) kept in IndexedDB until every photo is
// uploaded and the move is made, so a reload, a dropped network or a closed tab loses nothing: the page
// resumes them when it opens again. The server keeps one attachment per photo (by sha256), so a photo sent
// twice after an interruption is stored once.

export interface PendingReport { ticketId: number; note: string; photos: Blob[]; uploaded: number; at: number }

const DB = "gridwatch";
const STORE = "reports";

function open(): Promise<IDBDatabase> {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB, 1);
    req.onupgradeneeded = () => { req.result.createObjectStore(STORE, { keyPath: "ticketId" }); };
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

async function run<T>(mode: IDBTransactionMode, fn: (s: IDBObjectStore) => IDBRequest<T>): Promise<T> {
  const db = await open();
  try {
    return await new Promise<T>((resolve, reject) => {
      const req = fn(db.transaction(STORE, mode).objectStore(STORE));
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    });
  } finally { db.close(); }
}

/** Every pending report (none when IndexedDB is not available, e.g. a private window that refuses it). */
export async function pendingReports(): Promise<PendingReport[]> {
  try { return await run("readonly", (s) => s.getAll() as IDBRequest<PendingReport[]>); } catch { return []; }
}

export async function keepReport(r: PendingReport): Promise<void> {
  try { await run("readwrite", (s) => s.put(r)); } catch { /* memory only: the upload still runs */ }
}

export async function dropReport(ticketId: number): Promise<void> {
  try { await run("readwrite", (s) => s.delete(ticketId)); } catch { /* nothing kept */ }
}
