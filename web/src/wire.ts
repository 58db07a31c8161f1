// The courier/1 wire protocol over WebTransport (see proto/proto/client.proto
// and docs/protocol.md): 4-byte big-endian length-prefixed protobuf frames,
// the hello on the first bidirectional stream, one bidirectional stream per
// request, and one server-opened unidirectional stream of Update frames.
//
// Nothing here encodes protobuf by hand: every message goes through the
// generated schemas with create/toBinary/fromBinary.

import { create, fromBinary, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import {
  RequestSchema,
  ResponseSchema,
  UpdateSchema,
  type HelloReply,
  type Response,
  type Update,
} from "./gen/client_pb";

/** Frames above this are refused and the connection is closed. The node's own
 * limit is 1 MiB (MAX_CLIENT_FRAME); 4 MiB leaves room for later raises. */
export const MAX_FRAME = 4 * 1024 * 1024;

/** One entry of /web.json. */
export interface NodeInfo {
  id: number;
  name: string;
  url: string;
  cert_sha256: string[];
}

/** An error answered by the node (Response.error), or a local failure
 * (code CONNECTION_LOST, TIMEOUT, FRAME_TOO_LARGE, BAD_FRAME, ...). */
export class CourierError extends Error {
  constructor(
    public readonly code: string,
    message: string,
    public readonly retryAfterSecs = 0,
    /** FILE_PART_MISSING: the parts to send again. */
    public readonly parts: number[] = [],
  ) {
    super(`${code}${message ? ": " + message : ""}`);
  }
  /** Worth retrying (possibly on another connection)? */
  get transient(): boolean {
    return ["UNAVAILABLE", "CONNECTION_LOST", "TIMEOUT", "INTERNAL"].includes(this.code);
  }
}

export function hexToBytes(hex: string): Uint8Array {
  const clean = hex.trim().toLowerCase();
  if (!/^[0-9a-f]*$/.test(clean) || clean.length % 2 !== 0) throw new Error(`bad hex: ${hex}`);
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(clean.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** Prefixes one encoded message with its 4-byte big-endian length. */
export function frame(payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + payload.length);
  new DataView(out.buffer).setUint32(0, payload.length, false);
  out.set(payload, 4);
  return out;
}

/**
 * Reassembles frames from a byte stream. A frame may span several reads and
 * one read may hold several frames (or a frame and part of the next), so
 * bytes are buffered until a whole frame is present. The length is checked
 * against MAX_FRAME before any payload is buffered beyond it.
 */
export class FrameReader {
  private chunks: Uint8Array[] = [];
  private buffered = 0;
  private done = false;

  constructor(private readonly reader: ReadableStreamDefaultReader<Uint8Array>) {}

  /** The next frame's payload, or null at a clean end of stream (between frames). */
  async next(): Promise<Uint8Array | null> {
    while (this.buffered < 4) {
      if (!(await this.fill())) {
        if (this.buffered === 0) return null;
        throw new CourierError("BAD_FRAME", "stream ended inside a frame header");
      }
    }
    const len = new DataView(this.peek(4).buffer).getUint32(0, false);
    if (len > MAX_FRAME) throw new CourierError("FRAME_TOO_LARGE", `frame of ${len} bytes`);
    while (this.buffered < 4 + len) {
      if (!(await this.fill())) throw new CourierError("BAD_FRAME", "stream ended inside a frame");
    }
    this.take(4);
    return this.take(len);
  }

  cancel(): void {
    this.reader.cancel().catch(() => {});
  }

  private async fill(): Promise<boolean> {
    if (this.done) return false;
    const { value, done } = await this.reader.read();
    if (done) {
      this.done = true;
      return false;
    }
    if (value && value.length > 0) {
      this.chunks.push(value);
      this.buffered += value.length;
    }
    return true;
  }

  /** Copies the first n buffered bytes without consuming them. */
  private peek(n: number): Uint8Array {
    const out = new Uint8Array(n);
    let off = 0;
    for (const c of this.chunks) {
      if (off >= n) break;
      const part = c.subarray(0, Math.min(c.length, n - off));
      out.set(part, off);
      off += part.length;
    }
    return out;
  }

  /** Removes and returns the first n buffered bytes. */
  private take(n: number): Uint8Array {
    const out = this.peek(n);
    let left = n;
    while (left > 0) {
      const c = this.chunks[0]!;
      if (c.length <= left) {
        this.chunks.shift();
        left -= c.length;
      } else {
        this.chunks[0] = c.subarray(left);
        left = 0;
      }
    }
    this.buffered -= n;
    return out;
  }
}

export type RequestInit = NonNullable<MessageInitShape<typeof RequestSchema>["method"]>;
type Result = Exclude<Response["result"], { case: undefined }>;
export type ResultCase = Result["case"];
export type ResultOf<C extends ResultCase> = Extract<Result, { case: C }>["value"];

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new CourierError("TIMEOUT", `${what} took over ${ms} ms`)), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e) => {
        clearTimeout(t);
        reject(e);
      },
    );
  });
}

/**
 * One WebTransport session to one node speaking courier/1. It does not
 * reconnect: when it ends, `closed` resolves with a reason and the owner
 * (session.ts) opens a new Connection, possibly to another node.
 */
export class Connection {
  readonly closed: Promise<string>;
  private closeReason: string | null = null;
  private resolveClosed!: (reason: string) => void;

