/** "a, b ,, c" → ["a", "b", "c"] */
export function splitList(text: string): string[] {
  return text
    .split(",")
    .map((t) => t.trim())
    .filter(Boolean);
}

/** A form's text as the JSON value it stands for: number, boolean or string. */
export function parseScalar(text: string): number | boolean | string {
  const t = text.trim();
  if (t === "true") return true;
  if (t === "false") return false;
  if (t !== "" && !Number.isNaN(Number(t))) return Number(t);
  return t;
}

export function optionalNumber(text: string): number | undefined {
  return text.trim() === "" ? undefined : Number(text);
}
