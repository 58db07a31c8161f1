// Files: the resumable upload behind an attachment's bubble, downloads by
// range, and a bounded cache of photo previews as blob URLs.
//
// An upload is the brief's: parts of 512 KiB (the last one shorter) under a
// random upload_id, any number in flight, through whichever node the page is
// connected to; finish_upload names the parts a node lost (a node keeps a
// chunk's parts in memory until the whole 1 MiB chunk is stored), and those
// go again. A reconnect in the middle costs only the parts in flight.

import { MediaKind, type File as CourierFile } from "./gen/client_pb";
import { CourierError } from "./wire";
import type { Session } from "./session";

export const PART_SIZE = 512 * 1024;
/** Parts in flight at once: enough to fill a WebTransport window. */
const PARTS_IN_FLIGHT = 3;
/** The brief's limit on parts (FILE_TOO_BIG from part 4000): 3,999 parts of 512 KiB. */
export const MAX_FILE = 3999 * PART_SIZE;
export const TOO_BIG = "files are at most 1,999 MiB";
/** A part's attempts (each waits for a connection): rides out a node's death and the election after it. */
const PART_ATTEMPTS = 12;
const FINISH_ROUNDS = 6;

export interface PendingFile {
  /** The bytes; dropped once sent or cancelled. */
  blob: Blob | null;
  name: string;
  mime: string;
  kind: MediaKind;
  durationSecs: number;
  uploadId: bigint;
  total: number;
  /** Parts the nodes acknowledged (a finish may hand some back). */
  done: Set<number>;
  sha256?: Uint8Array;
  /** Nonzero once finish_upload answered. */
  fileId: bigint;
  cancelled: boolean;
  /** What the upload went through (the page's debug hook reports it). */
  stats?: UploadStats;
}

export interface UploadStats {
  name: string;
  parts: number;
  /** Parts acknowledged, counting parts sent again. */
  acks: number;
  /** Parts finish_upload handed back (a node lost them). */
  missing: number;
  /** The nodes that acknowledged parts. */
  nodes: number[];
}

function partsOf(size: number): number {
  return Math.max(1, Math.ceil(size / PART_SIZE));
}

function partLen(f: PendingFile, part: number): number {
  return Math.min(PART_SIZE, f.total - part * PART_SIZE);
}

/** Bytes the nodes hold of an upload, for its progress bar. */
export function sentBytes(f: PendingFile): number {
  let n = 0;
  for (const p of f.done) n += partLen(f, p);
  return n;
}

/** Uploads a pending file to the end (finish_upload answered); resumes from
 * the parts already acknowledged. Throws CANCELLED when cancelled. */
export async function upload(s: Session, f: PendingFile, progress: () => void): Promise<void> {
  if (!f.blob) throw new CourierError("CANCELLED", "the upload was cancelled");
  if (f.total > MAX_FILE) throw new CourierError("FILE_TOO_BIG", TOO_BIG);
  const parts = partsOf(f.total);
  const stats = (f.stats ??= { name: f.name, parts, acks: 0, missing: 0, nodes: [] });
  f.sha256 ??= new Uint8Array(await crypto.subtle.digest("SHA-256", await f.blob.arrayBuffer()));
  for (let round = 0; round < FINISH_ROUNDS; round++) {
    const todo: number[] = [];
    for (let p = 0; p < parts; p++) if (!f.done.has(p)) todo.push(p);
    let next = 0;
    const worker = async () => {
      while (next < todo.length) {
        if (f.cancelled || !f.blob) throw new CourierError("CANCELLED", "the upload was cancelled");
        const part = todo[next++]!;
        const start = part * PART_SIZE;
        const bytes = new Uint8Array(await f.blob.slice(start, start + partLen(f, part)).arrayBuffer());
        await s.call(
          { case: "uploadPart", value: { uploadId: f.uploadId, part, partSize: PART_SIZE, bytes } },
          "done",
          PART_ATTEMPTS,
        );
        stats.acks++;
        if (s.nodeId !== null && !stats.nodes.includes(s.nodeId)) stats.nodes.push(s.nodeId);
        f.done.add(part);
        progress();
      }
    };
    await Promise.all(Array.from({ length: Math.min(PARTS_IN_FLIGHT, todo.length) }, worker));
    try {
      const file = await s.call(
        {
          case: "finishUpload",
          value: { uploadId: f.uploadId, parts, partSize: PART_SIZE, size: BigInt(f.total), sha256: f.sha256, name: f.name, mime: f.mime },
        },
        "file",
        PART_ATTEMPTS,
      );
      f.fileId = file.id;
      return;
    } catch (e) {
      if (!(e instanceof CourierError) || e.code !== "FILE_PART_MISSING") throw e;
      // A node died holding these parts of an incomplete chunk: send them again.
      stats.missing += e.parts.length;
      for (const p of e.parts) f.done.delete(p);
      progress();
    }
  }
  throw new CourierError("UNAVAILABLE", "the upload did not complete: try again");
}