  private constructor(
    private readonly wt: WebTransport,
    readonly node: NodeInfo,
  ) {
    this.closed = new Promise((r) => (this.resolveClosed = r));
    wt.closed.then(
      (info) => this.markClosed(`closed ${info?.closeCode ?? 0} ${info?.reason ?? ""}`.trim()),
      (err) => this.markClosed(`lost: ${String(err?.message ?? err)}`),
    );
  }

  get isClosed(): boolean {
    return this.closeReason !== null;
  }

  /** Opens the WebTransport session (certificate pinned by hash when the
   * node lists hashes; an empty list means an operator certificate that the
   * browser verifies normally, so the option is omitted). */
  static async open(node: NodeInfo, timeoutMs: number): Promise<Connection> {
    const opts: WebTransportOptions = {};
    if (node.cert_sha256.length > 0) {
      opts.serverCertificateHashes = node.cert_sha256.map((h) => ({
        algorithm: "sha-256",
        value: hexToBytes(h) as Uint8Array<ArrayBuffer>,
      }));
    }
    const wt = new WebTransport(node.url, opts);
    // Avoid an unhandled rejection if we time out before `closed` is watched.
    wt.closed.catch(() => {});
    try {
      await withTimeout(wt.ready, timeoutMs, `connect to node ${node.id}`);
    } catch (e) {
      try {
        wt.close();
      } catch {
        /* already failed */
      }
      throw e instanceof CourierError ? e : new CourierError("CONNECTION_LOST", String((e as Error)?.message ?? e));
    }
    return new Connection(wt, node);
  }

  close(reason = "client closed"): void {
    this.markClosed(reason);
    try {
      this.wt.close({ closeCode: 0, reason: reason.slice(0, 200) });
    } catch {
      /* already closed */
    }
  }

  private markClosed(reason: string): void {
    if (this.closeReason !== null) return;
    this.closeReason = reason;
    this.resolveClosed(reason);
  }

  /** One request on its own bidirectional stream: write one frame, FIN,
   * read one Response frame. Response.error is thrown as CourierError. */
  async raw(method: RequestInit, timeoutMs = 15000): Promise<Response> {
    if (this.closeReason !== null) throw new CourierError("CONNECTION_LOST", this.closeReason);
    const bytes = frame(toBinary(RequestSchema, create(RequestSchema, { method })));
    const work = (async () => {
      let stream: WebTransportBidirectionalStream;
      try {
        stream = await this.wt.createBidirectionalStream();
      } catch (e) {
        throw new CourierError("CONNECTION_LOST", String((e as Error)?.message ?? e));
      }
      const reader = new FrameReader(stream.readable.getReader());
      try {
        const w = stream.writable.getWriter();
        // The FIN is not awaited: the node reads exactly one Request frame and
        // may stop its side of the stream (STOP_SENDING) before it has seen
        // the FIN, which would reject close() although the answer is on its way.
        void w.write(bytes).catch(() => {});
        void w.close().catch(() => {});
        const payload = await reader.next();
        if (payload === null) throw new CourierError("BAD_FRAME", "stream ended without a response");
        return fromBinary(ResponseSchema, payload);
      } catch (e) {
        if (e instanceof CourierError) {
          if (e.code === "FRAME_TOO_LARGE" || e.code === "BAD_FRAME") this.close(e.message);
          throw e;
        }
        throw new CourierError("CONNECTION_LOST", String((e as Error)?.message ?? e));
      } finally {
        reader.cancel();
      }
    })();
    const resp = await withTimeout(work, timeoutMs, `request ${method.case}`);
    if (resp.result.case === "error") {
      const err = resp.result.value;
      throw new CourierError(err.code, err.message, err.retryAfterSecs, err.parts);
    }
    return resp;
  }

  /** A request whose answer must be the given Response case. */
  async call<C extends ResultCase>(method: RequestInit, expect: C, timeoutMs?: number): Promise<ResultOf<C>> {
    const resp = await this.raw(method, timeoutMs);
    if (resp.result.case !== expect) {
      throw new CourierError("BAD_RESPONSE", `expected ${expect}, got ${resp.result.case}`);
    }
    return resp.result.value as ResultOf<C>;
  }

  /** The hello: must be the first request on the connection. An error answer
   * is thrown (the node then closes the connection). */
  hello(init: RequestInit & { case: "hello" }, timeoutMs: number): Promise<HelloReply> {
    return this.call(init, "hello", timeoutMs);
  }

  /**
   * Reads server-opened unidirectional streams and hands every Update frame
   * to `onUpdate`. The node opens one push stream once the connection is
   * logged in; any stream failure or bad frame closes the connection (the
   * owner then reconnects and catches up by get_difference).
   */
  startPushReader(onUpdate: (u: Update) => void): void {
    const incoming = this.wt.incomingUnidirectionalStreams.getReader();
    void (async () => {
      try {
        for (;;) {
          const { value, done } = await incoming.read();
          if (done || !value) return;
          void this.readPushStream(value, onUpdate);
        }
      } catch {
        // the session ended; `closed` reports it
      }
    })();
  }

  private async readPushStream(stream: ReadableStream<Uint8Array>, onUpdate: (u: Update) => void): Promise<void> {
    const reader = new FrameReader(stream.getReader());
    try {
      for (;;) {
        const payload = await reader.next();
        if (payload === null) break;
        let update: Update;
        try {
          update = fromBinary(UpdateSchema, payload);
        } catch (e) {
          throw new CourierError("BAD_FRAME", "undecodable update");
        }
        onUpdate(update);
      }
      // The push stream lives as long as the connection; its end means the
      // connection is going away (or logged out).
    } catch (e) {
      this.close(`push stream: ${(e as Error)?.message ?? e}`);
    }
  }
}
