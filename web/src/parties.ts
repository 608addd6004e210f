// The two parties' client API over gRPC-web (the same `mpcvit.v1.Inference`
// the Rust client calls over gRPC), each call with the web token as a
// bearer token. The page sends party 0 one share and party 1 the other
// under one random session id, as the Rust client does.

import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { Inference, type InferResponse, type ModelInfo } from "./gen/mpcvit/v1/client_pb.js";

/** A failure, naming the party it came from. `unreachable`: no answer at
 * all (connection refused, TLS failed, ...), rather than an error status. */
export class PartyError extends Error {
  constructor(
    readonly party: number,
    readonly code: Code | undefined,
    message: string,
    readonly unreachable = false,
  ) {
    super(message);
  }
}

/** How long a model list may take, and an inference. */
const LIST_TIMEOUT_MS = 10_000;
const INFER_TIMEOUT_MS = 120_000;
/** When one party fails, how long the other may take to report its own
 * error (the root cause may be there) before the page stops waiting. */
const GRACE_MS = 300;

export interface Parties {
  urls: string[];
  clients: Client<typeof Inference>[];
}

export function connect(urls: string[], token: string): Parties {
  const bearer: Interceptor = (next) => (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
  return {
    urls,
    clients: urls.map((baseUrl) =>
      createClient(Inference, createGrpcWebTransport({ baseUrl, useBinaryFormat: true, interceptors: [bearer] })),
    ),
  };
}

function partyError(p: Parties, party: number, err: unknown): PartyError {
  const e = ConnectError.from(err);
  // fetch rejects with a TypeError when no HTTP answer came back at all.
  if (e.cause instanceof TypeError) {
    return new PartyError(party, Code.Unavailable, `party ${party} is unreachable at ${p.urls[party]} (is it running?)`, true);
  }
  if (e.code === Code.Unauthenticated) {
    return new PartyError(party, e.code, `party ${party} refused the web token: ${e.rawMessage}`);
  }
  return new PartyError(party, e.code, `party ${party}: ${Code[e.code] ?? e.code}: ${e.rawMessage}`);
}

/** A model both parties serve, with the same public manifest. */
export interface Model {
  name: string;
  manifestJson: string;
  fracBits: number;
  inputLen: number;
  outputLen: number;
  ready: boolean;
}

/** The models both parties serve (party 0's list, matched with party 1's). */
export async function models(p: Parties): Promise<Model[]> {
  const lists = await Promise.all(
    p.clients.map(async (c, party) => {
      try {
        const r = await c.listModels({}, { timeoutMs: LIST_TIMEOUT_MS });
        if (r.party !== party) {
          throw new PartyError(party, undefined, `the server given as party ${party} says it is party ${r.party}`);
        }
        return r.models;
      } catch (err) {
        throw err instanceof PartyError ? err : partyError(p, party, err);
      }
    }),
  );
  const out: Model[] = [];
  for (const m of lists[0]) {
    const other = lists[1].find((o: ModelInfo) => o.name === m.name);
    if (!other) continue;
    if (other.manifestJson !== m.manifestJson || other.fracBits !== m.fracBits) {
      throw new PartyError(1, undefined, `the parties hold different manifests for model ${m.name}`);
    }
    out.push({
      name: m.name,
      manifestJson: m.manifestJson,
      fracBits: m.fracBits,
      inputLen: Number(m.inputLen),
      outputLen: Number(m.outputLen),
      ready: m.ready && other.ready,
    });
  }
  return out;
}

/** One share to each party under one fresh session id; both answers. */
export async function infer(p: Parties, model: Model, shares: [Uint8Array, Uint8Array]): Promise<[InferResponse, InferResponse]> {
  const sessionId = crypto.getRandomValues(new Uint8Array(16));
  const aborts = [new AbortController(), new AbortController()];
  type Outcome = { ok: true; r: InferResponse } | { ok: false; e: PartyError };
  const calls: Promise<Outcome>[] = p.clients.map((c, party) =>
    c
      .infer(
        { model: model.name, sessionId, inputShare: shares[party] },
        { timeoutMs: INFER_TIMEOUT_MS, signal: aborts[party].signal },
      )
      .then(
        (r): Outcome => ({ ok: true, r }),
        (err): Outcome => ({ ok: false, e: partyError(p, party, err) }),
      ),
  );
  const first = await Promise.race(calls.map((c, i) => c.then((o) => ({ i, o }))));
  let outcomes: Outcome[];
  if (first.o.ok) {
    outcomes = await Promise.all(calls);
  } else {
    const other = 1 - first.i;
    const late = new Promise<Outcome>((resolve) =>
      setTimeout(() => {
        aborts[other].abort();
        resolve({ ok: false, e: new PartyError(other, Code.Canceled, "not waited for after the other party failed") });
      }, GRACE_MS),
    );
    const o = await Promise.race([calls[other], late]);
    outcomes = first.i === 0 ? [first.o, o] : [o, first.o];
  }
  const [a, b] = outcomes;
  if (a.ok && b.ok) return [a.r, b.r];
  // The root cause: a party that could not be reached at all (the other
  // then reports losing it), then a party's own error rather than the
  // other's ABORTED, and any of them rather than this page's cancellation;
  // party 0's on a tie.
  const rank = (o: Outcome) =>
    o.ok ? -1 : o.e.unreachable ? 3 : o.e.code === Code.Canceled ? 0 : o.e.code === Code.Aborted ? 1 : 2;
  const worst = rank(b) > rank(a) ? b : a;
  throw (worst as { ok: false; e: PartyError }).e;
}