/** Where a file is read from: by id (my upload), or through the message that carries it. */
export interface FileRef {
  file: CourierFile;
  chatId: bigint;
  messageId: bigint;
}

/** A file's bytes (or a preview's, `thumb` "s" or "m"), read in 512 KiB ranges. */
export async function download(s: Session, ref: FileRef, thumb = "", progress?: (done: number, total: number) => void): Promise<Blob> {
  const total = thumb ? (ref.file.thumbs.find((t) => t.kind === thumb)?.size ?? 0) : Number(ref.file.size);
  const chunks: Uint8Array<ArrayBuffer>[] = [];
  let offset = 0;
  while (offset < total) {
    const r = await s.call(
      {
        case: "getFile",
        value: { fileId: ref.file.id, offset: BigInt(offset), limit: PART_SIZE, chatId: ref.chatId, messageId: ref.messageId, thumb },
      },
      "fileBytes",
      6,
    );
    if (r.bytes.length === 0) break;
    chunks.push(r.bytes as Uint8Array<ArrayBuffer>);
    offset += r.bytes.length;
    progress?.(offset, total);
  }
  const type = thumb ? "image/jpeg" : ref.file.mime || "application/octet-stream";
  return new Blob(chunks, { type });
}

/** Blob URLs of previews and photos, at most `max`, oldest revoked first. */
export class BlobCache {
  private urls = new Map<string, Promise<string>>();
  constructor(private readonly max = 200) {}

  get(key: string, load: () => Promise<Blob>): Promise<string> {
    const have = this.urls.get(key);
    if (have) {
      this.urls.delete(key); // most recent last
      this.urls.set(key, have);
      return have;
    }
    const p = load().then((b) => URL.createObjectURL(b));
    p.catch(() => this.urls.delete(key));
    this.urls.set(key, p);
    while (this.urls.size > this.max) {
      const [oldKey, old] = this.urls.entries().next().value!;
      this.urls.delete(oldKey);
      old.then((u) => URL.revokeObjectURL(u)).catch(() => {});
    }
    return p;
  }
}

/** Saves a blob under its name: a download, never a page in our origin. */
export function saveAs(blob: Blob, name: string): void {
  // octet-stream: the browser saves it even if it is HTML or SVG.
  const url = URL.createObjectURL(new Blob([blob], { type: "application/octet-stream" }));
  const a = document.createElement("a");
  a.href = url;
  a.download = name || "file";
  a.rel = "noopener";
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

export function humanSize(n: number | bigint): string {
  const v = Number(n);
  if (v < 1024) return `${v} B`;
  if (v < 1024 * 1024) return `${(v / 1024).toFixed(1)} KB`;
  if (v < 1024 * 1024 * 1024) return `${(v / 1024 / 1024).toFixed(1)} MB`;
  return `${(v / 1024 / 1024 / 1024).toFixed(2)} GB`;
}

/** How an attached file goes: a photo (the node makes previews of these
 * formats) or a document. Voice notes are recorded, not attached. */
export function kindOf(mime: string): MediaKind {
  if (/^image\/(jpeg|png|gif|webp)$/.test(mime)) return MediaKind.MEDIA_PHOTO;
  return MediaKind.MEDIA_DOCUMENT;
}
