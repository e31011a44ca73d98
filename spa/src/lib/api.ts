// HTTP client of the Pulse API: bearer token (refreshed when needed), JSON bodies, the one error envelope.
import { accessToken, dropSession, type ErrorBody, refresh } from "@/lib/session";

export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly code: string,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = "ApiError";
  }

  /** The request or body field the server blamed, when it named one. */
  get field(): string | undefined {
    return typeof this.details.field === "string" ? this.details.field : undefined;
  }
}

export type QueryValue = string | number | boolean | null | undefined | Array<string | number>;
export type Query = Record<string, QueryValue>;

export interface RequestOptions {
  method?: string;
  query?: Query;
  body?: unknown;
  /** A raw body (e.g. CSV text) sent as is with this content type. */
  rawBody?: { content: BodyInit; contentType: string };
  signal?: AbortSignal;
}

export function buildUrl(path: string, query?: Query): string {
  if (!query) return path;
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value === undefined || value === null || value === "") continue;
    if (Array.isArray(value)) for (const v of value) params.append(key, String(v));
    else params.append(key, String(value));
  }
  const qs = params.toString();
  return qs ? `${path}?${qs}` : path;
}

async function toError(response: Response): Promise<ApiError> {
  const body = (await response.json().catch(() => null)) as ErrorBody | null;
  const err = body?.error;
  const fallback = response.status >= 500 ? "Pulse could not answer (server error)" : `request failed (${response.status})`;
  const details = { ...(err?.details ?? {}) };
  const requestId = response.headers.get("x-request-id");
  if (requestId && details.request_id === undefined) details.request_id = requestId;
  return new ApiError(err?.message ?? fallback, response.status, err?.code ?? "error", details);
}

/** Sends one request; retries once with a refreshed token when the access token was refused. */
export async function request(path: string, options: RequestOptions = {}): Promise<Response> {
  const send = async (token: string | null): Promise<Response> => {
    const headers: Record<string, string> = { accept: "application/json" };
    if (token) headers.authorization = `Bearer ${token}`;
    let body: BodyInit | undefined;
    if (options.rawBody) {
      headers["content-type"] = options.rawBody.contentType;
      body = options.rawBody.content;
    } else if (options.body !== undefined) {
      headers["content-type"] = "application/json";
      body = JSON.stringify(options.body);
    }
    try {
      return await fetch(buildUrl(path, options.query), {
        method: options.method ?? "GET",
        headers,
        body,
        signal: options.signal,
        credentials: "omit",
      });
    } catch (err) {
      if ((err as Error).name === "AbortError") throw err;
      throw new ApiError("Pulse cannot be reached. Check your connection.", 0, "network");
    }
  };
  let token: string | null;
  try {
    token = await accessToken();
  } catch {
    dropSession();
    throw new ApiError("Your session has ended. Please sign in again.", 401, "unauthorized");
  }
  let response = await send(token);
  if (response.status === 401 && token) {
    try {
      response = await send((await refresh()).accessToken);
    } catch {
      dropSession();
      throw new ApiError("Your session has ended. Please sign in again.", 401, "unauthorized");
    }
  }
  if (!response.ok) throw await toError(response);
  return response;
}

/** JSON answer of a request (undefined for 204). */
export async function api<T>(path: string, options: RequestOptions = {}): Promise<T> {
  const response = await request(path, options);
  if (response.status === 204) return undefined as T;
  return (await response.json()) as T;
}

/** Downloads an authenticated resource (CSV export) as a file. */
export async function download(path: string, query: Query, filename: string): Promise<void> {
  const response = await request(path, { query });
  const blob = await response.blob();
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

export function errorMessage(err: unknown): string {
  if (err instanceof ApiError) return err.field ? `${err.field}: ${err.message}` : err.message;
  if (err instanceof Error) return err.message;
  return String(err);
}

export function isNotFound(err: unknown): boolean {
  return err instanceof ApiError && (err.status === 404 || err.status === 405);
}
