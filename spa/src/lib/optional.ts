// Endpoints a Pulse version may not have yet: null on 404/405 instead of an error, so pages degrade to what exists.
import { api, isNotFound, type RequestOptions } from "@/lib/api";

export async function optionalApi<T>(path: string, options?: RequestOptions): Promise<T | null> {
  try {
    return await api<T>(path, options);
  } catch (err) {
    if (isNotFound(err)) return null;
    throw err;
  }
}
