// Node-run unit tests of the page's pure pieces: the resumable upload's
// bookkeeping against a node that loses parts, and the time labels.
import { CourierError } from "../src/wire";
import { checks } from "./fake";
import { upload, PART_SIZE, sentBytes, type PendingFile } from "../src/media";
import { MediaKind } from "../src/gen/client_pb";
import { lastSeen, duration } from "../src/ui";

const check = (ok: boolean, name: string) => checks.check(name, ok);

// A node that stores parts, loses part 1 once (its chunk was in the memory
// of a node that died), and answers the finish with FILE_PART_MISSING.
const stored = new Map<number, number>();
let lost = false;
let finishes = 0;
const fakeSession = {
  nodeId: 1,
  async call(method: { case: string; value: any }, expect: string): Promise<any> {
    if (method.case === "uploadPart") {
      check(method.value.partSize === PART_SIZE, "every part names the upload's part size");
      stored.set(method.value.part, method.value.bytes.length);
      return {};
    }
    if (method.case === "finishUpload") {
      finishes++;
      if (!lost) {
        lost = true;
        stored.delete(1);
        throw new CourierError("FILE_PART_MISSING", "parts missing", 0, [1]);
      }
      const missing = [...Array(method.value.parts).keys()].filter((p) => !stored.has(p));
      if (missing.length) throw new CourierError("FILE_PART_MISSING", "parts missing", 0, missing);
      return { id: 77n };
    }
    throw new Error(`unexpected ${method.case} (${expect})`);
  },
};
const size = 2 * PART_SIZE + 1234;
const bytes = new Uint8Array(size).map((_, i) => i % 251);
let progressCalls = 0;
const f: PendingFile = {
  blob: new Blob([bytes]),
  name: "x.bin",
  mime: "application/octet-stream",
  kind: MediaKind.MEDIA_DOCUMENT,
  durationSecs: 0,
  uploadId: 5n,
  total: size,
  done: new Set(),
  fileId: 0n,
  cancelled: false,
};
await upload(fakeSession as any, f, () => progressCalls++);
check(f.fileId === 77n, "the file id from the second finish");
check(finishes === 2, `a lost part costs one more finish (${finishes})`);
check(stored.get(2) === 1234 && stored.get(0) === PART_SIZE, "parts of 512 KiB, the last one shorter");
check(sentBytes(f) === size, `the progress counts every byte once (${sentBytes(f)} of ${size})`);
check(f.sha256?.length === 32, "the whole file's SHA-256 goes with the finish");
check(f.stats?.acks === 4 && f.stats?.missing === 1 && f.stats?.parts === 3, `stats count the part sent again (${JSON.stringify(f.stats)})`);

// Cancelled: no part goes out.
stored.clear();
const g: PendingFile = { ...f, done: new Set(), fileId: 0n, cancelled: true, sha256: undefined };
let cancelled = "";
await upload(fakeSession as any, g, () => {}).catch((e) => (cancelled = e.code));
check(cancelled === "CANCELLED" && stored.size === 0, `a cancelled upload sends nothing (${cancelled}, ${stored.size})`);

// Labels
const now = Date.UTC(2026, 11, 7, 12, 0, 0);
check(lastSeen(0n, now) === "last seen recently", "no last-seen time");
check(lastSeen(BigInt(now - 20_000), now) === "last seen just now", "seconds ago");
check(lastSeen(BigInt(now - 5 * 60_000), now) === "last seen 5 minutes ago", "minutes ago");
check(lastSeen(BigInt(now - 60_000), now) === "last seen 1 minute ago", "one minute");
check(duration(65) === "1:05" && duration(3) === "0:03", "voice durations");
checks.done("media test");
